"""Maximum mean discrepancy with a multi-bandwidth Gaussian kernel (DomainBed's ``MMD``).

For samples ``x [N, D]`` and ``y [M, D]``::

    k(p, q) = sum_{g in gammas} exp(-g * ||p - q||^2)
    MMD^2(x, y) = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)

(the biased estimator: the diagonals are included), with ``gammas = 1e-3, 1e-2, ..., 1e3`` by
default. Squared distances are clamped to ``>= 1e-30`` as in DomainBed. Used by XKD's domain
alignment (audio-visual plugin); usable by any plugin that aligns two feature distributions.
"""
from __future__ import annotations

from typing import Sequence

import torch

DEFAULT_GAMMAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` squared Euclidean distances between the rows of ``x`` and ``y``, clamped to ``>= 1e-30``."""
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None] - 2 * x @ y.t()
    return d.clamp_min(1e-30)


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float] = DEFAULT_GAMMAS) -> torch.Tensor:
    """``[N, M]`` sum over ``gammas`` of ``exp(-g ||x_i - y_j||^2)``."""
    d = squared_distances(x, y)
    return sum(torch.exp(-g * d) for g in gammas)


def mmd_loss(x: torch.Tensor, y: torch.Tensor, gammas: Sequence[float] = DEFAULT_GAMMAS) -> torch.Tensor:
    """The biased multi-kernel MMD^2 between samples ``x [N, D]`` and ``y [M, D]``."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f'mmd_loss: expected [N, D] and [M, D] samples, got {tuple(x.shape)} and {tuple(y.shape)}')
    return (gaussian_kernel(x, x, gammas).mean() + gaussian_kernel(y, y, gammas).mean()
            - 2 * gaussian_kernel(x, y, gammas).mean())
