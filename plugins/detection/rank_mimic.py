"""Rank Mimicking (RM) and Prediction-guided Feature Imitation (PFI) for one-stage anchor-based
detectors (Li, Li, Wang, Zhang, Wu, Liang: "Knowledge Distillation for Object Detection via Rank
Mimicking and Prediction-guided Feature Imitation", AAAI 2022; the paper calls both "KD-RP").

No official code was released; the reference prototype is the unmerged mmrazor 0.x PR #107
(``mmrazor/models/losses/rank_mimic.py``, ``pgfi.py``, ``configs/distill/rank_mimicing/``).

**RM.** Both detectors share the anchors, so one assignment indexes both. The student head's
own anchor generator and assigner (RetinaNet: ``MaxIoUAssigner`` of ``train_cfg.assigner``,
IoU >= 0.5 positive) give, for every GT box ``g`` with class ``y_g``, its positive anchors
``P_g`` (see :func:`kdtoolbox.ops.dense_assign.assign_anchors_to_gts`). With the sigmoid class
scores ``s = sigmoid(c)`` of class ``y_g`` at those anchors (``c``: the ``retina_cls`` logits of all
levels, as rows ``[N, sum_l H_l W_l A, K]``)::

    P^t_g = softmax_{j in P_g}(s^t_{g,j} / T),   P^s_g = softmax_{j in P_g}(s^s_{g,j} / T)   [|P_g|]
    L_RM  = 1 / |G+|  sum_{g in G+}  KL(P^t_g || P^s_g)

over the GTs ``G+`` of the whole batch that have at least one positive anchor (0 when there is
none). The anchors keep their identity: the distributions are compared anchor by anchor.

**PFI.** Per FPN level, with the classification logits ``c [N, A*K, H, W]`` and features
``F [N, C, H, W]``::

    p_diff = mean_{A*K} (c_s - c_t)^2      [N, H, W]   (detached by default, see below)
    f_diff = mean_C   (F_s - F_t)^2        [N, H, W]
    L_PFI  = mean_l  mean_{n,h,w} (p_diff * f_diff)

The prediction gap says *where* the student should imitate the teacher's features (the paper's
motivation: locations where the predictions differ most); detaching it (``detach_prediction=True``,
default) keeps PFI a feature-imitation loss whose weights are not themselves pushed down through
the head. The paper's PDF was not available when this was written, so whether the authors'
training detached it is not verified; ``detach_prediction=False`` lets the gradient flow through
``p_diff`` too (as the prototype does: it detaches nothing but the frozen teacher). A secondary
summary of the paper writes the loss as ``sum (F_dif * P_dif)^2`` with ``P_dif = |P_t - P_s|``;
the formula above is the prototype's, also not checked against the PDF.

Defaults: ``rm_weight=4.0``, ``pfi_weight=1.5`` (the prototype's ``rm_pgfi`` config; RetinaNet R101 ->
R50 2x, SGD lr 0.01), ``temperature=1.0`` (the prototype applies no temperature, SparseML's
``RankMimickingModifier`` defaults to 1.0; the paper's value is not verified). Losses:
``rank_mimic.loss_kl = rm_weight * L_RM``, ``pfi.loss_feat = pfi_weight * L_PFI``.
``RankMimicPFI`` has both (switches ``rank_mimic`` / ``pfi``); ``RankMimicking`` and ``PFI`` are
the single methods (the paper reports each).

Deviations from the prototype (and its bugs avoided): no independent ``torch.sort`` of the
student's and the teacher's score vectors before the softmax (that compares two sorted value
distributions and loses the anchor correspondence the method is about); the student's scores
are read at the same anchors *and* the same GT class as the teacher's; the mean is over the GTs
that have positive anchors of the whole batch, guarded for none (the prototype divides by
``num_gts`` per image, NaN for an image without boxes, then averages images); PFI is the mean of
``p_diff * f_diff`` (the prototype's last revision takes a per-image L2 norm over ``n*h*w``
and returns an ``[N]`` vector); the assignment is computed once from the student head instead
of recording both models' assigner calls; a 1x1 adapter maps the student's features when the
channel counts differ (the paper's pairs have equal channels: no adapter).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from kdtoolbox.adapters import ConvAdapter
from kdtoolbox.engine import BaseDistiller, DistillContext, FeaturePair, Records
from kdtoolbox.engine.checks import require_same_num_classes
from kdtoolbox.ops.dense_assign import assign_anchors_to_gts, levels_to_anchor_rows


# --- the losses ------------------------------------------------------------------------------
def group_log_softmax(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``log softmax`` of ``values [P]`` within each group (``groups [P]`` in ``[0, num_groups)``)."""
    peak = values.new_full((num_groups,), float('-inf')).scatter_reduce(
        0, groups, values.detach(), reduce='amax', include_self=True)
    shifted = values - peak[groups]
    log_z = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add(
        0, groups, shifted.exp()).log()
    return shifted - log_z[groups]


