"""Plain feature-imitation losses shared by distillers."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import LOSSES


def feature_mse(student: torch.Tensor, teacher: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
    """Squared error between ``student`` and ``teacher`` (same shape ``[N, ...]``).

    reduction:
      - 'mean': mean over every element (``F.mse_loss``);
      - 'sum_per_image': ``0.5 * sum((s - t)^2) / N``, FitNets' hint loss ``1/2 ||u - r(v)||^2``
        averaged over the batch;
      - 'sum': the plain sum.
    """
    if student.shape != teacher.shape:
        raise ValueError(f'feature_mse: student {tuple(student.shape)} and teacher '
                         f'{tuple(teacher.shape)} differ in shape (add an adapter)')
    sq = (student - teacher).pow(2)
    if reduction == 'mean':
        return sq.mean()
    if reduction == 'sum_per_image':
        return 0.5 * sq.sum() / max(student.shape[0], 1)
    if reduction == 'sum':
        return sq.sum()
    raise ValueError(f"feature_mse: reduction must be 'mean', 'sum_per_image' or 'sum', got {reduction!r}")


@LOSSES.register_module()
class FeatureMSELoss(nn.Module):
    """``loss_weight * feature_mse(student, teacher, reduction)``; the teacher is detached."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        feature_mse(torch.zeros(1), torch.zeros(1), reduction)  # validate now
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * feature_mse(student, teacher.detach(), self.reduction)
