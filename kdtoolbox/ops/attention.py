"""Attention maps of a feature map, as FGD, PGD and related detection distillers define them.

For ``feat [N, C, H, W]`` and a temperature ``temp``:

- spatial attention ``A_s = H * W * softmax_hw(mean_c |F| / temp)`` ``[N, H, W]`` (sums to ``H*W``);
- channel attention ``A_c = C * softmax_c(mean_hw |F| / temp)`` ``[N, C]`` (FGD: pooled over the map);
- per-pixel channel attention ``A_cp = C * softmax_c(|F| / temp)`` ``[N, C, H, W]`` (PGD: one
  distribution over channels at every pixel).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spatial_attention(feat: torch.Tensor, temp: float) -> torch.Tensor:
    """``H * W * softmax_hw(mean_c |F| / temp)``: ``[N, H, W]``."""
    n, _, h, w = feat.shape
    logits = (feat.abs().mean(dim=1) / temp).reshape(n, -1)
    return (h * w * F.softmax(logits, dim=1)).reshape(n, h, w)


def channel_attention(feat: torch.Tensor, temp: float) -> torch.Tensor:
    """``C * softmax_c(mean_hw |F| / temp)``: ``[N, C]``."""
    return feat.shape[1] * F.softmax(feat.abs().mean(dim=(2, 3)) / temp, dim=1)


def pixel_channel_attention(feat: torch.Tensor, temp: float) -> torch.Tensor:
    """``C * softmax_c(|F| / temp)`` at every pixel: ``[N, C, H, W]``."""
    return feat.shape[1] * F.softmax(feat.abs() / temp, dim=1)
