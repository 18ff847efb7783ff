"""Mimic: RoI feature mimicking (Li, Jin, Yan, "Mimicking Very Efficient Network for Object
Detection", CVPR 2017), on FPN detectors as ModelTC/EOD's ``Sample_Feature_Mimicker`` does.

Full-map feature imitation is dominated by background; Mimic imitates the teacher's features only
inside object proposals. For proposal i, ``v_i`` is the student's feature cropped at the proposal,
``u_i`` the teacher's at the same proposal, ``r`` an adapter (a 1x1 conv from the student's to the
teacher's channels) and ``m_i`` the dimensionality of the region feature::

    L = loss_weight * 1/(2N) * sum_i (1/m_i) * || u_i - r(v_i) ||^2

N is the number of RoIs of the whole batch. The loss is returned as ``roi.loss_mimic``
(``distill.roi.loss_mimic`` in the log), with ``roi.num_rois`` (N, logged, not a loss).

Cropping (:class:`kdtoolbox.ops.roi_features.RoIFeatureExtractor`): each RoI goes to one FPN level
by mmdet's ``SingleRoIExtractor.map_roi_levels`` (``finest_scale=56``: < 112 px -> P2,
[112, 224) -> P3, [224, 448) -> P4, larger -> P5) and both feature maps are cropped by mmcv's
RoIAlign through the same ``SingleRoIExtractor`` configuration (default: Faster R-CNN's, 7x7,
``sampling_ratio=0``, strides 4-32), so the student, the teacher and the student's own RoI head
agree on levels and sampling. Every crop is ``[C, 7, 7]``, so ``m_i = C_t * 7 * 7`` for all i and
the loss is half the mean squared error over all RoI elements (EOD: ``l2_loss(feat_norm=False,
batch_mean=False) / 2``). The adapter is applied to the crops (one adapter shared by all levels,
as the RoI head is); the RoIs are detached and the teacher's crops computed under ``no_grad``.

Where the proposals come from (``proposals=``):

* ``'student'`` (default; the paper: the student's own RPN proposals). mmdet's
  ``TwoStageDetector.loss`` gets them from ``rpn_head.loss_and_predict`` and hands them to
  ``roi_head.loss``: both are plain method calls, so no forward hook sees the proposal list, and
  the one hooked module that receives boxes, ``roi_head.bbox_roi_extractor`` (called through
  ``__call__`` in ``_bbox_forward``), receives the RoI head's *sampled* RoIs (512 per image,
  a quarter positives, GT boxes added), not the RPN's proposals. ``rpn_head`` itself is called
  through ``__call__`` (``outs = self(x)`` in ``loss_and_predict``), so the distiller records its
  output (the per-level objectness and deltas) and decodes it again with the student's own
  ``rpn_head.predict_by_feat`` and its ``train_cfg.rpn_proposal`` (the config ``loss()`` uses),
  under ``no_grad``: the same deterministic top-k/decode/NMS, so the same proposals the RoI head
  received (up to 1000 per image by default), at the price of running the proposal NMS twice.
  (Under AMP the recorded outputs are cast to fp32 before decoding, so the proposals may differ
  marginally from those decoded in fp16.)
* ``'teacher'`` (EOD's default): the teacher's RPN proposals. The teacher's ``rpn_head`` output
  is recorded in the teacher pass (``rpn_head.predict`` calls ``self(x)`` in ``tensor`` and
  ``loss`` modes alike; the teacher then stops, its RoI head never runs) and decoded with the
  teacher's ``rpn_head.predict_by_feat`` and its test-time ``test_cfg.rpn`` (the teacher is in
  eval mode), under ``no_grad``.
* ``'gt'``: the ground-truth boxes (for one-stage students, which have no RPN; set
  ``roi_extractor.featmap_strides`` to the levels the student's neck has, e.g. 8-64 for P3-P6).

``proposal_cfg`` replaces the RPN post-processing config in both RPN modes (e.g. a smaller
``max_per_img``). Boxes are clipped to their image (``img_shape``); boxes that are degenerate
(width or height <= ``min_roi_size`` after clipping) or entirely outside are dropped, and at most
``max_rois_per_img`` are kept per image (RPN proposals are sorted by score). A batch with no RoI
at all gives a zero loss that still depends on the student's features and the adapter.

Config::

    distiller=dict(
        type='Mimic',
        proposals='student',             # 'student' | 'teacher' | 'gt'
        student_channels=256, teacher_channels=256,
        loss_weight=1.0,                 # the paper: L = L_m + L_gt
        roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                           featmap_strides=[4, 8, 16, 32], finest_scale=56),
        # adapter=dict(type='ConvAdapter', in_channels=..., out_channels=..., kernel_size=1),
        # proposal_cfg=dict(nms_pre=2000, max_per_img=300, nms=dict(type='nms', iou_threshold=0.7),
        #                   min_bbox_size=0),
        # max_rois_per_img=None, min_roi_size=0.0,
        # student_module='neck', teacher_module='neck', rpn_module='rpn_head',
    )
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from mmengine.config import ConfigDict
from mmdet.structures.bbox import get_box_tensor

from kdtoolbox.adapters import ConvAdapter, apply_adapter
from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.engine.distiller import build_adapter
from kdtoolbox.ops.roi_features import DEFAULT_FEATMAP_STRIDES, RoIFeatureExtractor, boxes_to_rois

PROPOSAL_SOURCES = ('student', 'teacher', 'gt')


class Mimic(BaseDistiller):
    """RoI feature mimic on the RoIs of the student's RPN, the teacher's RPN or the GT boxes.

    Args:
        proposals: 'student' (default, the paper), 'teacher' (EOD's default) or 'gt'; see the
            module docstring for how each is obtained.
        student_channels, teacher_channels: channels of the two necks' levels (default 256).
        adapter: an adapter config (``ADAPTERS``, or a list of them, chained) applied to the
            student's ``[R, C_s, h, w]`` crops; None: ``ConvAdapter`` 1x1 ``C_s -> C_t``, PyTorch's
            default init.
        roi_extractor: ``roi_layer``, ``featmap_strides``, ``finest_scale`` of
            :class:`RoIFeatureExtractor` (default: Faster R-CNN FPN's RoIAlign 7x7 on P2-P5).
        loss_weight: multiplies the loss (default 1.0: the paper's ``L = L_m + L_gt``; with the
            per-RoI normalisation the loss is O(feature variance), on the scale of the task losses).
        proposal_cfg: RPN post-processing for both RPN modes (None: the student's
            ``train_cfg.rpn_proposal``, else ``test_cfg.rpn``; the teacher's ``test_cfg.rpn``).
        max_rois_per_img: keep at most this many RoIs per image (None: all).
        min_roi_size: drop RoIs whose clipped width or height is not above this (pixels).
        student_module, teacher_module: the recorded multi-level features (default ``neck``).
        rpn_module: the RPN head of the model whose proposals are used (default ``rpn_head``).
    """

    def __init__(self, proposals: str = 'student', student_channels: int = 256, teacher_channels: int = 256,
                 adapter: Optional[Any] = None, roi_extractor: Optional[dict] = None, loss_weight: float = 1.0,
                 proposal_cfg: Optional[dict] = None, max_rois_per_img: Optional[int] = None,
                 min_roi_size: float = 0.0, student_module: str = 'neck', teacher_module: str = 'neck',
                 rpn_module: str = 'rpn_head', init_cfg=None):
        if proposals not in PROPOSAL_SOURCES:
            raise ValueError(f'Mimic: proposals must be one of {PROPOSAL_SOURCES}, got {proposals!r}')
        student_recorders = {'feats': student_module}
        teacher_recorders = {'feats': teacher_module}
        if proposals == 'student':
            student_recorders['rpn'] = rpn_module
        elif proposals == 'teacher':
            teacher_recorders['rpn'] = rpn_module
        super().__init__(student_recorders=student_recorders, teacher_recorders=teacher_recorders,
                         init_cfg=init_cfg)
        self.proposals = proposals
        self.rpn_module = rpn_module
        roi_extractor = dict(roi_extractor or {})
        unknown = set(roi_extractor) - {'roi_layer', 'featmap_strides', 'finest_scale'}
        if unknown:
            raise KeyError(f'Mimic: roi_extractor has unknown keys {sorted(unknown)} '
                           f'(allowed: roi_layer, featmap_strides, finest_scale)')
        self.roi_extractor = RoIFeatureExtractor(
            roi_layer=roi_extractor.get('roi_layer'),
            featmap_strides=roi_extractor.get('featmap_strides', DEFAULT_FEATMAP_STRIDES),
            finest_scale=roi_extractor.get('finest_scale', 56))
        if adapter is None:
            self.adapter = ConvAdapter(student_channels, teacher_channels, kernel_size=1)
        else:
            self.adapter = build_adapter(adapter, where='distiller.adapter')
        self.student_channels = student_channels
        self.teacher_channels = teacher_channels
        self.loss_weight = float(loss_weight)
        self.proposal_cfg = ConfigDict(proposal_cfg) if proposal_cfg is not None else None
        if max_rois_per_img is not None and max_rois_per_img < 0:
            raise ValueError(f'Mimic: max_rois_per_img must be >= 0 or None, got {max_rois_per_img}')
        self.max_rois_per_img = max_rois_per_img
        self.min_roi_size = float(min_roi_size)

    # --- proposals ---------------------------------------------------------------------------
    def _rpn_proposals(self, records: Records, model: Any, owner: str, metas: list) -> list[torch.Tensor]:
        if model is None:
            raise ValueError(f"Mimic(proposals={self.proposals!r}): the context carries no {owner} model "
                             f"(DistillationModel sets context.{owner})")
        outs = records['rpn']
        if not isinstance(outs, (tuple, list)) or len(outs) < 2:
            raise ValueError(f'Mimic: the {owner} {self.rpn_module!r} output should be (cls_scores, bbox_preds), '
                             f'got {type(outs).__name__}')
        cls_scores, bbox_preds = outs[0], outs[1]
        rpn_head = model.get_submodule(self.rpn_module)
        cfg = self.proposal_cfg
        if cfg is None and owner == 'student':
            # what TwoStageDetector.loss passes to rpn_head.loss_and_predict
            train_cfg = getattr(model, 'train_cfg', None)
            test_rpn = getattr(getattr(model, 'test_cfg', None), 'rpn', None)
            cfg = train_cfg.get('rpn_proposal', test_rpn) if train_cfg is not None else test_rpn
        # cfg None (the teacher): rpn_head.test_cfg, i.e. the teacher's test_cfg.rpn
        with torch.no_grad():
            results = rpn_head.predict_by_feat([c.detach() for c in cls_scores], [b.detach() for b in bbox_preds],
                                               batch_img_metas=metas, cfg=cfg, rescale=False)
        return [get_box_tensor(r.bboxes) for r in results]

    def proposal_boxes(self, student: Records, teacher: Records, context: DistillContext) -> list[torch.Tensor]:
        """The raw per-image boxes (xyxy pixels) of the configured source, before clipping."""
        samples = context.data_samples
        if not samples:
            raise ValueError('Mimic: the context has no data samples (needed for image shapes and boxes)')
        if self.proposals == 'gt':
            return [get_box_tensor(s.gt_instances.bboxes) for s in samples]
        metas = [s.metainfo for s in samples]
        if self.proposals == 'student':
            return self._rpn_proposals(student, context.student, 'student', metas)
        return self._rpn_proposals(teacher, context.teacher, 'teacher', metas)

    def rois(self, student: Records, teacher: Records, context: DistillContext) -> torch.Tensor:
        """``[R, 5]`` detached RoIs (batch index, x1, y1, x2, y2): clipped, filtered, capped."""
        boxes = self.proposal_boxes(student, teacher, context)
        shapes = [s.metainfo.get('img_shape') for s in context.data_samples]
        return boxes_to_rois(boxes, shapes, min_size=self.min_roi_size, max_per_img=self.max_rois_per_img)

    # --- loss -----------------------------------------------------------------------------------
    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_feats, t_feats = student['feats'], teacher['feats']
        n_levels = self.roi_extractor.num_levels
        for owner, feats in (('student', s_feats), ('teacher', t_feats)):
            if not isinstance(feats, (tuple, list)) or len(feats) < n_levels:
                got = len(feats) if isinstance(feats, (tuple, list)) else type(feats).__name__
                raise ValueError(f'Mimic: roi_extractor.featmap_strides has {n_levels} levels '
                                 f'{self.roi_extractor.featmap_strides}; the {owner} features give {got}')
        rois = self.rois(student, teacher, context).to(s_feats[0].device)
        s_roi, t_roi = self.roi_extractor.extract_pair(s_feats, t_feats, rois)
        num = rois.shape[0]
        if num == 0:
            # nothing to mimic: a zero that still depends on the student's levels and the adapter
            loss = s_roi.sum() * 0.0 + sum(p.sum() for p in self.adapter.parameters()) * 0.0
        else:
            adapted = apply_adapter(self.adapter, s_roi, t_roi)
            if adapted.shape != t_roi.shape:
                raise ValueError(f'Mimic: adapted student RoI features {tuple(adapted.shape)} and teacher RoI '
                                 f'features {tuple(t_roi.shape)} differ (student_channels / teacher_channels '
                                 f'or the adapter config do not match the models)')
            per_roi = (t_roi - adapted).pow(2).flatten(1).sum(dim=1) / t_roi[0].numel()  # ||u_i - r(v_i)||^2 / m_i
            loss = per_roi.sum() / (2.0 * num)
        return {'roi.loss_mimic': self.loss_weight * loss,
                'roi.num_rois': torch.tensor(float(num), device=loss.device)}


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(Mimic)
