"""Convolutional feature-imitation adapters: map student features ``[N, C_s, H, W]`` to
``[N, C_t, H, W]``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule

from ..registry import ADAPTERS
from .init import init_adapter_weights


@ADAPTERS.register_module()
class ConvAdapter(nn.Module):
    """A single k x k convolution (k = 1 or 3, 'same' padding), optionally followed by ReLU.

    Args:
        in_channels, out_channels: student and teacher channels.
        kernel_size: 1 (FitNet, FGD's align conv) or 3 (FGFI, DeFeat).
        relu: append a ReLU (FGFI's adapter).
        init: see :func:`init_adapter_weights` ('near_zero' for FGFI/DeFeat).
        std: the std of 'near_zero'.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = True,
                 relu: bool = False, init: str = 'default', std: float = 1e-4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.relu = nn.ReLU(inplace=False) if relu else None
        init_adapter_weights(self, init, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.relu(x) if self.relu is not None else x


@ADAPTERS.register_module()
class ConvNormActAdapter(nn.Module):
    """mmcv's ``ConvModule`` (conv, norm, activation) as an adapter.

    Args:
        norm_cfg: e.g. ``dict(type='BN')``; act_cfg: e.g. ``dict(type='ReLU')`` or None.
        Others as :class:`ConvAdapter`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None, init: str = 'default',
                 std: float = 1e-4):
        super().__init__()
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='ReLU') if act_cfg is None else act_cfg
        self.block = ConvModule(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                norm_cfg=norm_cfg or None, act_cfg=act_cfg or None)
        init_adapter_weights(self, init, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)
