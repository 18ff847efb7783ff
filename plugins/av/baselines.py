"""Baselines of the paper's Table 1 on the same student: KD, CRD and RKD.

**KD** (Hinton et al., 2015), on the student's and the teacher's logits ``z_s, z_t [N, K]``
(records ``student.logits`` / ``teacher.logits`` = the ``head`` outputs; a
:class:`~kdtoolbox_plugins.av.models.PrecomputedEmbedding` teacher needs ``with_head=True`` and a
trained linear probe as its checkpoint)::

    L_KD = T^2 * (1/N) sum_i KL(softmax(z_t,i / T) || softmax(z_s,i / T))

returned as ``kd.loss_kd = loss_weight * L_KD`` (T = 4, as in RepDistiller).

**CRD** (Tian et al., ICLR 2020; RepDistiller's ``crd/``), on the pooled features
``f_s [N, D_s]``, ``f_t [N, D_t]`` (records ``student.feature`` / ``teacher.feature``):

- embeddings ``e_s = normalize(W_s f_s + b_s)``, ``e_t = normalize(W_t f_t + b_t)`` ``[N, d]``
  (d = ``feat_dim`` = 128);
- two memory banks ``M_s, M_t [num_data, d]`` (initialised uniform in ``+-1/sqrt(d/3)``); for each
  sample ``i`` (dataset index ``idx_i``) the indices ``c_i = [idx_i, k_1 .. k_K]`` with ``K``
  negatives drawn uniformly (with replacement) from the dataset;
- critic outputs ``h^t_ij = exp(<M_s[c_ij], e_t,i> / tau) / Z_t`` (the teacher anchor against the
  student memory) and ``h^s_ij = exp(<M_t[c_ij], e_s,i> / tau) / Z_s``; the normalisers
  ``Z = mean(exp(...)) * num_data`` are fixed from the first batch (as officially);
- NCE loss per side, with ``P_n = 1 / num_data``::

      L = -(1/N) sum_i [ log(h_i0 / (h_i0 + K P_n + eps)) + sum_{j>=1} log(K P_n / (h_ij + K P_n + eps)) ]

  and ``L_CRD = L(h^s) + L(h^t)``, returned as ``crd.loss_crd = loss_weight * L_CRD`` (0.8);
- after the loss, ``M_s[idx] <- normalize(m M_s[idx] + (1 - m) e_s)`` and the same for ``M_t``
  (m = 0.5).

The dataset index comes from the data sample's metainfo ``sample_idx`` (mmengine's ``BaseDataset``
puts ``sample_idx`` in each item's data info; the dataset's packing transform must copy it into the
``AVDataSample`` metainfo). ``num_data`` must be the training set's length.

**RKD** (Park et al., CVPR 2019) on the pooled features, with the core
:func:`kdtoolbox.losses.relation.rkd_distance_loss` (``pairs='all'``) and
:func:`~kdtoolbox.losses.relation.rkd_angle_loss`: ``rkd.loss_distance = 25 * L_D`` and
``rkd.loss_angle = 50 * L_A`` (RepDistiller's weights).

Deviations: RepDistiller samples CRD negatives with an alias table over a uniform distribution
(the same distribution as ``torch.randint``); ``contrast_idx`` can be passed for tests.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.losses.relation import rkd_angle_loss, rkd_distance_loss


# --- KD ----------------------------------------------------------------------------------------------
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`` averaged over the batch."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f'kd_loss: student logits {tuple(student_logits.shape)} and teacher logits '
                         f'{tuple(teacher_logits.shape)} differ (the classes must match)')
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature ** 2


class KDLoss(nn.Module):
    """:func:`kd_loss` as a module (``forward(student_logits, teacher_logits)``)."""

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits):
        return kd_loss(student_logits, teacher_logits, self.temperature)


class KD(BaseDistiller):
    """Hinton KD on the logits (records ``logits`` = ``head`` of both by default)."""

    def __init__(self, temperature: float = 4.0, loss_weight: float = 1.0,
                 student_recorders: Optional[Mapping[str, Any]] = None,
                 teacher_recorders: Optional[Mapping[str, Any]] = None, init_cfg=None):
        super().__init__(student_recorders or dict(logits='head'), teacher_recorders or dict(logits='head'),
                         init_cfg=init_cfg)
        self.loss = KDLoss(temperature)
        self.loss_weight = loss_weight

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        return {'kd.loss_kd': self.loss_weight * self.loss(student['logits'], teacher['logits'])}


# --- CRD ---------------------------------------------------------------------------------------------
def crd_nce_loss(scores: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """NCE loss of CRD on critic outputs ``[N, K + 1]`` (column 0 the positive), ``P_n = 1 / num_data``."""
    n, k1 = scores.shape
    m_pn = (k1 - 1) / float(num_data)
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + m_pn + eps))
    log_neg = torch.log(m_pn / (scores[:, 1:] + m_pn + eps))
    return -(log_pos.sum() + log_neg.sum()) / n


class CRDLoss(nn.Module):
    """:func:`crd_nce_loss` on the critic outputs of both sides: ``forward(student_scores, teacher_scores)``."""

    def __init__(self, num_data: int):
        super().__init__()
        self.num_data = num_data

    def forward(self, student_scores, teacher_scores):
        return crd_nce_loss(student_scores, self.num_data) + crd_nce_loss(teacher_scores, self.num_data)


class CRD(BaseDistiller):
    """Contrastive representation distillation with memory banks (see the module docstring).

    Args:
        num_data: the training set's length (the memory banks' rows).
        student_channels, teacher_channels: widths of the pooled features.
        feat_dim: embedding width (128).
        num_negatives: K (16384; sampled with replacement, so it may exceed ``num_data``).
        temperature: tau (0.07).
        momentum: the memory update's momentum (0.5).
        loss_weight: beta (0.8).
        index_key: the data-sample metainfo key holding the dataset index (``sample_idx``).
    """

    def __init__(self, num_data: int, student_channels: int, teacher_channels: int, feat_dim: int = 128,
                 num_negatives: int = 16384, temperature: float = 0.07, momentum: float = 0.5,
                 loss_weight: float = 0.8, index_key: str = 'sample_idx',
                 student_recorders: Optional[Mapping[str, Any]] = None,
                 teacher_recorders: Optional[Mapping[str, Any]] = None, init_cfg=None):
        super().__init__(student_recorders or dict(feature='neck'), teacher_recorders or dict(feature='neck'),
                         init_cfg=init_cfg)
        if num_data < 2:
            raise ValueError(f'CRD: num_data must be the training set length (>= 2), got {num_data}')
        self.num_data, self.num_negatives = int(num_data), int(num_negatives)
        self.temperature, self.momentum, self.loss_weight = temperature, momentum, loss_weight
        self.index_key = index_key
        self.embed_s = nn.Linear(student_channels, feat_dim)
        self.embed_t = nn.Linear(teacher_channels, feat_dim)
        self.loss = CRDLoss(num_data)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer('memory_s', torch.rand(num_data, feat_dim) * 2 * stdv - stdv)
        self.register_buffer('memory_t', torch.rand(num_data, feat_dim) * 2 * stdv - stdv)
        self.register_buffer('z_s', torch.tensor(-1.0))
        self.register_buffer('z_t', torch.tensor(-1.0))

    def sample_indices(self, data_samples) -> torch.Tensor:
        if not data_samples:
            raise ValueError(f'CRD: the dataset index comes from data_samples[i].metainfo[{self.index_key!r}], '
                             f'but no data samples were given')
        idx = []
        for i, sample in enumerate(data_samples):
            meta = getattr(sample, 'metainfo', {}) or {}
            if self.index_key not in meta:
                raise KeyError(f'CRD: data_samples[{i}] has no metainfo key {self.index_key!r} (the dataset index; '
                               f"mmengine's BaseDataset puts it in the data info: the packing transform must copy "
                               f'it into the data sample metainfo)')
            value = int(meta[self.index_key])
            if not 0 <= value < self.num_data:
                raise IndexError(f'CRD: data_samples[{i}].metainfo[{self.index_key!r}] = {value} is outside '
                                 f'[0, num_data={self.num_data})')
            idx.append(value)
        return torch.tensor(idx, dtype=torch.long, device=self.memory_s.device)

    def scores(self, e_s: torch.Tensor, e_t: torch.Tensor, contrast_idx: torch.Tensor) -> tuple:
        """Critic outputs ``(h^s, h^t)`` ``[N, K + 1]``; fixes ``Z`` on the first call."""
        w_t = self.memory_t[contrast_idx].detach()  # [N, K+1, d]
        w_s = self.memory_s[contrast_idx].detach()
        out_s = torch.exp(torch.einsum('nkd,nd->nk', w_t, e_s) / self.temperature)
        out_t = torch.exp(torch.einsum('nkd,nd->nk', w_s, e_t) / self.temperature)
        if self.z_s < 0:
            self.z_s.fill_(float(out_s.mean().detach()) * self.num_data)
        if self.z_t < 0:
            self.z_t.fill_(float(out_t.mean().detach()) * self.num_data)
        return out_s / self.z_s, out_t / self.z_t

    @torch.no_grad()
    def update_memory(self, idx: torch.Tensor, e_s: torch.Tensor, e_t: torch.Tensor) -> None:
        for memory, e in ((self.memory_s, e_s), (self.memory_t, e_t)):
            memory[idx] = F.normalize(memory[idx] * self.momentum + e.detach() * (1 - self.momentum), dim=1)

    def forward(self, student: Records, teacher: Records, context: DistillContext,
                contrast_idx: Optional[torch.Tensor] = None) -> dict:
        idx = self.sample_indices(context.data_samples)
        e_s = F.normalize(self.embed_s(student['feature']), dim=1)
        e_t = F.normalize(self.embed_t(teacher['feature'].detach()), dim=1)
        if contrast_idx is None:
            contrast_idx = torch.randint(0, self.num_data, (len(idx), self.num_negatives + 1), device=idx.device)
            contrast_idx[:, 0] = idx
        out_s, out_t = self.scores(e_s, e_t, contrast_idx)
        loss = self.loss_weight * self.loss(out_s, out_t)
        if self.training:
            self.update_memory(idx, e_s, e_t)
        return {'crd.loss_crd': loss}


# --- RKD ---------------------------------------------------------------------------------------------
class RKDLoss(nn.Module):
    """``distance_weight * L_D + angle_weight * L_A`` (core relation losses) as a dict of two terms."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student, teacher):
        teacher = teacher.detach()
        return dict(loss_distance=self.distance_weight * rkd_distance_loss(student, teacher, pairs='all'),
                    loss_angle=self.angle_weight * rkd_angle_loss(student, teacher))


class RKD(BaseDistiller):
    """Relational KD on the pooled features (records ``feature`` = ``neck`` of both)."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0,
                 student_recorders: Optional[Mapping[str, Any]] = None,
                 teacher_recorders: Optional[Mapping[str, Any]] = None, init_cfg=None):
        super().__init__(student_recorders or dict(feature='neck'), teacher_recorders or dict(feature='neck'),
                         init_cfg=init_cfg)
        self.loss = RKDLoss(distance_weight, angle_weight)

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        return {f'rkd.{k}': v for k, v in self.loss(student['feature'], teacher['feature']).items()}
