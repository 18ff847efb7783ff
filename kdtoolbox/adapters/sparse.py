"""Adapters for sparse voxel features: map a student's ``[N, C_s]`` sparse features to ``C_t`` channels.

Inputs are spconv ``SparseConvTensor``s, kdtoolbox ``SparseFeatures`` or plain ``[N, C_s]`` feature
tensors; the output has the same kind (same sites, new features). spconv is imported only when a
:class:`SubMConvAdapter` is built (``kdtoolbox.ops.spconv_compat.import_spconv``), so importing this
module needs no spconv.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn as nn

from ..ops.sparse_imitation import SparseFeatures
from ..ops.spconv_compat import import_spconv, is_sparse_conv_tensor
from ..registry import ADAPTERS
from .init import init_adapter_weights


def _with_features(x, features: torch.Tensor):
    if is_sparse_conv_tensor(x):
        return x.replace_feature(features)
    if isinstance(x, SparseFeatures):
        return dataclasses.replace(x, features=features)
    return features


def _features_of(x, name: str) -> torch.Tensor:
    if is_sparse_conv_tensor(x) or isinstance(x, SparseFeatures):
        return x.features
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        return x
    raise TypeError(f'{name}: expected a SparseConvTensor, SparseFeatures or [N, C] tensor, got '
                    f'{type(x).__name__}{tuple(x.shape) if isinstance(x, torch.Tensor) else ""}')


@ADAPTERS.register_module()
class SparseLinearAdapter(nn.Module):
    """``nn.Linear(C_s, C_t)`` on the features of every active site (a 1x1x1 sparse conv).

    Args:
        in_channels, out_channels: student and teacher channels.
        bias: a bias (safe on CPU: this is a plain ``nn.Linear``, not spconv's kernel).
        init: see :func:`kdtoolbox.adapters.init.init_adapter_weights`.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, init: str = 'default',
                 std: float = 1e-4):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)
        init_adapter_weights(self, init, std)

    def forward(self, x):
        """``x``: SparseConvTensor / SparseFeatures / ``[N, C_s]`` -> the same kind with ``C_t`` channels."""
        return _with_features(x, self.linear(_features_of(x, type(self).__name__)))


@ADAPTERS.register_module()
class SubMConvAdapter(nn.Module):
    """A bias-free spconv ``SubMConv3d`` (k x k x k, same active sites) as an adapter.

    Args:
        in_channels, out_channels: student and teacher channels.
        kernel_size: odd k.
        indice_key: spconv's key to share the rule book with the student's submanifold convs of the
            same sites (e.g. 'subm1' in mmdet3d's SparseEncoder); None builds its own.
        bias: must be False. spconv's CPU kernel asserts "cpu don't support act and bias" when a
            k x k x k conv with a bias runs in eval mode (spconv issue 719); patching the assert away
            silently drops the bias. Use :class:`SparseLinearAdapter` for a biased 1x1x1 adapter.
        init: 'default' (spconv's), 'zeros' or 'near_zero' (truncated normal with ``std``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 indice_key: Optional[str] = None, bias: bool = False, init: str = 'default',
                 std: float = 1e-4):
        super().__init__()
        if bias:
            raise ValueError('SubMConvAdapter: bias=True is not supported: spconv 2.x asserts "cpu don\'t '
                             'support act and bias" for a biased k x k x k sparse conv in eval mode on CPU '
                             '(spconv issue 719). Use bias=False, or SparseLinearAdapter (nn.Linear) for a '
                             'biased 1x1x1 adapter.')
        if kernel_size % 2 != 1:
            raise ValueError(f'SubMConvAdapter: kernel_size must be odd, got {kernel_size}')
        spconv = import_spconv()
        self.conv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                      bias=False, indice_key=indice_key)
        if init == 'zeros':
            nn.init.zeros_(self.conv.weight)
        elif init == 'near_zero':
            nn.init.trunc_normal_(self.conv.weight, std=std, a=-2 * std, b=2 * std)
        elif init != 'default':
            raise ValueError(f"SubMConvAdapter init {init!r}: expected 'default', 'zeros' or 'near_zero'")

    def forward(self, x):
        """``x``: SparseConvTensor (or SparseFeatures) -> the same kind with ``C_t`` channels, same sites."""
        if is_sparse_conv_tensor(x):
            return self.conv(x)
        if isinstance(x, SparseFeatures):
            spconv = import_spconv(x.features.device)
            out = self.conv(spconv.SparseConvTensor(x.features, x.indices.int(), list(x.spatial_shape),
                                                    x.batch_size))
            return dataclasses.replace(x, features=out.features)
        raise TypeError(f'SubMConvAdapter: expected a SparseConvTensor or SparseFeatures, got {type(x).__name__}')
