"""FGD: Focal and Global Knowledge Distillation for Detectors (Yang et al., CVPR 2022).

Per FPN level, with the student feature ``S`` (after a 1x1 ``align`` conv when the channel counts
differ) and the teacher feature ``T``, both ``[N, C, H, W]``:

- attention with temperature ``temp``:
  ``A_s(F) = H * W * softmax_hw(mean_c |F| / temp)`` ``[N, H, W]`` and
  ``A_c(F) = C * softmax_c(mean_hw |F| / temp)`` ``[N, C]``;
- masks from the GT boxes (:func:`kdtoolbox.ops.box_mask.fgd_masks`): ``M_fg`` (box cells weighted
  ``1 / (h_cells * w_cells)``, the larger weight where boxes overlap) and ``M_bg`` (1 off the
  boxes, normalised to sum 1 per image), built once per batch for all levels;
- focal losses, both features weighted by the **teacher's** attention:
  ``L_fg = sum(M_fg * A_s(T) * A_c(T) * (S - T)^2) / N``, ``L_bg`` the same with ``M_bg``;
- attention loss: ``L_at = sum|A_c(S) - A_c(T)| / N + sum|A_s(S) - A_s(T)| / N``;
- global loss through two GcBlocks, one on each side (separate parameters, both trained):
  ``R(F) = F + transform(sum_hw softmax_hw(conv_mask(F)) * F)`` with
  ``transform = 1x1 conv (C -> C/2), LayerNorm([C/2, 1, 1]), ReLU, 1x1 conv (C/2 -> C)`` (last
  conv zero-initialised, ``conv_mask`` kaiming fan_in); ``L_global = sum(R_s(S) - R_t(T))^2 / N``
  (at initialisation exactly the summed squared error of the features over N).

The distiller returns ``fpn{i}.loss_fg = alpha_fgd * L_fg``, ``fpn{i}.loss_bg = beta_fgd * L_bg``,
``fpn{i}.loss_at = gamma_fgd * L_at`` and ``fpn{i}.loss_global = lambda_fgd * L_global``.

Hyper-parameters of the official configs (``yzd-v/FGD: configs/distillers/fgd``), as ``preset``:

============  ========================================  ======  ====  ======  ======  ======  ======
preset        pairs                                     levels  temp  alpha   beta    gamma   lambda
============  ========================================  ======  ====  ======  ======  ======  ======
one_stage     RetinaNet (X101/R101 -> R50/R101), GFL,   5       0.5   1e-3    5e-4    5e-4    5e-6
              SOLO
two_stage     Faster / Mask R-CNN (R101 or Cascade      4       0.5   5e-5    2.5e-5  5e-5    5e-7
              Mask X101-DCN -> R50/R101)
fcos          FCOS R101 -> R50                          5       0.8   1.6e-3  8e-4    8e-4    8e-6
reppoints     RepPoints (R101/X101-DCN -> R50/R101)     5       0.5   1.6e-3  8e-4    8e-4    8e-6
============  ========================================  ======  ====  ======  ======  ======  ======

(The official module's own docstring defaults have ``gamma = 1e-3``; every official config uses
the values above, which are what this module defaults to.) Two-stage FPNs (``start_level=0``,
``add_extra_convs=False``) have ``fpn_convs.0-3`` only: P6 is a max-pool without a conv.

Student inheritance (the student's neck and head initialised from the teacher's checkpoint, the
official ``init_student=True`` for every pair whose neck and head match the teacher's) is done in
the config with mmengine's own mechanism, so it survives ``init_weights()``::

    student.neck.init_cfg = dict(type='Pretrained', checkpoint=TEACHER_CKPT, prefix='neck.')
    student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=TEACHER_CKPT, prefix='bbox_head.')

Deviations from the official code: the boxes map to the grid through ``batch_input_shape``
(``legacy_box_scaling=True`` reproduces the official ``img_shape`` scaling, bit for bit); box
extents that fall outside the grid are clipped (the official slicing wraps negative indices
around); ``L_fg``/``L_bg`` are computed as ``sum(M * A_s * A_c * (S - T)^2)`` rather than as the
squared difference of ``sqrt``-weighted features, and ``L_global`` as ``sum((S - T + c_s - c_t)^2)``
with ``c`` the GcBlocks' ``[N, C, 1, 1]`` context terms (equal up to float rounding, fewer
full-size temporaries); the four terms are returned as separate weighted losses instead of one
sum; the masks are built once per batch for all levels instead of once per level.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import constant_init, kaiming_init

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.attention import channel_attention, spatial_attention
from kdtoolbox.ops.box_mask import fgd_masks

#: the official configs' hyper-parameters (see the module docstring)
PRESETS = {
    'one_stage': dict(num_levels=5, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6),
    'two_stage': dict(num_levels=4, temp=0.5, alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5, lambda_fgd=5e-7),
    'fcos': dict(num_levels=5, temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4, lambda_fgd=8e-6),
    'reppoints': dict(num_levels=5, temp=0.5, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4, lambda_fgd=8e-6),
}
PRESETS['retinanet'] = PRESETS['gfl'] = PRESETS['one_stage']
PRESETS['faster_rcnn'] = PRESETS['mask_rcnn'] = PRESETS['two_stage']


def fgd_attention(feat: torch.Tensor, temp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial ``[N, H, W]`` and channel ``[N, C]`` attention of ``feat [N, C, H, W]``."""
    return spatial_attention(feat, temp), channel_attention(feat, temp)


