"""FRS: Distilling Object Detectors with Feature Richness (Du et al., NeurIPS 2021).

Official code: duzhixing/FRS (``detectors/distill_frs_single.py``, ``distill_frs_two.py``,
``neck/adap.py``, ``utils/increase_hook.py``, ``config/distill_frs/*.py``).

Per level ``l`` (``L = 5``), with the teacher's and the student's classification logits
``c_t, c_s [N, K', H, W]`` (``K' = A * K`` for RetinaNet: anchors x classes; ``K`` for GFL/FCOS;
the ``A`` RPN objectness channels for Faster R-CNN) and FPN features ``F_t, F_s [N, C, H, W]``:

- feature-richness mask ``M_l = max_{K'} sigmoid(c_t)`` ``[N, H, W]``, detached;
- ``L_feat = sum_l  sum_{n,c,h,w} (F_t - adap_l(F_s))^2 * M_l / sum_{n,h,w} M_l``
  (``adap_l``: one 3x3 conv per level, C_s -> C_t, no ReLU);
- ``L_cls = sum_l  sum_{n,k,h,w} BCE(sigmoid(c_s), sigmoid(c_t)) * M_l / sum_{n,h,w} M_l``
  (elementwise binary cross-entropy with the teacher's probabilities as soft targets).

Losses: ``frs.loss_feat = w_feat * L_feat`` and ``frs.loss_cls = w_cls * L_cls`` (summed over
levels, as the official code). Official weights (``preset``):

===========  ========================  ======  =====  =====================================
preset       score source              w_feat  w_cls  features
===========  ========================  ======  =====  =====================================
retinanet    ``bbox_head.retina_cls``  0.005   0.02   ``neck.fpn_convs.{0-4}.conv`` (P3-P7)
gfl          ``bbox_head.gfl_cls``     0.1     0.05   ``neck.fpn_convs.{0-4}.conv`` (P3-P7)
fcos         ``bbox_head.conv_cls``    0.01    0.05   ``neck.fpn_convs.{0-4}.conv`` (P3-P7)
faster_rcnn  ``rpn_head.rpn_cls``      0.002   0.1    ``neck`` output, P2-P6 (P6 is a max-pool)
===========  ========================  ======  =====  =====================================

The official linear warm-up (``distill_warm_step=500``: the losses times ``iter / 500`` for the
first 500 iterations, 0-based) is not inside the loss: it is the scale of all distillation losses,
set in the config by the core hook::

    custom_hooks = [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=500, warmup_mode='linear')]

Deviations from the official code: the BCE is computed from the student's logits
(``binary_cross_entropy_with_logits``, numerically stable) instead of ``F.binary_cross_entropy``
on probabilities (which clamps ``log`` at -100; equal otherwise); ``sum M = 0`` (every teacher
probability underflowing to 0) gives a 0 loss instead of NaN; the student's head outputs of its
own loss pass are reused instead of running the head a second time (same values in training
mode); the teacher runs under ``no_grad`` and only up to the recorded head; a term whose weight
is 0 is not computed (nor returned; the official code computes it and drops it).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.adapters import ConvAdapter
from kdtoolbox.engine import BaseDistiller, DistillContext, FeaturePair, Records
from kdtoolbox.engine.checks import require_same_num_classes

_FPN5 = tuple(f'neck.fpn_convs.{i}.conv' for i in range(5))

#: the official configs' weights, score sources and feature modules (see the module docstring)
PRESETS = {
    'retinanet': dict(feat_weight=0.005, cls_weight=0.02, score_module='bbox_head.retina_cls',
                      feature_modules=_FPN5),
    'gfl': dict(feat_weight=0.1, cls_weight=0.05, score_module='bbox_head.gfl_cls', feature_modules=_FPN5),
    'fcos': dict(feat_weight=0.01, cls_weight=0.05, score_module='bbox_head.conv_cls', feature_modules=_FPN5),
    'faster_rcnn': dict(feat_weight=0.002, cls_weight=0.1, score_module='rpn_head.rpn_cls',
                        feature_modules='neck'),
}


def richness_mask(teacher_logits: torch.Tensor) -> torch.Tensor:
    """FRS mask ``max_channels sigmoid(teacher_logits)``: ``[N, K', H, W]`` -> ``[N, H, W]``, detached."""
    return teacher_logits.detach().sigmoid().amax(dim=1)


def mask_normalised_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values * mask[:, None]) / sum(mask)`` for ``values [N, C, H, W]``, ``mask [N, H, W]``;
    0 when ``sum(mask) == 0`` (no host sync, no NaN in the gradient)."""
    total = (values * mask.unsqueeze(1)).sum()
    denom = mask.sum()
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def frs_feature_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One level of ``L_feat``: the (already adapted) student feature against the teacher's."""
    return mask_normalised_sum((teacher_feat.detach() - student_feat).pow(2), mask)


