"""mmcv 2.1's compiled ops with bf16/fp16 tensors on CPU (``tools/train.py --amp`` on CPU: bf16).

mmcv's CPU kernels of ``nms`` and ``RoIAlign`` take float32 only, and under CPU autocast a two-stage
detector hands them bf16 tensors: the RPN's scores (``NMSop``, in training too: the proposals) and the
FPN features of the RoI extractor (``RoIAlignFunction``, forward and backward). On CUDA mmcv's
kernels take fp16 and nothing is needed.

:func:`enable_cpu_autocast_for_mmcv_ops` wraps those autograd functions' ``forward`` (and
RoIAlign's ``backward``): when a floating CPU tensor argument is in half precision, the floating
tensor arguments are cast to fp32, the kernel runs with autocast off, and floating results are cast
back to that half dtype (mmdet writes RoI features into a tensor of the features' dtype; nms returns
indices). fp32 and CUDA tensors pass through untouched. Idempotent; an mmcv without compiled ops is
left alone.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

__all__ = ['enable_cpu_autocast_for_mmcv_ops']

_ENABLED = False
_HALF = (torch.bfloat16, torch.float16)


def _half_dtype(args) -> Optional[torch.dtype]:
    """The dtype of the first half-precision CPU tensor among ``args`` (None: there is none)."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.dtype in _HALF and a.device.type == 'cpu':
            return a.dtype
    return None


def _run_in_fp32(fn: Callable) -> Callable:
    """``fn(ctx, *args)`` (an autograd Function's forward or backward) run in fp32 for half CPU inputs."""
    @functools.wraps(fn)
    def wrapped(ctx, *args):
        half = _half_dtype(args)
        if half is None:
            return fn(ctx, *args)
        args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast('cpu', enabled=False):
            out = fn(ctx, *args)

        def back(x):
            return x.to(half) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
        return tuple(back(x) for x in out) if isinstance(out, tuple) else back(out)
    return wrapped


def enable_cpu_autocast_for_mmcv_ops() -> bool:
    """Let mmcv's ``nms`` and ``RoIAlign`` take bf16/fp16 CPU tensors (see the module docstring);
    return whether the wrappers are in place."""
    global _ENABLED
    if _ENABLED:
        return True
    try:
        from mmcv.ops.nms import NMSop
        from mmcv.ops.roi_align import RoIAlignFunction
    except ImportError:  # mmcv without compiled ops: nothing to wrap
        return False
    NMSop.forward = staticmethod(_run_in_fp32(NMSop.forward))
    RoIAlignFunction.forward = staticmethod(_run_in_fp32(RoIAlignFunction.forward))
    RoIAlignFunction.backward = staticmethod(_run_in_fp32(RoIAlignFunction.backward))
    _ENABLED = True
    return True