class GlobalContextBlock(nn.Module):
    """GcBlock of FGD's global loss: ``F + transform(attention-pooled context of F)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, kernel_size=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        kaiming_init(self.conv_mask, mode='fan_in')
        constant_init(self.channel_add[-1], val=0)  # R(F) = F at initialisation

    def context_term(self, feat: torch.Tensor) -> torch.Tensor:
        """``transform(sum_hw softmax_hw(conv_mask(F)) * F)``: ``[N, C, 1, 1]``."""
        n, c, h, w = feat.shape
        weights = F.softmax(self.conv_mask(feat).reshape(n, 1, h * w), dim=2)  # [N, 1, HW]
        context = torch.bmm(feat.reshape(n, c, h * w), weights.transpose(1, 2))  # [N, C, 1]
        return self.channel_add(context.reshape(n, c, 1, 1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return feat + self.context_term(feat)


class FGDLoss(nn.Module):
    """FGD's loss on one feature level (the official ``FeatureLoss``).

    Args:
        student_channels, teacher_channels: channels of the two features; a 1x1 ``align`` conv
            maps the student's to the teacher's only when they differ.
        temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: temperature and the weights of
            ``L_fg``, ``L_bg``, ``L_at`` and ``L_global`` (defaults: the one-stage configs).

    ``forward(preds_S, preds_T, mask_fg, mask_bg)`` takes the features ``[N, C, H, W]`` and the
    masks ``[N, H, W]`` and returns ``dict(loss_fg, loss_bg, loss_at, loss_global)``, weighted.
    """

    def __init__(self, student_channels: int, teacher_channels: int, temp: float = 0.5,
                 alpha_fgd: float = 1e-3, beta_fgd: float = 5e-4, gamma_fgd: float = 5e-4,
                 lambda_fgd: float = 5e-6):
        super().__init__()
        self.temp = temp
        self.alpha_fgd, self.beta_fgd = alpha_fgd, beta_fgd
        self.gamma_fgd, self.lambda_fgd = gamma_fgd, lambda_fgd
        self.align = (nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
                      if student_channels != teacher_channels else None)
        self.global_s = GlobalContextBlock(teacher_channels)  # student side
        self.global_t = GlobalContextBlock(teacher_channels)  # teacher side (trained, not the teacher)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor, mask_fg: torch.Tensor,
                mask_bg: torch.Tensor) -> dict[str, torch.Tensor]:
        if preds_S.shape[-2:] != preds_T.shape[-2:]:
            raise ValueError(f'FGDLoss: student feature {tuple(preds_S.shape)} and teacher feature '
                             f'{tuple(preds_T.shape)} differ in size')
        preds_T = preds_T.detach()
        if self.align is not None:
            preds_S = self.align(preds_S)
        n = preds_S.shape[0]
        spatial_t, channel_t = fgd_attention(preds_T, self.temp)
        spatial_s, channel_s = fgd_attention(preds_S, self.temp)
        diff = preds_S - preds_T
        # sum_c A_c(T) (S - T)^2, then the spatial weights: [N, H, W]
        per_cell = torch.einsum('nchw,nc->nhw', diff * diff, channel_t) * spatial_t
        loss_fg = (per_cell * mask_fg).sum() / n
        loss_bg = (per_cell * mask_bg).sum() / n
        loss_at = ((channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()) / n
        # R_s(S) - R_t(T) = (S - T) + (context_s - context_t): one full-size tensor less
        delta = self.global_s.context_term(preds_S) - self.global_t.context_term(preds_T)
        loss_global = ((diff + delta) ** 2).sum() / n
        return dict(loss_fg=self.alpha_fgd * loss_fg, loss_bg=self.beta_fgd * loss_bg,
                    loss_at=self.gamma_fgd * loss_at, loss_global=self.lambda_fgd * loss_global)


def _per_level(value: Union[int, Sequence[int]], num_levels: int, what: str) -> list[int]:
    values = [value] * num_levels if isinstance(value, int) else list(value)
    if len(values) != num_levels:
        raise ValueError(f'FGD: {num_levels} levels but {len(values)} {what}')
    return values


def gt_boxes(data_samples: Sequence[Any]) -> list[torch.Tensor]:
    """Each data sample's ``gt_instances.bboxes`` as an ``[M, 4]`` tensor (mmdet box types too)."""
    boxes = []
    for i, sample in enumerate(data_samples or []):
        gt = getattr(sample, 'gt_instances', None)
        if gt is None or 'bboxes' not in gt:
            raise KeyError(f'FGD: data sample {i} has no gt_instances.bboxes')
        b = gt.bboxes
        boxes.append(getattr(b, 'tensor', b).reshape(-1, 4))
    return boxes


