"""DeFeat: distilling object detectors via decoupled features (Guo et al., CVPR 2021).

Official code: ggjy/DeFeat.pytorch (``mmdet/apis/train.py::batch_processor_kd``,
``mmdet/models/dense_heads/anchor_head.py::get_gt_mask``, ``configs/kd_faster_rcnn/``).

**Decoupled neck loss.** Each GT box is assigned to one FPN level by the RoI-scale rule
``floor(log2(sqrt((w+1)(h+1)) / 56 + 1e-6))`` and marks, on that level only, the cells
``[int(y1/s):int(y2/s), int(x1/s):int(x2/s)]`` (see :func:`kdtoolbox.ops.imitation_masks.gt_level_masks`).
With ``M_l`` that binary mask repeated over the C channels, ``phi_l`` a 3x3 conv adapter
(near-zero init: truncated normal, std 1e-4) and ``D_l = (phi_l(S_l) - T_l)^2``::

    L_fg = hint_neck_w      * 1/L sum_l  sum(D_l * M_l)       / max(1, 2 * sum(M_l))
    L_bg = hint_neck_back_w * 1/L sum_l  sum(D_l * (1 - M_l)) / max(1, 2 * sum(1 - M_l))

(sums over the batch, channels and locations: the normaliser counts mask *elements*, channels
included, times 2). Background is weighted *more* than foreground (12 vs 3).

**Decoupled RoI classification KL** (two-stage students, ``roi_cls=True``). The student's sampled
RoIs (recorded as the input of ``roi_head.bbox_roi_extractor``) are classified by the teacher: its
RoI extractor and bbox head run under ``no_grad`` on the teacher's recorded neck features; the
student's logits and the RoI labels are recorded at the input of ``roi_head.bbox_head.loss_cls``
(the same call that gives the student's task loss, so both nets classify the same RoIs). With
``KL_i = sum_c q_c (log q_c - log p_c)``, ``q = softmax(t / T)``, ``p = softmax(s / T)``::

    L_kl_fg = head_cls_w      * T^2 * sum_{i positive}   KL_i / #positive
    L_kl_bg = head_cls_back_w * T^2 * sum_{i background} KL_i / #background

(a term with no RoI is 0). The official default (``SampleTEA``) feeds the teacher's sampled RoIs to
the student's RoI head a second time; here the teacher classifies the student's samples (the
official ``SampleSTU`` option), which needs no second student pass and keeps the labels and
RoIs of the same sampling.

Defaults are the official configs' (``configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py``):
``hint_neck_w=3`` (fg), ``hint_neck_back_w=12`` (bg), ``head_cls_w=2``, ``head_cls_back_w=2``,
``head_cls_T=1``, 3x3 adapters with near-zero init, all neck levels (5: P2-P6 for Faster R-CNN,
P3-P7 for RetinaNet).

Losses: ``neck.loss_fg``, ``neck.loss_bg`` and, with ``roi_cls``, ``roi_cls.loss_kl_fg``,
``roi_cls.loss_kl_bg``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.adapters import ConvAdapter
from kdtoolbox.engine import BaseDistiller, DistillContext, Records, RecordError
from kdtoolbox.engine.checks import require_same_num_classes
from kdtoolbox.ops.imitation_masks import find_prior_generator, gt_bboxes_from_samples, gt_level_masks
from kdtoolbox.ops.roi_features import roi_head_predictions


def decoupled_feature_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                           masks: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """DeFeat's unweighted (fg, bg) neck losses averaged over levels.

    Args:
        student: adapted student features per level ``[N, C, H, W]``.
        teacher: teacher features per level, same shapes (detached here).
        masks: binary masks per level ``[N, H, W]``.
    """
    fg = student[0].new_zeros(())
    bg = student[0].new_zeros(())
    for s, t, m in zip(student, teacher, masks):
        if s.shape != t.shape:
            raise ValueError(f'DeFeat: student {tuple(s.shape)} and teacher {tuple(t.shape)} features differ')
        sq = (s - t.detach()).pow(2)
        m = m.to(sq.dtype).unsqueeze(1)
        channels = sq.shape[1]
        n_fg = m.sum() * channels
        n_bg = (1 - m).sum() * channels
        fg = fg + (sq * m).sum() / torch.clamp(2 * n_fg, min=1.0)
        bg = bg + (sq * (1 - m)).sum() / torch.clamp(2 * n_bg, min=1.0)
    num = max(len(masks), 1)
    return fg / num, bg / num


def masked_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * sum_{i in mask} KL(softmax(t_i/T) || softmax(s_i/T)) / #mask`` (0 for an empty mask)."""
    if not bool(mask.any()):
        return student_logits.sum() * 0.0  # keeps the graph (and DDP) happy
    log_p = F.log_softmax(student_logits[mask] / temperature, dim=1)
    q = F.softmax(teacher_logits[mask].detach() / temperature, dim=1)
    kl = F.kl_div(log_p, q, reduction='sum')
    return kl / mask.sum() * temperature ** 2


