"""Mixed precision: what ``tools/train.py --amp`` configures, on CPU and on CUDA.

- CUDA: mmengine's ``AmpOptimWrapper``, fp16 autocast with a dynamic loss scale (GradScaler).
- CPU: mmengine 0.10.7's ``AmpOptimWrapper`` refuses to be built without an accelerator, so
  :class:`AutocastOptimWrapper` runs the forward under ``torch.autocast('cpu', bfloat16)``. bf16
  has fp32's exponent range, so no loss scaling is needed.

Either way the distillation losses are computed in fp32 with autocast off
(:class:`~kdtoolbox.engine.model.DistillationModel`): sum-reduced feature losses over large maps
overflow fp16 (65504). The teacher follows the student's autocast unless the model's
``teacher_autocast`` says otherwise.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Union

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

from ..ops.mmcv_compat import enable_cpu_autocast_for_mmcv_ops

# A kdtoolbox child so that configs say type='kdtoolbox.AutocastOptimWrapper'.
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='kdtoolbox',
                          locations=['kdtoolbox.engine.amp'])

AUTOCAST_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def autocast_dtype(value: Union[str, torch.dtype], key: str = 'dtype') -> torch.dtype:
    """``'float16'``/``'bfloat16'`` (or the dtype itself) as a torch dtype; other values name ``key``."""
    if isinstance(value, torch.dtype) and value in AUTOCAST_DTYPES.values():
        return value
    if isinstance(value, str) and value in AUTOCAST_DTYPES:
        return AUTOCAST_DTYPES[value]
    raise ValueError(f'{key}: expected one of {sorted(AUTOCAST_DTYPES)}, got {value!r}')


def module_device_type(module: torch.nn.Module) -> str:
    """'cuda', 'cpu', ... of the module's first parameter ('cpu' when it has none)."""
    param = next(module.parameters(), None)
    return 'cpu' if param is None else param.device.type


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose ``optim_context`` runs the forward under ``torch.autocast``
    (no loss scaling: meant for bfloat16, e.g. ``--amp`` on CPU).

    Args:
        dtype: 'bfloat16' (default) or 'float16' (then prefer mmengine's AmpOptimWrapper, whose
            loss scaling fp16 needs).
        device_type: autocast's device type; None: that of the model's parameters.
        **kwargs: OptimWrapper's (optimizer, clip_grad, accumulative_counts).
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', device_type: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = autocast_dtype(dtype, 'optim_wrapper.dtype')
        self.device_type = device_type
        # mmcv's CPU nms / RoIAlign take fp32 only: two-stage detectors need their inputs cast
        enable_cpu_autocast_for_mmcv_ops()

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device_type = self.device_type or module_device_type(model)
        with super().optim_context(model), torch.autocast(device_type=device_type, dtype=self.cast_dtype):
            yield


def configure_amp(cfg, cuda: Optional[bool] = None) -> str:
    """Switch ``cfg.optim_wrapper`` to mixed precision (``--amp``); return what was chosen.

    CUDA (``cuda`` None: ``torch.cuda.is_available()``): mmengine's ``AmpOptimWrapper``, fp16 and a
    dynamic loss scale (a config's own ``loss_scale``/``dtype`` are kept). CPU:
    :class:`AutocastOptimWrapper` in bfloat16, without loss scale.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    wrapper = cfg.optim_wrapper
    if cuda:
        wrapper.type = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')
        wrapper.setdefault('dtype', 'float16')
        return f"CUDA autocast {wrapper['dtype']}, loss scale {wrapper['loss_scale']}"
    wrapper.type = 'kdtoolbox.AutocastOptimWrapper'
    wrapper.pop('loss_scale', None)
    wrapper.dtype = 'bfloat16'
    return 'CPU autocast bfloat16, no loss scale'