def rank_mimic_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, groups: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """Mean over groups of ``KL(softmax(t_g / T) || softmax(s_g / T))``.

    Args:
        student_scores, teacher_scores: ``[P]`` scores of the positive anchors (same anchors).
        groups: ``[P]`` long, the GT each anchor is positive for (any ids; empty groups do not count).
        temperature: ``T``.
    """
    if student_scores.numel() == 0:
        return student_scores.sum() * 0.0
    ids, groups = torch.unique(groups, return_inverse=True)
    num = int(ids.numel())
    log_ps = group_log_softmax(student_scores / temperature, groups, num)
    log_pt = group_log_softmax(teacher_scores.detach() / temperature, groups, num)
    kl = log_pt.exp() * (log_pt - log_ps)
    return kl.sum() / num


def pfi_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
             student_logits: Sequence[torch.Tensor], teacher_logits: Sequence[torch.Tensor],
             detach_prediction: bool = True) -> torch.Tensor:
    """``mean_l mean_{n,h,w}(mean_K (c_s - c_t)^2 * mean_C (F_s - F_t)^2)``."""
    total = 0.0
    for fs, ft, cs, ct in zip(student_feats, teacher_feats, student_logits, teacher_logits):
        p_diff = (cs - ct.detach()).pow(2).mean(dim=1)
        if detach_prediction:
            p_diff = p_diff.detach()
        f_diff = (fs - ft.detach()).pow(2).mean(dim=1)
        total = total + (p_diff * f_diff).mean()
    return total / max(len(student_feats), 1)


# --- the distiller ---------------------------------------------------------------------------
def _per_level(value: Union[int, Sequence[int]], num_levels: int, what: str) -> list[int]:
    values = [value] * num_levels if isinstance(value, int) else list(value)
    if len(values) != num_levels:
        raise ValueError(f'RankMimicPFI: {num_levels} levels but {len(values)} {what}')
    return values