class DeFeat(BaseDistiller):
    """DeFeat's decoupled neck loss and (optionally) decoupled RoI classification KL.

    Args:
        student_channels, teacher_channels: neck channels (an int for all levels, or a list).
        num_levels: levels distilled (the first ``num_levels`` of the recorded tuple); GT boxes
            are assigned among these.
        student_module, teacher_module: the recorded modules (a tuple of levels; ``neck``).
        strides: per level (int or ``(w, h)``); None: the student's ``rpn_head`` /
            ``bbox_head`` prior generator strides.
        finest_scale: the RoI-scale rule's canonical size (56).
        assign_levels: one level per GT (DeFeat); False marks every level with every GT.
        hint_neck_w, hint_neck_back_w: fg / bg neck loss weights (3 / 12).
        adapter_kernel_size, adapter_init, adapter_std: the per-level adapter (3x3, 'near_zero',
            1e-4).
        roi_cls: add the decoupled RoI classification KL (two-stage students with a
            ``StandardRoIHead``-like ``roi_head``; the teacher must be one too, and
            ``teacher_module`` its ``neck``).
        head_cls_w, head_cls_back_w, head_cls_T: positive / background KL weights and temperature
            (2 / 2 / 1).
        roi_head: the attribute path of the RoI head in both models.
    """

    #: the RoI head's inputs are not recorded on a batch where no RoI was sampled (handled in forward)
    optional_records = ('student.rois', 'student.cls')


    def __init__(self, student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, num_levels: int = 5,
                 student_module: str = 'neck', teacher_module: str = 'neck',
                 strides: Optional[Sequence] = None, finest_scale: float = 56.0, assign_levels: bool = True,
                 hint_neck_w: float = 3.0, hint_neck_back_w: float = 12.0,
                 adapter_kernel_size: int = 3, adapter_init: str = 'near_zero', adapter_std: float = 1e-4,
                 roi_cls: bool = False, head_cls_w: float = 2.0, head_cls_back_w: float = 2.0,
                 head_cls_T: float = 1.0, roi_head: str = 'roi_head', init_cfg=None):
        student_recorders = {'features': student_module}
        if roi_cls:
            student_recorders['rois'] = dict(module=f'{roi_head}.bbox_roi_extractor', io='input')
            student_recorders['cls'] = dict(module=f'{roi_head}.bbox_head.loss_cls', io='input')
        super().__init__(student_recorders=student_recorders,
                         teacher_recorders={'features': teacher_module}, init_cfg=init_cfg)
        s_ch = [student_channels] * num_levels if isinstance(student_channels, int) else list(student_channels)
        t_ch = [teacher_channels] * num_levels if isinstance(teacher_channels, int) else list(teacher_channels)
        if len(s_ch) != num_levels or len(t_ch) != num_levels:
            raise ValueError(f'DeFeat: {num_levels} levels but {len(s_ch)} student / {len(t_ch)} '
                             f'teacher channel counts')
        if strides is not None and len(strides) < num_levels:
            raise ValueError(f'DeFeat: {num_levels} levels but {len(strides)} strides')
        if head_cls_T <= 0:
            raise ValueError(f'DeFeat: head_cls_T must be > 0, got {head_cls_T}')
        self.num_levels = num_levels
        self.strides = list(strides) if strides is not None else None
        self.finest_scale = float(finest_scale)
        self.assign_levels = assign_levels
        self.hint_neck_w = float(hint_neck_w)
        self.hint_neck_back_w = float(hint_neck_back_w)
        self.roi_cls = roi_cls
        self.head_cls_w = float(head_cls_w)
        self.head_cls_back_w = float(head_cls_back_w)
        self.head_cls_T = float(head_cls_T)
        self.roi_head = roi_head
        self.adapters = nn.ModuleList(
            ConvAdapter(s, t, kernel_size=adapter_kernel_size, init=adapter_init, std=adapter_std)
            for s, t in zip(s_ch, t_ch))

    def check_models(self, student, teacher) -> None:
        if self.roi_cls:  # the RoI KL compares the two classifiers' class distributions
            require_same_num_classes(student, teacher, 'DeFeat (roi_cls=True)', heads=('roi_head.bbox_head',))

    # ------------------------------------------------------------------ neck
    def _strides(self, context: DistillContext) -> list:
        if self.strides is not None:
            return self.strides
        strides = list(find_prior_generator(context.student).strides)
        if len(strides) < self.num_levels:
            raise ValueError(f'DeFeat: {self.num_levels} levels but the student prior generator has '
                             f'{len(strides)} strides; set strides=')
        return strides

    def neck_masks(self, features: Sequence[torch.Tensor], context: DistillContext) -> list[torch.Tensor]:
        """The per-level binary GT masks ``[N, H_l, W_l]`` of this batch."""
        boxes = gt_bboxes_from_samples(context.data_samples)
        return gt_level_masks(boxes, [f.shape[-2:] for f in features], self._strides(context),
                              finest_scale=self.finest_scale, assign_levels=self.assign_levels,
                              device=features[0].device)

    # ------------------------------------------------------------------ RoI KL
    @staticmethod
    def teacher_roi_logits(teacher: nn.Module, features: Sequence[torch.Tensor], rois: torch.Tensor,
                           roi_head: str = 'roi_head') -> torch.Tensor:
        """The teacher's classification logits on ``rois`` ``[R, 5]``, under ``no_grad``."""
        return roi_head_predictions(teacher, features, rois, roi_head)[0]

    def roi_losses(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        try:
            rois = student.get_call('rois', 0)[1]
            cls_inputs = student.get_call('cls', 0)
        except RecordError:
            # no RoI was classified in this step (the bbox head skips its loss on 0 RoIs)
            zero = student['features'][0].sum() * 0.0
            return {'roi_cls.loss_kl_fg': zero, 'roi_cls.loss_kl_bg': zero}
        s_logits, labels = cls_inputs[0], cls_inputs[1]
        if context.teacher is None:
            raise RuntimeError('DeFeat(roi_cls=True) needs context.teacher (DistillationModel sets it)')
        t_logits = self.teacher_roi_logits(context.teacher, teacher['features'], rois, self.roi_head)
        if s_logits.shape != t_logits.shape or s_logits.shape[0] != labels.shape[0]:
            raise ValueError(f'DeFeat: student logits {tuple(s_logits.shape)}, teacher logits '
                             f'{tuple(t_logits.shape)} and {labels.shape[0]} labels do not match')
        background = s_logits.shape[1] - 1  # softmax heads: classes 0..K-1, background K
        fg = (labels >= 0) & (labels < background)
        bg = labels == background
        t = self.head_cls_T
        return {'roi_cls.loss_kl_fg': self.head_cls_w * masked_kl(s_logits, t_logits, fg, t),
                'roi_cls.loss_kl_bg': self.head_cls_back_w * masked_kl(s_logits, t_logits, bg, t)}

    # ------------------------------------------------------------------ forward
    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_levels, t_levels = student['features'], teacher['features']
        if len(s_levels) < self.num_levels or len(t_levels) < self.num_levels:
            raise ValueError(f'DeFeat: expected {self.num_levels} levels, the student gave '
                             f'{len(s_levels)} and the teacher {len(t_levels)}')
        s_levels, t_levels = list(s_levels[:self.num_levels]), list(t_levels[:self.num_levels])
        masks = self.neck_masks(s_levels, context)
        adapted = [adapter(s) for adapter, s in zip(self.adapters, s_levels)]
        fg, bg = decoupled_feature_loss(adapted, t_levels, masks)
        losses = {'neck.loss_fg': self.hint_neck_w * fg, 'neck.loss_bg': self.hint_neck_back_w * bg}
        if self.roi_cls:
            losses.update(self.roi_losses(student, teacher, context))
        return losses

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """For ``tools/visualize.py``: ``fpn{l}/gt_mask``, the binary foreground mask
        ``[N, H_l, W_l]`` of level ``l`` (:meth:`neck_masks`; the background is its complement)."""
        levels = list(student['features'][:self.num_levels])
        return {f'fpn{level}/gt_mask': mask for level, mask in enumerate(self.neck_masks(levels, context))}


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(DeFeat)
