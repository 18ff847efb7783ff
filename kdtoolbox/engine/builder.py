"""Build a student or teacher model from a config path, an mmengine Config or a model dict."""
from __future__ import annotations

import copy
import os
from typing import Union

import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import MODELS as MMENGINE_MODELS


def model_config(cfg: Union[str, Config, dict], what: str) -> ConfigDict:
    """Return the model dict that ``cfg`` describes, with ``_scope_`` set from the config file.

    ``cfg`` is a path (``'configs/x.py'`` or ``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'``),
    a loaded :class:`Config` whose ``model`` is used, or a model dict (``type=...``).
    A config file's ``default_scope`` becomes the model's ``_scope_``, so an mmdet3d teacher builds
    in the ``mmdet3d`` scope inside an mmdet-scoped distillation config.
    """
    if isinstance(cfg, str):
        if '::' in cfg:  # a package's config, e.g. 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
            cfg = get_config(cfg)
        elif not os.path.isfile(cfg):
            raise FileNotFoundError(f'{what}: config file {cfg!r} does not exist')
        else:
            cfg = Config.fromfile(cfg)
    if isinstance(cfg, Config):
        if 'model' not in cfg:
            raise KeyError(f'{what}: the config {cfg.filename!r} has no key "model"')
        model = copy.deepcopy(cfg.model)
        scope = cfg.get('default_scope')
        if scope and '_scope_' not in model:
            model['_scope_'] = scope
        return ConfigDict(model)
    if isinstance(cfg, (dict, ConfigDict)):
        if 'type' not in cfg:
            raise KeyError(f"{what}: a model dict needs the key 'type' (got keys {sorted(cfg)})")
        return ConfigDict(copy.deepcopy(dict(cfg)))
    raise TypeError(f'{what}: expected a config path, a Config or a model dict, got {type(cfg).__name__}')


def build_model(cfg: Union[str, Config, dict, nn.Module], what: str) -> nn.Module:
    """Build a model (e.g. any mmdet/mmdet3d detector) through mmengine's MODELS tree."""
    if isinstance(cfg, nn.Module):
        return cfg
    model_cfg = model_config(cfg, what)
    try:
        return MMENGINE_MODELS.build(model_cfg)
    except KeyError as exc:
        raise KeyError(f'{what}: {exc}') from exc
