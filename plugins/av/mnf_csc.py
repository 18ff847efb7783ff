"""MNF + CSC: robust cross-modal distillation for unconstrained videos (Xia et al., CVPR 2023).

Official code: GeWu-Lab/cross-modal-distillation (``models/modality_noise_filter.py``,
``loss/csc_loss.py``, ``train.py``). Notation, per batch of N videos:

- ``a [N, E]`` the teacher feature (512-d CNN14 audio embedding officially; record ``teacher.feature``);
- ``X [N, L, E]`` the student's last token map, flattened (``student.tokens``, L = 98 for
  16x112x112 clips) and ``v [N, E]`` its pooled feature (``student.feature``); the student's logits
  ``p_v`` give the student's own ``loss_cls`` (``CE(p_v, y)``, computed by the student model).

**MNF** (modality noise filter, module ``distiller.mnf``):

- feature selection gate ``g = sigmoid(W2 ReLU(BN(W1 [a ; mean_l X_l])))``, ``W1: 2E -> E/2``,
  ``W2: E/2 -> E`` (``gate_hidden`` overrides ``E/2``); purified teacher ``a~ = g * a`` ``[N, E]``
  (the gate sees the token mean, as officially; for R2Plus1D it equals ``v``, for
  LogMelAudioCNN students, whose neck pools max + mean over time, it does not);
- teacher-guided attention ``z = MHA(query=a~, key=value=X)`` (``num_heads=2``, 256 dims per head at
  E=512) ``[N, E]``; ``sv = T_v(z) = ReLU(BN(W z + b))`` ``[N, E]``; auxiliary classifier
  ``p_sv = Linear(E, num_classes)(sv)``;
- triplet loss with margin ``m`` on L2-normalised vectors, anchor v, positive a~, negative a:
  ``L_t = mean_i max(0, cos(v_i, a_i) - cos(v_i, a~_i) + m)``;
- ``L_ce^c = CE(p_sv, y)``;
- sparsity of the gate weights ``L_1 = sum_{W in (W1, W2)} mean_rows sum_cols |W|``, weighted by
  ``sparsity_weight`` (0.001).

**CSC** (contrastive semantic calibration): ``s_ij = cos(v_i, sv_j)``, per-pair temperature
``tau_ij = cos(v_i, a~_j).detach() + delta`` (``delta`` 0.07 for UCF51, 0.2 for ActivityNet;
``adaptive_temperature=False`` gives ``tau = delta``), ``p_ij = softmax_j(s_ij / tau_ij)``, positives
``P(i) = {j : y_j = y_i}`` (including i): ``L_cl^c = mean_i -1/|P(i)| sum_{j in P(i)} log p_ij``.

Returned losses (the model prefixes ``distill.``; the student adds ``loss_cls``)::

    mnf.loss_triplet = lambda * L_t      mnf.loss_cls = lambda * L_ce^c
    mnf.loss_sparsity = sparsity_weight * L_1      csc.loss_contrastive = lambda * L_cl^c

so the total is ``CE(p_v) + lambda (L_t + L_ce^c + L_cl^c) + 0.001 L_1``.

**Gradients** (as in the official code, where ``a_losses.backward()`` is followed by
``video_optimizer.zero_grad()`` before ``v_losses.backward()``): ``L_t``, ``L_ce^c`` and ``L_1``
train only the MNF; ``CE(p_v)`` and ``L_cl^c`` train the student, ``L_cl^c`` also the MNF (through
``sv`` and ``a~``). Here with one backward pass: the MNF runs twice on the same values, once on the
detached student tokens (for ``L_t`` and ``L_ce^c``; the triplet's anchor ``v`` is detached too)
and once on the attached tokens (for ``L_cl^c``); the second pass updates scratch copies of the
BatchNorm running statistics, so that they are updated once per step, as officially.

**Learning rates**: the official MNF optimizer runs at 0.2x the student's learning rate. Give the
MNF's parameters (every name containing ``distiller.mnf``) a learning-rate multiplier through
mmengine's optim wrapper::

    optim_wrapper = dict(optimizer=dict(type='Adam', lr=3e-4, weight_decay=5e-4),
                         paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)}))

Deviations from the official code:

- sparsity: the official loop ``for w in fc_weights: norm_loss = 0.001 * ...`` uses ``=`` where
  ``+=`` was meant, so only ``W2`` counts; this module sums both (``legacy_sparsity=True``
  reproduces the slip);
- temperature clamp: with ``cos >= -1``, ``tau`` can be ``<= 0`` for ``delta < 1`` (the official
  code does not guard this: a negative temperature flips the ranking, zero divides by zero). Here
  ``tau`` is clamped to ``>= min_temperature`` (0.01) by default; ``clamp_temperature=False``
  reproduces the unclamped original;
- the official ``-log(softmax + 1e-10)`` is computed as ``-log_softmax`` (no epsilon);
- the teacher and student widths must match (``E``, as officially ``aud_dim == vid_dim``);
- one optimizer and one backward pass (see Gradients); the losses are scaled by ``lambda``
  together (officially ``lambda`` scales only the CSC term; equal at the default ``lambda=1``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records

from .models import flatten_tokens, gt_labels


# --- losses as functions ----------------------------------------------------------------------------
def mnf_triplet_loss(anchor: torch.Tensor, negative: torch.Tensor, positive: torch.Tensor,
                     margin: float = 0.2) -> torch.Tensor:
    """``mean_i max(0, cos(anchor_i, negative_i) - cos(anchor_i, positive_i) + margin)``; rows ``[N, E]``."""
    cos_an = F.cosine_similarity(anchor, negative, dim=1, eps=1e-12)
    cos_ap = F.cosine_similarity(anchor, positive, dim=1, eps=1e-12)
    return F.relu(cos_an - cos_ap + margin).mean()


def gate_sparsity(weights: list, legacy: bool = False) -> torch.Tensor:
    """``sum_W mean_rows(sum_cols |W|)`` over the gate's Linear weights (``legacy``: the last one only)."""
    if legacy:
        weights = weights[-1:]
    return sum(w.abs().sum(dim=1).mean() for w in weights)


