"""An MLP adapter for vector features (``[..., C_s] -> [..., C_t]``), e.g. embeddings or logits."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..registry import ADAPTERS
from .init import init_adapter_weights


@ADAPTERS.register_module()
class MLPAdapter(nn.Module):
    """Linear layers with ReLU between them: ``in_channels -> hidden... -> out_channels``.

    Args:
        hidden_channels: sizes of the hidden layers (empty: a single linear layer).
        init: see :func:`init_adapter_weights`.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: Optional[list] = None,
                 init: str = 'default', std: float = 1e-4):
        super().__init__()
        sizes = [in_channels, *(hidden_channels or []), out_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU(inplace=False))
        self.mlp = nn.Sequential(*layers)
        init_adapter_weights(self, init, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
