"""Export the student of a distillation checkpoint as a plain mmdet/mmdet3d checkpoint."""
from __future__ import annotations

import os
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint

STUDENT_PREFIX = 'student.'


def student_state_dict(state_dict: dict) -> dict:
    """Keep the ``student.*`` entries of a DistillationModel state dict, without the prefix."""
    out = {k[len(STUDENT_PREFIX):]: v for k, v in state_dict.items() if k.startswith(STUDENT_PREFIX)}
    if not out:
        raise KeyError(f'no {STUDENT_PREFIX!r} keys in the checkpoint: is it a DistillationModel checkpoint?')
    return out


def student_config(distill_cfg: Config) -> Config:
    """The distillation config with ``model`` replaced by the student's model config, so that
    upstream tools (mmdet's ``tools/test.py``) can build and evaluate the student alone."""
    from .builder import model_config
    cfg = distill_cfg.copy()
    student = distill_cfg.model['student']
    cfg.model = model_config(student, 'student')
    cfg.model.pop('_scope_', None)
    for key in ('custom_hooks', 'load_from', 'resume'):
        cfg.pop(key, None)
    return cfg


def export_student(checkpoint: str, out: str, config: Optional[str] = None) -> dict:
    """Write ``out`` (a checkpoint with ``meta`` and ``state_dict`` of the student only) and, if
    the distillation ``config`` is given, the student's standalone config next to it (``.py``).

    Returns the paths written.
    """
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt)
    meta = dict(ckpt.get('meta', {}) or {})
    meta = {k: v for k, v in meta.items() if k in ('dataset_meta', 'mmengine_version', 'epoch', 'iter', 'seed')}
    meta['exported_from'] = os.path.abspath(checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': student_state_dict(state)}, out)
    written = {'checkpoint': out}
    if config is not None:
        cfg_out = os.path.splitext(out)[0] + '.py'
        student_config(Config.fromfile(config)).dump(cfg_out)
        written['config'] = cfg_out
    return written