def cosine_matrix(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` cosines between the rows of ``x [N, D]`` and ``y [M, D]``."""
    return F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()


def csc_temperature(student: torch.Tensor, purified: torch.Tensor, delta: float, adaptive: bool = True,
                    clamp: bool = True, min_temperature: float = 0.01) -> torch.Tensor:
    """``tau_ij = cos(v_i, a~_j).detach() + delta`` ``[N, N]`` (``delta`` everywhere if not ``adaptive``)."""
    n = student.shape[0]
    if adaptive:
        tau = cosine_matrix(student, purified).detach() + delta
    else:
        tau = torch.full((n, n), float(delta), dtype=student.dtype, device=student.device)
    return tau.clamp(min=min_temperature) if clamp else tau


def csc_loss(student: torch.Tensor, selected: torch.Tensor, labels: torch.Tensor,
             temperature: torch.Tensor) -> torch.Tensor:
    """Supervised contrastive loss with per-pair temperatures (see the module docstring).

    Args:
        student: ``v [N, E]`` pooled student features (rows).
        selected: ``sv [N, E]`` MNF outputs (columns).
        labels: ``[N]`` class indices; positives share the row's label (the diagonal included).
        temperature: ``tau [N, N]``.
    """
    if temperature.shape != (student.shape[0], selected.shape[0]):
        raise ValueError(f'csc_loss: temperature must be [N, N] = {(student.shape[0], selected.shape[0])}, '
                         f'got {tuple(temperature.shape)}')
    logits = cosine_matrix(student, selected) / temperature
    log_p = F.log_softmax(logits, dim=1)
    positives = (labels[:, None] == labels[None, :]).to(log_p.dtype)
    return (-(log_p * positives).sum(dim=1) / positives.sum(dim=1)).mean()


# --- registered loss modules --------------------------------------------------------------------------
class MNFTripletLoss(nn.Module):
    """:func:`mnf_triplet_loss` as a module (``forward(anchor, negative, positive)``)."""

    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, anchor, negative, positive):
        return mnf_triplet_loss(anchor, negative, positive, self.margin)


class CSCLoss(nn.Module):
    """CSC's contrastive loss: ``forward(student, selected, purified, labels)``.

    Args:
        delta: the temperature offset (0.07 UCF51, 0.2 ActivityNet).
        adaptive_temperature: ``tau_ij = cos(v_i, a~_j) + delta`` (the official ``--with_adj``),
            else ``tau = delta``.
        clamp_temperature, min_temperature: clamp ``tau >= min_temperature`` (False: the original).
    """

    def __init__(self, delta: float = 0.07, adaptive_temperature: bool = True, clamp_temperature: bool = True,
                 min_temperature: float = 0.01):
        super().__init__()
        if clamp_temperature and min_temperature <= 0:
            raise ValueError(f'CSCLoss: min_temperature must be > 0, got {min_temperature}')
        self.delta, self.adaptive = delta, adaptive_temperature
        self.clamp, self.min_temperature = clamp_temperature, min_temperature

    def temperature(self, student, purified):
        return csc_temperature(student, purified, self.delta, self.adaptive, self.clamp, self.min_temperature)

    def forward(self, student, selected, purified, labels):
        return csc_loss(student, selected, labels, self.temperature(student, purified))


# --- the MNF module ---------------------------------------------------------------------------------
class ModalityNoiseFilter(nn.Module):
    """Gate, teacher-guided attention, ``T_v`` and the auxiliary classifier (see the module docstring)."""

    def __init__(self, embed_dim: int, num_classes: int, num_heads: int = 2, gate_hidden: Optional[int] = None):
        super().__init__()
        hidden = gate_hidden or embed_dim // 2
        self.gate = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, embed_dim))
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.trans_sv = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.BatchNorm1d(embed_dim),
                                      nn.ReLU(inplace=True))
        self.classifier = nn.Linear(embed_dim, num_classes)

    def gate_weights(self) -> list:
        return [self.gate[0].weight, self.gate[3].weight]

    def forward(self, teacher: torch.Tensor, tokens: torch.Tensor) -> dict:
        """``teacher [N, E]``, ``tokens [N, L, E]`` -> gate, purified ``a~``, ``sv``, ``logits``, ``attn [N, 1, L]``."""
        gate = torch.sigmoid(self.gate(torch.cat([teacher, tokens.mean(dim=1)], dim=1)))
        purified = gate * teacher
        attended, attn = self.attn(purified.unsqueeze(1), tokens, tokens)
        selected = self.trans_sv(attended.squeeze(1))
        return dict(gate=gate, purified=purified, selected=selected, logits=self.classifier(selected), attn=attn)


@contextmanager
def frozen_bn_stats(module: nn.Module):
    """Let a second pass on the same batch update scratch copies of the BatchNorm running statistics.

    The originals are swapped back on exit (not copied into: the scratch tensors may be saved for
    backward, so nothing is modified in place).
    """
    names = ('running_mean', 'running_var', 'num_batches_tracked')
    saved = [(m, [getattr(m, n) for n in names]) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m, tensors in saved:
        for n, t in zip(names, tensors):
            setattr(m, n, t.clone())
    try:
        yield
    finally:
        for m, tensors in saved:
            for n, t in zip(names, tensors):
                setattr(m, n, t)


class MNFCSC(BaseDistiller):
    """MNF + CSC distiller (see the module docstring).

    Args:
        num_classes: the classes of the auxiliary classifier (the student's).
        embed_dim: ``E``, the width of the teacher feature and of the student tokens (512).
        num_heads: heads of the teacher-guided attention (2; the official ``--n_head`` is unused).
        gate_hidden: the gate's hidden width (``E // 2``).
        margin: the triplet margin (0.2).
        loss_weight: ``lambda`` (1.0).
        sparsity_weight: weight of the gate sparsity (0.001); 0 switches it off (``--use_norm`` unset).
        legacy_sparsity: reproduce the official slip (only the last gate weight counts).
        use_triplet: the triplet loss (``--use_triplet``, set in the official scripts).
        delta, adaptive_temperature, clamp_temperature, min_temperature: see :class:`CSCLoss`.
        student_recorders: ``tokens`` (the token map) and ``feature`` (pooled) of the student.
        teacher_recorders: ``feature`` (the teacher's pooled feature / embedding).
    """

    def __init__(self, num_classes: int, embed_dim: int = 512, num_heads: int = 2,
                 gate_hidden: Optional[int] = None, margin: float = 0.2, loss_weight: float = 1.0,
                 sparsity_weight: float = 1e-3, legacy_sparsity: bool = False, use_triplet: bool = True,
                 delta: float = 0.07, adaptive_temperature: bool = True, clamp_temperature: bool = True,
                 min_temperature: float = 0.01,
                 student_recorders: Optional[Mapping[str, Any]] = None,
                 teacher_recorders: Optional[Mapping[str, Any]] = None, init_cfg=None):
        student_recorders = dict(student_recorders or dict(tokens='backbone', feature='neck'))
        teacher_recorders = dict(teacher_recorders or dict(feature='neck'))
        for side, recs, need in (('student', student_recorders, ('tokens', 'feature')),
                                 ('teacher', teacher_recorders, ('feature',))):
            missing = [k for k in need if k not in recs]
            if missing:
                raise KeyError(f'MNFCSC: {side}_recorders must name {list(need)}, missing {missing}')
        super().__init__(student_recorders, teacher_recorders, init_cfg=init_cfg)
        self.embed_dim = embed_dim
        self.mnf = ModalityNoiseFilter(embed_dim, num_classes, num_heads, gate_hidden)
        self.triplet = MNFTripletLoss(margin)
        self.csc = CSCLoss(delta, adaptive_temperature, clamp_temperature, min_temperature)
        self.loss_weight, self.sparsity_weight = loss_weight, sparsity_weight
        self.legacy_sparsity, self.use_triplet = legacy_sparsity, use_triplet

    def _check(self, name: str, x: torch.Tensor, dims: int) -> None:
        if x.dim() != dims or x.shape[-1 if dims == 2 else 1] != self.embed_dim:
            raise ValueError(f'MNFCSC: {name} has shape {tuple(x.shape)}; expected width embed_dim='
                             f'{self.embed_dim} ({"[N, E]" if dims == 2 else "[N, E, *grid]"}): the teacher and '
                             f'student widths must both equal embed_dim')

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        token_map, v, a = student['tokens'], student['feature'], teacher['feature']
        self._check('student.feature', v, 2)
        self._check('teacher.feature', a, 2)
        if token_map.dim() < 3 or token_map.shape[1] != self.embed_dim:
            self._check('student.tokens', token_map, 3)
        tokens = flatten_tokens(token_map)
        a = a.detach()
        labels = gt_labels(context.data_samples, v.device, 'MNFCSC')
        # pass 1: the filter's own losses on detached student inputs (they train only the MNF)
        out = self.mnf(a, tokens.detach())
        losses = {'mnf.loss_cls': self.loss_weight * F.cross_entropy(out['logits'], labels)}
        if self.use_triplet:
            losses['mnf.loss_triplet'] = self.loss_weight * self.triplet(v.detach(), a, out['purified'])
        if self.sparsity_weight:
            losses['mnf.loss_sparsity'] = self.sparsity_weight * gate_sparsity(self.mnf.gate_weights(),
                                                                                self.legacy_sparsity)
        # pass 2: the same values with the student attached (CSC trains the student and the MNF)
        with frozen_bn_stats(self.mnf):
            out2 = self.mnf(a, tokens)
        losses['csc.loss_contrastive'] = self.loss_weight * self.csc(v, out2['selected'], out2['purified'], labels)
        losses['mnf.gate_mean'] = out['gate'].detach().mean()
        return losses