class RankMimicPFI(BaseDistiller):
    """Rank Mimicking and/or Prediction-guided Feature Imitation.

    Args:
        rank_mimic, pfi: switch each method on/off (at least one).
        rm_weight, pfi_weight: loss weights (4.0, 1.5).
        temperature: RM's softmax temperature ``T`` (1.0).
        detach_prediction: PFI's prediction gap is a weight without gradient (default True).
        cls_module: the head conv with the class logits, called once per level (same path in both).
        head: the attribute path of the student's dense head (anchors and assigner), for RM.
        assigner: an assigner config overriding the head's (for RM).
        num_levels: FPN levels (5).
        feature_modules: PFI's features, one path per level (default ``neck.fpn_convs.{i}.conv``).
        student_channels, teacher_channels: PFI feature channels; a 1x1 adapter maps the student's
            when they differ.
    """

    def __init__(self, rank_mimic: bool = True, pfi: bool = True, rm_weight: float = 4.0,
                 pfi_weight: float = 1.5, temperature: float = 1.0, detach_prediction: bool = True,
                 cls_module: str = 'bbox_head.retina_cls', head: str = 'bbox_head',
                 assigner: Optional[dict] = None, num_levels: int = 5,
                 feature_modules: Optional[Sequence[str]] = None,
                 student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, init_cfg=None):
        if not (rank_mimic or pfi):
            raise ValueError('RankMimicPFI: both rank_mimic and pfi are off: nothing to distil')
        if temperature <= 0:
            raise ValueError(f'RankMimicPFI: temperature must be > 0, got {temperature}')
        modules = list(feature_modules) if feature_modules is not None else \
            [f'neck.fpn_convs.{i}.conv' for i in range(num_levels)]
        if pfi and len(modules) != num_levels:
            raise ValueError(f'RankMimicPFI: num_levels={num_levels} but {len(modules)} feature_modules')
        recorders = {'cls': cls_module}
        if pfi:
            recorders.update({f'feat{i}': m for i, m in enumerate(modules)})
        super().__init__(student_recorders=recorders, teacher_recorders=dict(recorders), init_cfg=init_cfg)
        self.rank_mimic, self.pfi = bool(rank_mimic), bool(pfi)
        self.rm_weight, self.pfi_weight = float(rm_weight), float(pfi_weight)
        self.temperature = float(temperature)
        self.detach_prediction = bool(detach_prediction)
        self.head_path = head
        self.assigner_cfg = assigner
        self._assigner = None
        self.num_levels = int(num_levels)
        s_ch = _per_level(student_channels, self.num_levels, 'student channel counts')
        t_ch = _per_level(teacher_channels, self.num_levels, 'teacher channel counts')
        self.adapters = nn.ModuleList(
            ConvAdapter(s, t, kernel_size=1) if s != t else nn.Identity() for s, t in zip(s_ch, t_ch)
        ) if pfi and s_ch != t_ch else None

    # --- inputs ----------------------------------------------------------------------------
    def check_models(self, student, teacher) -> None:
        # RM compares the GT class's scores, PFI the class logits channel by channel
        require_same_num_classes(student, teacher, type(self).__name__, heads=(self.head_path,))

    def _logits(self, records: Records, owner: str) -> list[torch.Tensor]:
        calls = records.calls('cls')
        if len(calls) < self.num_levels:
            raise ValueError(f'RankMimicPFI: {owner} module {self.student_recorders["cls"]!r} ran '
                             f'{len(calls)} time(s), {self.num_levels} levels expected')
        return calls[:self.num_levels]

    def _student_head(self, context: DistillContext) -> Any:
        if context.student is None:
            raise ValueError('RankMimicPFI: rank mimicking needs context.student (its head assigns anchors)')
        try:
            return context.student.get_submodule(self.head_path)
        except AttributeError:
            raise AttributeError(f'RankMimicPFI: the student has no head {self.head_path!r} '
                                 f'(set head=...)') from None

    # --- RM --------------------------------------------------------------------------------
    def positives(self, context: DistillContext, logits: Sequence[torch.Tensor], num_classes: int):
        """Image, anchor row, class and GT id ``[P]`` of every positive anchor of the batch."""
        samples = context.data_samples
        if not samples:
            raise ValueError('RankMimicPFI: rank mimicking needs the data samples (gt_instances) in the context')
        head = self._student_head(context)
        if self._assigner is None and self.assigner_cfg is not None:
            from kdtoolbox.ops.dense_assign import build_head_assigner
            self._assigner = build_head_assigner(head, self.assigner_cfg, 'RankMimicPFI.assigner')
        device = logits[0].device
        gt_inds = assign_anchors_to_gts(head, [t.shape[-2:] for t in logits], samples, device,
                                        assigner=self._assigner)
        imgs, rows, labels, gts = [], [], [], []
        offset = 0
        for img, (inds, sample) in enumerate(zip(gt_inds, samples)):
            pos = torch.nonzero(inds > 0).squeeze(1)
            gt = inds[pos] - 1
            imgs.append(torch.full_like(pos, img))
            rows.append(pos)
            labels.append(sample.gt_instances.labels.to(device)[gt].long())
            gts.append(gt + offset)
            offset += len(sample.gt_instances)
        labels = torch.cat(labels)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f'RankMimicPFI: GT labels must lie in [0, {num_classes}) (the head\'s classes)')
        return torch.cat(imgs), torch.cat(rows), labels, torch.cat(gts)

    def rank_mimic_term(self, s_logits, t_logits, context: DistillContext) -> torch.Tensor:
        head = self._student_head(context)
        if not getattr(head, 'use_sigmoid_cls', False):
            raise ValueError(f'RankMimicPFI: {type(head).__name__} is not a sigmoid classifier '
                             f'(use_sigmoid_cls=False): rank mimicking reads sigmoid class scores')
        k = int(head.cls_out_channels)
        s_rows, t_rows = levels_to_anchor_rows(s_logits, k), levels_to_anchor_rows(t_logits, k)
        imgs, rows, labels, gts = self.positives(context, s_logits, k)
        s = s_rows[imgs, rows, labels].sigmoid()
        t = t_rows[imgs, rows, labels].sigmoid()
        return rank_mimic_loss(s, t, gts, self.temperature)

    # --- preflight -------------------------------------------------------------------------
    def feature_pairs(self, student: Records, teacher: Records) -> list[FeaturePair]:
        """PFI's features per level, the student's through its adapter (none when the channels are
        equal); a mismatch names ``student_channels`` / ``teacher_channels`` (which build the 1x1
        adapters) or ``feature_modules``. Rank mimicking compares class scores, whose count is
        checked when the model is built."""
        if not self.pfi:
            return []
        pairs = []
        for i in range(self.num_levels):
            adapter = self.adapters[i] if self.adapters is not None else None
            if isinstance(adapter, nn.Identity):
                adapter = None
            key = (f'distiller.student_channels / teacher_channels (level {i}: ConvAdapter '
                   f'{adapter.conv.in_channels} -> {adapter.conv.out_channels})') if adapter is not None else ''
            module = self.student_recorders[f'feat{i}']
            pairs.extend(FeaturePair.from_values(
                module, module, student[f'feat{i}'], teacher[f'feat{i}'], student_adapter=adapter,
                student_adapter_key=key,
                where=f'distiller (RankMimicPFI, PFI level {i})'))
        return pairs

    # --- forward ---------------------------------------------------------------------------
    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_logits, t_logits = self._logits(student, 'student'), self._logits(teacher, 'teacher')
        for i, (s, t) in enumerate(zip(s_logits, t_logits)):
            if s.shape != t.shape:
                raise ValueError(f'RankMimicPFI level {i}: student logits {tuple(s.shape)} and teacher '
                                 f'logits {tuple(t.shape)} differ (same anchors and classes are needed)')
        losses = {}
        if self.rank_mimic:
            losses['rank_mimic.loss_kl'] = self.rm_weight * self.rank_mimic_term(s_logits, t_logits, context)
        if self.pfi:
            s_feats = [student[f'feat{i}'] for i in range(self.num_levels)]
            t_feats = [teacher[f'feat{i}'] for i in range(self.num_levels)]
            if self.adapters is not None:
                s_feats = [a(f) for a, f in zip(self.adapters, s_feats)]
            for i, (fs, ft, c) in enumerate(zip(s_feats, t_feats, s_logits)):
                if fs.shape != ft.shape or fs.shape[-2:] != c.shape[-2:]:
                    raise ValueError(f'RankMimicPFI level {i}: student feature {tuple(fs.shape)}, teacher '
                                     f'feature {tuple(ft.shape)} and logits {tuple(c.shape)} do not match')
            losses['pfi.loss_feat'] = self.pfi_weight * pfi_loss(
                s_feats, t_feats, s_logits, t_logits, self.detach_prediction)
        return losses


class RankMimicking(RankMimicPFI):
    """Rank Mimicking alone (``RankMimicPFI`` with ``pfi=False``)."""

    def __init__(self, **kwargs):
        if kwargs.pop('pfi', False) or not kwargs.pop('rank_mimic', True):
            raise ValueError('RankMimicking: use RankMimicPFI to switch the methods')
        super().__init__(rank_mimic=True, pfi=False, **kwargs)


class PFI(RankMimicPFI):
    """Prediction-guided Feature Imitation alone (``RankMimicPFI`` with ``rank_mimic=False``)."""

    def __init__(self, **kwargs):
        if kwargs.pop('rank_mimic', False) or not kwargs.pop('pfi', True):
            raise ValueError('PFI: use RankMimicPFI to switch the methods')
        super().__init__(rank_mimic=False, pfi=True, **kwargs)


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(RankMimicPFI)
    registry.distiller(RankMimicking)
    registry.distiller(PFI)
