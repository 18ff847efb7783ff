"""Shape-only adapters: identity, resize to the teacher's spatial size, and chaining."""
from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import ADAPTERS


@ADAPTERS.register_module()
class IdentityAdapter(nn.Module):
    """Returns its input unchanged (a placeholder that keeps configs uniform)."""

    def forward(self, x):
        return x


@ADAPTERS.register_module()
class ResizeAdapter(nn.Module):
    """Resizes ``[N, C, H_s, W_s]`` to the teacher's ``[H_t, W_t]`` (given as ``target``) or to a
    fixed ``size``, with ``F.interpolate`` (``mode='bilinear'`` by default, ``align_corners=False``)."""

    def __init__(self, size: Optional[tuple] = None, mode: str = 'bilinear'):
        super().__init__()
        self.size = tuple(size) if size is not None else None
        self.mode = mode

    def forward(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        size = self.size if self.size is not None else (tuple(target.shape[2:]) if target is not None else None)
        if size is None:
            raise ValueError('ResizeAdapter needs a fixed size or the teacher tensor as target')
        if tuple(x.shape[2:]) == size:
            return x
        kwargs = {'align_corners': False} if self.mode in ('bilinear', 'bicubic', 'trilinear', 'linear') else {}
        return F.interpolate(x, size=size, mode=self.mode, **kwargs)


def apply_adapter(adapter: nn.Module, x, target=None):
    """``adapter(x, target=target)`` if its forward takes ``target``, else ``adapter(x)``."""
    if 'target' in inspect.signature(adapter.forward).parameters:
        return adapter(x, target=target)
    return adapter(x)


class AdapterSequence(nn.ModuleList):
    """Adapters applied in order; ``target`` is passed to those that accept it."""

    def forward(self, x, target=None):
        for adapter in self:
            x = apply_adapter(adapter, x, target)
        return x