def frs_cls_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One level of ``L_cls``: elementwise BCE of the student's probabilities against the teacher's."""
    bce = F.binary_cross_entropy_with_logits(student_logits, teacher_logits.detach().sigmoid(), reduction='none')
    return mask_normalised_sum(bce, mask)


def _per_level(value: Union[int, Sequence[int]], num_levels: int, what: str) -> list[int]:
    values = [value] * num_levels if isinstance(value, int) else list(value)
    if len(values) != num_levels:
        raise ValueError(f'FRS: {num_levels} levels but {len(values)} {what}')
    return values


class FRS(BaseDistiller):
    """Feature-richness-score distillation of the FPN features and the classification outputs.

    Args:
        preset: 'retinanet', 'gfl', 'fcos' or 'faster_rcnn' (see the module docstring); the
            arguments below override it.
        feat_weight, cls_weight: ``w_feat``, ``w_cls`` (0 disables a term).
        score_module: the head conv whose output is the score map, called once per level (the
            same path in both models).
        feature_modules: one module path per level, or one path whose output is a tuple of levels
            (e.g. ``'neck'``); the same in both models.
        num_levels: the levels distilled (default: as many as ``feature_modules`` has, 5 for
            ``'neck'``); the score module must run at least that many times.
        student_channels, teacher_channels: feature channels (int, or one per level).
        adapter_kernel_size: 3 (official) or 1; adapter_relu: append a ReLU (official: no).
    """

    def __init__(self, preset: Optional[str] = 'retinanet', feat_weight: Optional[float] = None,
                 cls_weight: Optional[float] = None, score_module: Optional[str] = None,
                 feature_modules: Union[str, Sequence[str], None] = None, num_levels: Optional[int] = None,
                 student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, adapter_kernel_size: int = 3,
                 adapter_relu: bool = False, init_cfg=None):
        if preset is not None and preset not in PRESETS:
            raise KeyError(f'FRS: unknown preset {preset!r} (known: {", ".join(sorted(PRESETS))})')
        hp = dict(PRESETS[preset or 'retinanet'])
        given = dict(feat_weight=feat_weight, cls_weight=cls_weight, score_module=score_module,
                     feature_modules=feature_modules)
        hp.update({k: v for k, v in given.items() if v is not None})
        modules = hp['feature_modules']
        self.tuple_features = isinstance(modules, str)
        levels = num_levels if num_levels is not None else (5 if self.tuple_features else len(modules))
        if not self.tuple_features and len(modules) != levels:
            raise ValueError(f'FRS: num_levels={levels} but {len(modules)} feature_modules')
        recorders = {'score': hp['score_module']}
        if self.tuple_features:
            recorders['feats'] = modules
        else:
            recorders.update({f'feat{i}': m for i, m in enumerate(modules)})
        super().__init__(student_recorders=recorders, teacher_recorders=dict(recorders), init_cfg=init_cfg)
        self.num_levels = int(levels)
        self.feat_weight = float(hp['feat_weight'])
        self.cls_weight = float(hp['cls_weight'])
        if self.feat_weight < 0 or self.cls_weight < 0:
            raise ValueError(f'FRS: feat_weight and cls_weight must be >= 0, got {self.feat_weight}, '
                             f'{self.cls_weight}')
        s_ch = _per_level(student_channels, self.num_levels, 'student channel counts')
        t_ch = _per_level(teacher_channels, self.num_levels, 'teacher channel counts')
        self.adapters = nn.ModuleList(
            ConvAdapter(s, t, kernel_size=adapter_kernel_size, relu=adapter_relu) for s, t in zip(s_ch, t_ch)
        ) if self.feat_weight > 0 else None

    def check_models(self, student, teacher) -> None:
        # the score masks and the BCE compare the two classifiers channel by channel
        head = self.student_recorders['score'].rsplit('.', 1)[0]
        require_same_num_classes(student, teacher, 'FRS', heads=(head,))

    def _scores(self, records: Records, owner: str) -> list[torch.Tensor]:
        calls = records.calls('score')
        if len(calls) < self.num_levels:
            raise ValueError(f'FRS: {owner} score module {self.student_recorders["score"]!r} ran '
                             f'{len(calls)} time(s), {self.num_levels} levels expected')
        return calls[:self.num_levels]

    def _features(self, records: Records, owner: str) -> list[torch.Tensor]:
        if not self.tuple_features:
            return [records[f'feat{i}'] for i in range(self.num_levels)]
        feats = records['feats']
        if not isinstance(feats, (tuple, list)) or len(feats) < self.num_levels:
            raise ValueError(f'FRS: {owner} module {self.student_recorders["feats"]!r} must output a '
                             f'tuple of at least {self.num_levels} levels')
        return list(feats[:self.num_levels])

    def feature_pairs(self, student: Records, teacher: Records) -> list[FeaturePair]:
        """Per level, the student's FPN feature through its adapter against the teacher's (none when
        the feature term is off); a mismatch names ``student_channels`` / ``teacher_channels``, which
        build the adapters. The score maps are not paired: their class count is checked when the
        model is built, and their grids are those of the features."""
        if self.adapters is None:
            return []
        s_feats, t_feats = self._features(student, 'student'), self._features(teacher, 'teacher')
        pairs = []
        for i, (s, t, adapter) in enumerate(zip(s_feats, t_feats, self.adapters)):
            key = (f'distiller.student_channels / teacher_channels (level {i}: ConvAdapter '
                   f'{adapter.conv.in_channels} -> {adapter.conv.out_channels})')
            name = self.student_recorders['feats'] + f'[{i}]' if self.tuple_features else self.student_recorders[f'feat{i}']
            pairs.extend(FeaturePair.from_values(name, name, s, t, student_adapter=adapter,
                                                 student_adapter_key=key, where=f'distiller (FRS, level {i})'))
        return pairs

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_scores, t_scores = self._scores(student, 'student'), self._scores(teacher, 'teacher')
        masks = []
        for i, (s, t) in enumerate(zip(s_scores, t_scores)):
            if s.shape != t.shape:
                raise ValueError(f'FRS level {i}: student scores {tuple(s.shape)} and teacher scores '
                                 f'{tuple(t.shape)} differ (same anchors and classes are needed)')
            masks.append(richness_mask(t))
        losses = {}
        if self.feat_weight > 0:
            s_feats, t_feats = self._features(student, 'student'), self._features(teacher, 'teacher')
            total = 0.0
            for i, (s, t, m) in enumerate(zip(s_feats, t_feats, masks)):
                adapted = self.adapters[i](s)
                if adapted.shape != t.shape or t.shape[-2:] != m.shape[-2:]:
                    raise ValueError(f'FRS level {i}: adapted student feature {tuple(adapted.shape)}, '
                                     f'teacher feature {tuple(t.shape)} and score map {tuple(m.shape)} '
                                     f'do not match')
                total = total + frs_feature_loss(adapted, t, m)
            losses['frs.loss_feat'] = self.feat_weight * total
        if self.cls_weight > 0:
            total = sum(frs_cls_loss(s, t, m) for s, t, m in zip(s_scores, t_scores, masks))
            losses['frs.loss_cls'] = self.cls_weight * total
        return losses


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(FRS)
