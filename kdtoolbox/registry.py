"""kdtoolbox's registries, children of mmengine's roots under the scope ``kdtoolbox``.

Configs name kdtoolbox components by their registered name (``type='FitNet'`` inside a
distiller config, ``type='kdtoolbox.DistillationModel'`` at the top of a config whose default
scope is ``mmdet``); upstream types keep resolving through mmengine's tree as usual.

``DISTILLERS``, ``LOSSES`` and ``ADAPTERS`` are children of kdtoolbox's ``MODELS``. They are built
with :func:`build_component`, which looks the type up in the registry it is called on (then its
ancestors, so ``mmdet.FocalLoss`` works in a distiller config) without switching the default scope:
a distiller config inside an ``mmdet``-scoped config still finds ``FGDLoss``.

Every registry loads the plugins (``kdtoolbox.plugins``) before its first lookup, so a component
from a pip-installed plugin is found by name with no import in the config.
"""
from __future__ import annotations

import difflib
from typing import Any, Optional

from mmengine.config import Config, ConfigDict
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS


class ComponentNotFoundError(KeyError):
    """A config names a type that no registry (and no loaded plugin) provides."""

    def __str__(self) -> str:  # KeyError would print the repr with quotes and escaped newlines
        return str(self.args[0])


class KDRegistry(Registry):
    """An mmengine ``Registry`` that loads kdtoolbox plugins before its first lookup."""

    def import_from_location(self) -> None:
        super().import_from_location()
        from .plugins import load_plugins  # late: plugins import this module
        load_plugins()


def _all_names(registry: Registry) -> list[str]:
    names: list[str] = []
    node: Optional[Registry] = registry
    while node is not None:
        names.extend(node.module_dict)
        node = node.parent
    return names


def not_found_message(type_name: str, registry: Registry, where: Optional[str] = None) -> str:
    """Explain why ``type_name`` is not in ``registry``: close names, plugins that failed to load."""
    from .plugins import plugin_failures
    key = f'{where}.type' if where else 'type'
    lines = [f"{key}={type_name!r}: no {registry.name} of that name is registered "
             f"(searched the {registry.scope!r} {registry.name} registry and its parents)."]
    close = difflib.get_close_matches(type_name, sorted(set(_all_names(registry))), n=3, cutoff=0.6)
    if close:
        lines.append(f"Did you mean {', '.join(repr(c) for c in close)}?")
    failures = plugin_failures()
    if failures:
        lines.append('These plugins failed to load; the name may belong to one of them '
                     '(see `kdtoolbox plugins doctor`):')
        lines.extend(f'  - {f.describe()}' for f in failures)
    return '\n'.join(lines)


def build_component(cfg: Any, registry: Registry, *args, default_args: Optional[dict] = None,
                    where: Optional[str] = None, **kwargs) -> Any:
    """Build ``cfg`` (a dict with ``type``, or an already built object) from ``registry``.

    ``where`` names the config key being built (``'distiller.losses.fpn0'``) so that errors point
    at it. Unlike mmengine's ``build_from_cfg`` this does not switch the default scope, so kdtoolbox
    names resolve in kdtoolbox registries whatever the config's ``default_scope`` is.
    """
    if not isinstance(cfg, (dict, ConfigDict, Config)):
        return cfg  # already an object (e.g. a module passed in Python)
    args_cfg = dict(cfg)
    if default_args:
        for k, v in default_args.items():
            args_cfg.setdefault(k, v)
    if 'type' not in args_cfg:
        raise KeyError(f"{where or 'config'}: missing the key 'type' (one of the registered "
                       f"{registry.name}s: {', '.join(sorted(registry.module_dict)) or 'none'})")
    obj_type = args_cfg.pop('type')
    args_cfg.pop('_scope_', None)
    if isinstance(obj_type, str):
        obj_cls = registry.get(obj_type)
        if obj_cls is None:
            raise ComponentNotFoundError(not_found_message(obj_type, registry, where))
    else:
        obj_cls = obj_type
    try:
        return obj_cls(*args, **args_cfg, **kwargs)
    except TypeError as exc:  # wrong/missing arguments: say which config built it
        raise TypeError(f"{where or 'config'} (type={getattr(obj_cls, '__name__', obj_cls)}): {exc}") from exc


# Top-level models (DistillationModel) and anything a plugin registers as a model.
MODELS = KDRegistry('model', parent=MMENGINE_MODELS, scope='kdtoolbox', build_func=build_component,
                    locations=['kdtoolbox.engine'])
DISTILLERS = KDRegistry('distiller', parent=MODELS, scope='distillers', build_func=build_component,
                        locations=['kdtoolbox.engine'])
LOSSES = KDRegistry('loss', parent=MODELS, scope='losses', build_func=build_component,
                    locations=['kdtoolbox.losses'])
ADAPTERS = KDRegistry('adapter', parent=MODELS, scope='adapters', build_func=build_component,
                      locations=['kdtoolbox.adapters'])
# Built by mmengine's runner through its roots (``type='kdtoolbox.X'``).
HOOKS = KDRegistry('hook', parent=MMENGINE_HOOKS, scope='kdtoolbox', locations=['kdtoolbox.engine'])
DATASETS = KDRegistry('dataset', parent=MMENGINE_DATASETS, scope='kdtoolbox',
                      locations=['kdtoolbox.datasets'])
MODEL_WRAPPERS = KDRegistry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='kdtoolbox',
                            locations=['kdtoolbox.engine'])
METRICS = KDRegistry('metric', parent=MMENGINE_METRICS, scope='kdtoolbox', locations=['kdtoolbox.engine'])
TRANSFORMS = KDRegistry('transform', parent=MMENGINE_TRANSFORMS, scope='kdtoolbox',
                        locations=['kdtoolbox.datasets'])
