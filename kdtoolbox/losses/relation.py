"""Relational knowledge distillation (Park et al., CVPR 2019): distance and angle potentials.

Shared by every plugin that distils the structure of a set of embeddings rather than the
embeddings themselves (GID's relation loss on instance features, the audio-visual RKD baseline).

For embeddings ``x [R, D]`` (one row per sample or instance):

- distance potential ``psi_D(i, j) = ||x_i - x_j||_2 / mu`` with ``mu`` the mean distance over the
  pairs ``i != j`` (scale invariance); ``L_D = SmoothL1(psi_D(student), psi_D(teacher))``;
- angle potential ``psi_A(i, j, k) = <e_ij, e_kj>`` with ``e_ij = (x_i - x_j) / ||x_i - x_j||``;
  ``L_A = SmoothL1(psi_A(student), psi_A(teacher))`` averaged over all ``R^3`` triplets (the official
  RKD code's reduction).

The teacher side is detached. Both losses are 0 for fewer than 2 (distance) / 3 (angle) rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances ``[R, R]`` between the rows of ``x [R, D]`` (exact zeros on the diagonal)."""
    sq = x.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp(min=eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))


def normalised_distances(x: torch.Tensor) -> torch.Tensor:
    """``psi_D``: pairwise distances ``[R, R]`` divided by their mean over the pairs ``i != j``."""
    d = pairwise_distances(x)
    r = len(x)
    mu = d.sum() / max(r * (r - 1), 1)
    return d / mu.clamp(min=1e-12)


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor, beta: float = 1.0,
                      pairs: str = 'all') -> torch.Tensor:
    """RKD distance loss between ``student [R, Ds]`` and ``teacher [R, Dt]`` (``Ds`` may differ).

    pairs: ``'all'`` averages the SmoothL1 over all ``R^2`` entries (the diagonal is 0 on both
    sides: the official RKD reduction); ``'off_diagonal'`` over the ``R(R-1)`` pairs ``i != j``
    (GID's reduction).
    """
    if student.dim() != 2 or teacher.dim() != 2 or len(student) != len(teacher):
        raise ValueError(f'rkd_distance_loss: expected [R, D] embeddings with the same R, got '
                         f'{tuple(student.shape)} and {tuple(teacher.shape)}')
    if pairs not in ('all', 'off_diagonal'):
        raise ValueError(f"rkd_distance_loss: pairs must be 'all' or 'off_diagonal', got {pairs!r}")
    r = len(student)
    if r < 2:
        return student.sum() * 0
    s = normalised_distances(student)
    with torch.no_grad():
        t = normalised_distances(teacher.detach())
    loss = F.smooth_l1_loss(s, t, reduction='sum', beta=beta)
    return loss / (r * r if pairs == 'all' else r * (r - 1))


def angle_potentials(x: torch.Tensor) -> torch.Tensor:
    """``psi_A [R, R, R]``: ``[j, i, k] = <e_ij, e_kj>``, the cosine of the angle at ``x_j``."""
    diff = x[None, :, :] - x[:, None, :]  # [j, i, D] = x_i - x_j
    e = F.normalize(diff, p=2, dim=2)
    return torch.bmm(e, e.transpose(1, 2))


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """RKD angle loss: SmoothL1 between the angle potentials, mean over the ``R^3`` triplets."""
    if student.dim() != 2 or teacher.dim() != 2 or len(student) != len(teacher):
        raise ValueError(f'rkd_angle_loss: expected [R, D] embeddings with the same R, got '
                         f'{tuple(student.shape)} and {tuple(teacher.shape)}')
    if len(student) < 3:
        return student.sum() * 0
    s = angle_potentials(student)
    with torch.no_grad():
        t = angle_potentials(teacher.detach())
    return F.smooth_l1_loss(s, t, reduction='mean', beta=beta)
