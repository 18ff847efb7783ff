"""FGFI: distilling object detectors with fine-grained feature imitation (Wang et al., CVPR 2019).

Official code: twangnh/Distilling-Object-Detectors (``lib/model/rpn/anchor_target_layer.py`` for
the mask, ``trainval_net_sup.py`` for the loss, ``lib/model/faster_rcnn/vgg11.py`` for the adapter).

**Imitation mask.** For each GT box k, the IoU with every anchor of the map (A anchors per
location, border-crossing ones included) is compared with ``psi * max IoU(., k)``; a location whose
anchors exceed the threshold of some GT is imitated: ``I = 1[sum_k sum_a 1[IoU > psi * max_k] > 0]``,
``psi = 0.5`` (:func:`kdtoolbox.ops.imitation_masks.anchor_iou_masks`).

**Loss.** With ``f`` a 3x3 conv + ReLU adapter (near-zero init: truncated normal, std 1e-4) on the
student feature S and the teacher feature T, per level::

    L_l = sum_{n,c,h,w} I * (f(S) - T)^2 / (2 * sum_{n,h,w} I)       normalize='locations' (official)
    L_l = sum_{n,c,h,w} I * (f(S) - T)^2 / max(1, 2 * C * sum I)       normalize='elements' (DeFeat's re-implementation)

and ``L = loss_weight * reduce_l L_l`` with ``loss_weight = lambda = 0.01``. An empty mask gives 0
(the official code divides by zero there).

**FPN.** The paper distils one map (VGG conv5). For FPN students, as the DeFeat code re-implements
FGFI (``anchor_head.py::get_roi_mask``), ``fpn_assign=True`` assigns each GT to one level with the
RoI-scale rule ``floor(log2(sqrt((w+1)(h+1))/56 + 1e-6))`` and builds that level's mask from that
level's anchors only; ``fpn_assign=False`` uses every GT on every level. Levels are averaged
(``level_reduction='mean'``, as DeFeat) or summed.

**Warm-up.** The official code switches imitation off for the first 400 iterations. It is done
with ``DistillLossScheduleHook(warmup_iters=400)`` in the configs rather than inside the distiller:
a zero scale skips the teacher pass entirely (the warm-up costs what the student alone costs),
it is the same mechanism for every method, and it keeps the distiller free of training-state.

Anchors: the student's own anchor generator (``rpn_head`` for two-stage, ``bbox_head`` for
one-stage) unless ``anchor_generator=`` gives one (an mmdet ``AnchorGenerator`` config).

Loss: ``neck.loss_imitation``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from kdtoolbox.adapters import ConvAdapter
from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.imitation_masks import (anchor_iou_masks, build_anchor_generator, find_prior_generator,
                                           gt_bboxes_from_samples)

NORMALIZATIONS = ('locations', 'elements')
LEVEL_REDUCTIONS = ('mean', 'sum')


def imitation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                   masks: Sequence[torch.Tensor], normalize: str = 'locations',
                   level_reduction: str = 'mean') -> torch.Tensor:
    """FGFI's masked L2 over levels, unweighted (see the module docstring).

    Args:
        student: adapted student features per level ``[N, C, H, W]``.
        teacher: teacher features per level, same shapes (detached here).
        masks: imitation masks per level ``[N, H, W]`` (0/1).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f'FGFI: normalize must be one of {NORMALIZATIONS}, got {normalize!r}')
    if level_reduction not in LEVEL_REDUCTIONS:
        raise ValueError(f'FGFI: level_reduction must be one of {LEVEL_REDUCTIONS}, got {level_reduction!r}')
    total = student[0].new_zeros(())
    for s, t, m in zip(student, teacher, masks):
        if s.shape != t.shape:
            raise ValueError(f'FGFI: student {tuple(s.shape)} and teacher {tuple(t.shape)} features differ')
        m = m.to(s.dtype).unsqueeze(1)
        sq = (s - t.detach()).pow(2) * m
        count = m.sum() * (s.shape[1] if normalize == 'elements' else 1)
        total = total + sq.sum() / torch.clamp(2 * count, min=1.0)
    return total / max(len(masks), 1) if level_reduction == 'mean' else total


