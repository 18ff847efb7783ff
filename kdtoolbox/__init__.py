"""kdtoolbox: a plugin-based knowledge-distillation toolbox on OpenMMLab 2.x."""
__version__ = '0.1.0'

from .plugins import hookimpl, load_plugins  # noqa: E402  (plugins need only this much)
from .registry import (ADAPTERS, DATASETS, DISTILLERS, HOOKS, LOSSES, METRICS, MODELS,  # noqa: E402
                       TRANSFORMS)
from .engine import checkpoint as _checkpoint  # noqa: E402

_checkpoint.allow_mmengine_checkpoints()

from . import adapters, datasets, engine, losses  # noqa: E402,F401  (register core components)

__all__ = ['__version__', 'hookimpl', 'load_plugins', 'MODELS', 'DISTILLERS', 'LOSSES',
           'ADAPTERS', 'HOOKS', 'DATASETS', 'METRICS', 'TRANSFORMS']