class FGD(BaseDistiller):
    """Focal and global distillation on the FPN outputs (one :class:`FGDLoss` per level).

    Args:
        preset: hyper-parameters of the official configs: 'one_stage' (also 'retinanet', 'gfl'),
            'two_stage' (also 'faster_rcnn', 'mask_rcnn'), 'fcos', 'reppoints' (see the module
            docstring); an explicit argument below overrides the preset.
        student_channels, teacher_channels: FPN channels (an int for all levels, or a list).
        num_levels: levels distilled (preset: 5 one-stage, 4 two-stage).
        student_modules, teacher_modules: the recorded module of each level; default
            ``module_template.format(i)`` for ``i < num_levels``.
        module_template: default ``'neck.fpn_convs.{}.conv'`` (FPN output convs, P3-P7 of a
            one-stage FPN, P2-P5 of a two-stage one).
        temp, alpha_fgd, beta_fgd, gamma_fgd, lambda_fgd: see :class:`FGDLoss`.
        legacy_box_scaling: map boxes through each image's ``img_shape`` as the official code does
            (slightly stretched boxes when the batch is padded) instead of ``batch_input_shape``.
        mask_method: 'auto', 'scatter' or 'dense' (see :mod:`kdtoolbox.ops.box_mask`).
    """

    def __init__(self, preset: Optional[str] = 'one_stage', student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, num_levels: Optional[int] = None,
                 student_modules: Optional[Sequence[str]] = None, teacher_modules: Optional[Sequence[str]] = None,
                 module_template: str = 'neck.fpn_convs.{}.conv', temp: Optional[float] = None,
                 alpha_fgd: Optional[float] = None, beta_fgd: Optional[float] = None,
                 gamma_fgd: Optional[float] = None, lambda_fgd: Optional[float] = None,
                 legacy_box_scaling: bool = False, mask_method: str = 'auto', init_cfg=None):
        if preset is not None and preset not in PRESETS:
            raise KeyError(f'FGD: unknown preset {preset!r} (known: {", ".join(sorted(PRESETS))})')
        hp = dict(PRESETS[preset or 'one_stage'])
        given = dict(num_levels=num_levels, temp=temp, alpha_fgd=alpha_fgd, beta_fgd=beta_fgd,
                     gamma_fgd=gamma_fgd, lambda_fgd=lambda_fgd)
        hp.update({k: v for k, v in given.items() if v is not None})
        if student_modules is not None:
            hp['num_levels'] = len(student_modules)
        levels = int(hp.pop('num_levels'))
        s_paths = list(student_modules) if student_modules is not None else \
            [module_template.format(i) for i in range(levels)]
        t_paths = list(teacher_modules) if teacher_modules is not None else \
            [module_template.format(i) for i in range(levels)]
        if len(s_paths) != levels or len(t_paths) != levels:
            raise ValueError(f'FGD: {len(s_paths)} student and {len(t_paths)} teacher modules for '
                             f'{levels} levels')
        super().__init__(student_recorders={f'fpn{i}': p for i, p in enumerate(s_paths)},
                         teacher_recorders={f'fpn{i}': p for i, p in enumerate(t_paths)},
                         init_cfg=init_cfg)
        s_ch = _per_level(student_channels, levels, 'student channel counts')
        t_ch = _per_level(teacher_channels, levels, 'teacher channel counts')
        self.num_levels = levels
        self.hyper_parameters = hp
        self.legacy_box_scaling = legacy_box_scaling
        self.mask_method = mask_method
        self.losses = nn.ModuleList(FGDLoss(s, t, **hp) for s, t in zip(s_ch, t_ch))

    def masks(self, context: DistillContext, feat_sizes: Sequence[tuple[int, int]],
              device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Foreground and background masks of every level, built once per batch (cached in
        ``context.extra``)."""
        key = ('fgd_masks', self.legacy_box_scaling, tuple(feat_sizes))
        if key not in context.extra:
            samples = context.data_samples
            if not samples:
                raise ValueError('FGD needs the data samples (gt_instances.bboxes) in the context')
            img_shapes = [s.metainfo['img_shape'] for s in samples] if self.legacy_box_scaling else None
            if not self.legacy_box_scaling and context.batch_input_shape is None:
                raise ValueError('FGD: the context has no batch_input_shape to map boxes to the grid')
            context.extra[key] = fgd_masks(gt_boxes(samples), feat_sizes,
                                           batch_input_shape=context.batch_input_shape,
                                           img_shapes=img_shapes, legacy_box_scaling=self.legacy_box_scaling,
                                           method=self.mask_method, device=device)
        return context.extra[key]

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_feats = [student[f'fpn{i}'] for i in range(self.num_levels)]
        t_feats = [teacher[f'fpn{i}'] for i in range(self.num_levels)]
        sizes = [tuple(t.shape[-2:]) for t in t_feats]
        fg, bg = self.masks(context, sizes, t_feats[0].device)
        losses = {}
        for i, loss in enumerate(self.losses):
            for name, value in loss(s_feats[i], t_feats[i], fg[i], bg[i]).items():
                losses[f'fpn{i}.{name}'] = value
        return losses

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """For ``tools/visualize.py``, per level ``i``: ``fpn{i}/fg_mask`` and ``fpn{i}/bg_mask``
        (the masks the loss uses, :meth:`masks`) and ``fpn{i}/teacher_attention`` (the teacher's
        spatial attention ``A_s(T)``), each ``[N, H_i, W_i]`` over the padded batch input."""
        t_feats = [teacher[f'fpn{i}'] for i in range(self.num_levels)]
        fg, bg = self.masks(context, [tuple(t.shape[-2:]) for t in t_feats], t_feats[0].device)
        maps = {}
        for i, t in enumerate(t_feats):
            maps[f'fpn{i}/fg_mask'] = fg[i]
            maps[f'fpn{i}/bg_mask'] = bg[i]
            maps[f'fpn{i}/teacher_attention'] = spatial_attention(t, self.losses[i].temp)
        return maps


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(FGD)
    registry.loss(FGDLoss)