class FGFI(BaseDistiller):
    """Fine-grained feature imitation near anchor-matched object locations.

    Args:
        student_channels, teacher_channels: channels of the distilled levels (int or list).
        num_levels: levels distilled (the first ``num_levels`` of the recorded tuple; level l uses
            the anchor generator's level l).
        student_module, teacher_module: the recorded modules (tuple-valued: ``neck``).
        psi: the relative IoU threshold (0.5).
        anchor_generator: an mmdet anchor generator config; None: the student's own.
        fpn_assign: one FPN level per GT (DeFeat's FPN variant) or every GT on every level.
        finest_scale: the RoI-scale rule's canonical size (56).
        normalize: 'locations' (official: 2 x number of imitated locations) or 'elements'
            (DeFeat's re-implementation: 2 x locations x channels).
        level_reduction: 'mean' (DeFeat's FPN variant) or 'sum' over levels.
        loss_weight: lambda (0.01 with 'locations').
        adapter_kernel_size, adapter_relu, adapter_init, adapter_std: the adapter (3x3 conv + ReLU,
            near-zero init, std 1e-4).
    """

    def __init__(self, student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, num_levels: int = 5,
                 student_module: str = 'neck', teacher_module: str = 'neck', psi: float = 0.5,
                 anchor_generator: Optional[dict] = None, fpn_assign: bool = True,
                 finest_scale: float = 56.0, normalize: str = 'locations', level_reduction: str = 'mean',
                 loss_weight: float = 0.01, adapter_kernel_size: int = 3, adapter_relu: bool = True,
                 adapter_init: str = 'near_zero', adapter_std: float = 1e-4, init_cfg=None):
        super().__init__(student_recorders={'features': student_module},
                         teacher_recorders={'features': teacher_module}, init_cfg=init_cfg)
        s_ch = [student_channels] * num_levels if isinstance(student_channels, int) else list(student_channels)
        t_ch = [teacher_channels] * num_levels if isinstance(teacher_channels, int) else list(teacher_channels)
        if len(s_ch) != num_levels or len(t_ch) != num_levels:
            raise ValueError(f'FGFI: {num_levels} levels but {len(s_ch)} student / {len(t_ch)} '
                             f'teacher channel counts')
        if normalize not in NORMALIZATIONS:
            raise ValueError(f'FGFI: normalize must be one of {NORMALIZATIONS}, got {normalize!r}')
        if level_reduction not in LEVEL_REDUCTIONS:
            raise ValueError(f'FGFI: level_reduction must be one of {LEVEL_REDUCTIONS}, got {level_reduction!r}')
        if not 0.0 <= psi <= 1.0:
            raise ValueError(f'FGFI: psi must be in [0, 1], got {psi}')
        self.num_levels = num_levels
        self.psi = float(psi)
        # built now so that a wrong config fails at build time; not a submodule (no state)
        self._anchor_generator = build_anchor_generator(anchor_generator) if anchor_generator is not None else None
        self.fpn_assign = fpn_assign
        self.finest_scale = float(finest_scale)
        self.normalize = normalize
        self.level_reduction = level_reduction
        self.loss_weight = float(loss_weight)
        self.adapters = nn.ModuleList(
            ConvAdapter(s, t, kernel_size=adapter_kernel_size, relu=adapter_relu, init=adapter_init,
                        std=adapter_std)
            for s, t in zip(s_ch, t_ch))

    def anchor_generator(self, context: DistillContext):
        gen = self._anchor_generator
        if gen is None:
            gen = find_prior_generator(context.student)
        if not hasattr(gen, 'num_base_anchors'):
            raise TypeError(f'FGFI needs anchors; {type(gen).__name__} makes none (an anchor-free '
                            f'student): give anchor_generator=dict(type="AnchorGenerator", ...)')
        return gen

    def imitation_masks(self, features: Sequence[torch.Tensor], context: DistillContext) -> list[torch.Tensor]:
        """The per-level imitation masks ``[N, H_l, W_l]`` of this batch."""
        boxes = gt_bboxes_from_samples(context.data_samples)
        return anchor_iou_masks(boxes, [f.shape[-2:] for f in features], self.anchor_generator(context),
                                psi=self.psi, assign_levels=self.fpn_assign, finest_scale=self.finest_scale,
                                device=features[0].device)

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_levels, t_levels = student['features'], teacher['features']
        if len(s_levels) < self.num_levels or len(t_levels) < self.num_levels:
            raise ValueError(f'FGFI: expected {self.num_levels} levels, the student gave '
                             f'{len(s_levels)} and the teacher {len(t_levels)}')
        s_levels, t_levels = list(s_levels[:self.num_levels]), list(t_levels[:self.num_levels])
        masks = self.imitation_masks(s_levels, context)
        adapted = [adapter(s) for adapter, s in zip(self.adapters, s_levels)]
        loss = imitation_loss(adapted, t_levels, masks, self.normalize, self.level_reduction)
        return {'neck.loss_imitation': self.loss_weight * loss}

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """For ``tools/visualize.py``: ``fpn{l}/imitation_mask``, the anchor-IoU imitation mask
        ``[N, H_l, W_l]`` of level ``l`` (:meth:`imitation_masks`)."""
        levels = list(student['features'][:self.num_levels])
        return {f'fpn{level}/imitation_mask': mask for level, mask in enumerate(self.imitation_masks(levels, context))}


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(FGFI)
