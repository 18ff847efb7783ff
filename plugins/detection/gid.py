"""GID: General Instance Distillation for object detection (Dai et al., CVPR 2021).

Reference code: the authors' Detectron2 re-implementation ``daixinghome/Distill_GID_detectron2``
(``GID/gid/distill_gid.py``, ``loss.py``, ``proposal_utils.py``; RetinaNet only, by its README
"not accuracy-aligned" with the paper's internal framework). Formulas re-stated, no code copied.

**General instance selection (GISM)**, under ``no_grad``. For every anchor ``r`` of image ``b``
(all FPN levels concatenated in mmdet's ``(level, h, w, anchor)`` order, ``A`` anchors in all,
``K`` sigmoid classes), from the recorded head outputs ``cls [B, A, K]`` and ``deltas [B, A, 4]``::

    p_t[b, r] = max_c sigmoid(cls_t[b, r, c])          p_s[b, r] = max_c sigmoid(cls_s[b, r, c])
    score[b, r] = |p_t[b, r] - p_s[b, r]|
    box[b, r]   = decode_t(anchor_t[r], deltas_t[b, r]) if p_t > p_s else decode_s(anchor_s[r], deltas_s[b, r])

(each model's own ``bbox_head.bbox_coder`` and ``prior_generator``). Per image: the ``nms_pre=3000``
highest scores, boxes clipped to the image (``img_shape``), boxes with a side ``<= min_box_size``
dropped (``min_box_size=10`` pixels of the resized input image, hard-coded as ``min_box_side_len=10``
in the reference code; Detectron2's ``Boxes.nonempty`` keeps sides strictly larger), NMS at IoU
``nms_iou=0.3`` (mmcv's ``nms``), the ``num_instances=10`` best kept. Images without any GT box
still get general instances: GISM only compares predictions.

**Feature loss.** The ``R`` GIs of the batch are cropped from both FPNs by
:class:`kdtoolbox.ops.roi_features.RoIFeatureExtractor` (mmcv ``RoIAlign`` 10x10, ``sampling_ratio=2``,
``aligned=True`` = Detectron2's ``ROIAlignV2``; level rule ``floor(log2(sqrt(wh) / 112))`` over
P3-P7, which is Detectron2's canonical rule ``floor(4 + log2(sqrt(wh) / 224))`` clamped to 3..7)::

    S = crop(adapt(F_s)) [R, C_t, 10, 10]    T = crop(F_t) [R, C_t, 10, 10]
    L_feat = sum_{r, c, y, x} (T - S)^2 / (R * 10 * 10)

``adapt`` is one 3x3 conv ``C_s -> C_t`` shared by all levels (the reference YAML's
``ADAPTER.KERNEL_SIZE: 3, SHARE_WEIGHTS: True``), applied to the student's FPN maps before cropping
(``adapt_on='features'``; ``'rois'`` applies it to the crops instead, cheaper, zero padding at the
crop border). It is a registered submodule, saved in checkpoints and optimised. **Deviation / bug
avoided**: in the reference code the adapters live in a plain Python ``list`` (never registered,
never optimised) and are applied only under ``if len(self.distill_adapt_layers) == 0:`` to a literal
key ``"layer_name"``, so they are never applied: its feature loss compares raw student features.

**Relation loss** (on the un-adapted student crops, as the paper's formula; the reference code
would have used the adapted ones had its adapter run): RKD distance between the flattened crops of
the whole batch, ``psi(i, j) = ||f_i - f_j||_2 / mu`` with ``mu`` the mean over ``i != j``,
``L_rel = sum_{i != j} SmoothL1_{beta=1}(psi_s(i, j), psi_t(i, j)) / (R (R - 1))``, 0 when
``R < 3`` (:func:`kdtoolbox.losses.relation.rkd_distance_loss` with ``pairs='off_diagonal'``).

**Response loss.** ``M [B, A]``: the anchors that the student's own assigner
(``bbox_head.assigner``, i.e. ``train_cfg.assigner``: RetinaNet's ``MaxIoUAssigner``, positive at
IoU >= 0.5, plus its low-quality matches with ``min_pos_iou=0`` like Detectron2's RetinaNet
matcher with ``allow_low_quality_matches=True``) assigns to one of the image's GIs, over all anchors
(``allowed_border=-1``, as the reference). With ``n = max(1, sum(M))``::

    L_cls = sum_{M, c} BCE_with_logits(cls_s, sigmoid(cls_t)) / n
    L_reg = sum_{M, 4} SmoothL1_{beta}(deltas_s, deltas_t) / n          (beta = 0.1)

**Weights.** Defaults are the shipped YAML ``Distill_RetinaNet_T_Res101_S_Res50_2x_L1Smo.yaml``:
feature ``5e-4``, relation ``40``, response cls ``0.1``, response reg ``1.0`` (SmoothL1 beta 0.1);
the reference ``config.py`` defaults are 0.005 / 40 / 0.1 / 0.1. GISM: NMS 0.3, pre-NMS 3000,
K = 10. Losses: ``gid.loss_feature``, ``gid.loss_relation``, ``gid.loss_cls``, ``gid.loss_reg`` and
``gid.num_instances`` (R, logged, not a loss). The reference's ``GI_MODE`` option (an IoP matcher
that splits GIs into positive / semi-positive / negative; its ``"neg"`` mode is unreachable, a
typo) is not implemented: every GI is used (``GI_MODE: "ALL"`` of the shipped YAML).

Requirements: anchor-based dense heads with sigmoid classification that call their classification
and regression convs once per level through ``__call__`` (mmdet's ``RetinaHead``: ``retina_cls`` /
``retina_reg``), the same number of anchors and classes in both models.
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.ops import nms
from mmengine.structures import InstanceData

from kdtoolbox.adapters import ConvAdapter, apply_adapter
from kdtoolbox.engine import BaseDistiller, DistillContext, FeaturePair, Records
from kdtoolbox.engine.checks import require_same_num_classes
from kdtoolbox.engine.distiller import build_adapter
from kdtoolbox.losses.relation import rkd_distance_loss
from kdtoolbox.ops.dense_assign import decode_dense_predictions, levels_to_anchor_rows
from kdtoolbox.ops.roi_features import RoIFeatureExtractor, boxes_to_rois

#: Detectron2's ROIAlignV2 10x10, sampling 2 over P3-P7 with its canonical level rule
DEFAULT_ROI_EXTRACTOR = dict(roi_layer=dict(type='RoIAlign', output_size=10, sampling_ratio=2, aligned=True),
                             featmap_strides=[8, 16, 32, 64, 128], finest_scale=112)


# --------------------------------------------------------------------------- GISM
def gi_candidates(t_cls: torch.Tensor, s_cls: torch.Tensor, t_boxes: torch.Tensor,
                  s_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor GI scores ``[B, A]`` and boxes ``[B, A, 4]``: ``|p_t - p_s|`` and the box of the
    model whose max-class probability is higher (the student's on ties)."""
    diff = t_cls.sigmoid().amax(dim=2) - s_cls.sigmoid().amax(dim=2)
    boxes = torch.where((diff > 0).unsqueeze(-1), t_boxes, s_boxes)
    return diff.abs(), boxes


def select_instances(scores: torch.Tensor, boxes: torch.Tensor, img_shape: Optional[Sequence[int]],
                     nms_pre: int = 3000, nms_iou: float = 0.3, num_instances: int = 10,
                     min_box_size: float = 10.0) -> torch.Tensor:
    """One image's general instances ``[k, 4]`` (k <= num_instances), best first: top ``nms_pre``
    scores, clip to ``img_shape = (h, w)``, drop sides ``<= min_box_size``, NMS, keep the best."""
    scores, order = scores.sort(descending=True)
    scores, boxes = scores[:nms_pre], boxes[order[:nms_pre]]
    if img_shape is not None:
        h, w = float(img_shape[0]), float(img_shape[1])
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], dim=1)
    keep = (torch.isfinite(boxes).all(dim=1) & ((boxes[:, 2] - boxes[:, 0]) > min_box_size)
            & ((boxes[:, 3] - boxes[:, 1]) > min_box_size))
    scores, boxes = scores[keep], boxes[keep]
    if boxes.shape[0] == 0:
        return boxes.new_zeros(0, 4)
    _, kept = nms(boxes.contiguous(), scores.contiguous(), float(nms_iou))
    return boxes[kept[:num_instances]]


# --------------------------------------------------------------------------- losses
def gi_feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``sum (T - S)^2 / (R * h * w)`` over ``[R, C, h, w]`` crops (0 for R = 0, graph kept)."""
    if student.shape != teacher.shape:
        raise ValueError(f'GID: adapted student crops {tuple(student.shape)} and teacher crops '
                         f'{tuple(teacher.shape)} differ (student_channels / teacher_channels or the adapter)')
    count = max(1, student.shape[0] * student.shape[2] * student.shape[3])
    return (teacher.detach() - student).pow(2).sum() / count


def gi_relation_loss(student: torch.Tensor, teacher: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """RKD distance loss over the R flattened crops (off-diagonal mean), 0 for R < 3."""
    if student.shape[0] < 3:
        return student.sum() * 0.0
    return rkd_distance_loss(student.flatten(1), teacher.flatten(1), beta=beta, pairs='off_diagonal')


def response_mask(assigner: Any, anchors: torch.Tensor, instances: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B, A]`` bool: the anchors ``assigner`` assigns to one of each image's GI boxes."""
    masks = []
    for boxes in instances:
        gt = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long, device=boxes.device))
        result = assigner.assign(InstanceData(priors=anchors), gt)
        masks.append(result.gt_inds > 0)
    return torch.stack(masks) if masks else anchors.new_zeros(0, anchors.shape[0], dtype=torch.bool)


def response_cls_loss(s_cls: torch.Tensor, t_cls: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_{masked anchors, classes} BCE_with_logits(s, sigmoid(t)) / max(1, #masked)``."""
    loss = F.binary_cross_entropy_with_logits(s_cls[mask], t_cls[mask].detach().sigmoid(), reduction='sum')
    return loss / max(1, int(mask.sum()))


def response_reg_loss(s_reg: torch.Tensor, t_reg: torch.Tensor, mask: torch.Tensor,
                      beta: float = 0.1) -> torch.Tensor:
    """``sum_{masked anchors, 4} SmoothL1_beta(s, t) / max(1, #masked)``."""
    loss = F.smooth_l1_loss(s_reg[mask], t_reg[mask].detach(), reduction='sum', beta=beta)
    return loss / max(1, int(mask.sum()))


# --------------------------------------------------------------------------- distiller
class GID(BaseDistiller):
    """General Instance Distillation: GISM-selected instances drive feature, relation and
    response distillation of an anchor-based dense detector (RetinaNet).

    Args:
        student_channels, teacher_channels: FPN channels (the default adapter maps one to the other).
        loss_weight_feature, loss_weight_relation, loss_weight_cls, loss_weight_reg: the shipped
            YAML's 5e-4 / 40 / 0.1 / 1.0 (the reference code defaults: 0.005 / 40 / 0.1 / 0.1).
        reg_beta: SmoothL1 beta of the regression response loss (0.1); relation_beta: of the
            relation loss (1.0).
        nms_pre, nms_iou, num_instances, min_box_size: GISM (3000, 0.3, 10, 10 pixels).
        roi_extractor: ``roi_layer``, ``featmap_strides``, ``finest_scale`` of the crops (default
            :data:`DEFAULT_ROI_EXTRACTOR`: RoIAlign 10x10, sampling 2, aligned, P3-P7, 112).
        adapter: an adapter config (``ADAPTERS``; a list is chained); None: ``ConvAdapter``
            3x3 ``student_channels -> teacher_channels``, PyTorch's default init (the reference's).
        adapt_on: 'features' (the FPN maps, then crop: the reference's intent) or 'rois' (the crops).
        assigner: an assigner config for the response mask; None: the student head's ``assigner``.
        feature_module: the recorded FPN outputs of both models (``neck``).
        head: the dense head of both models (``bbox_head``); cls_conv / reg_conv: its
            classification / regression convs, relative to it (``retina_cls`` / ``retina_reg``).
    """

    def __init__(self, student_channels: int = 256, teacher_channels: int = 256,
                 loss_weight_feature: float = 5e-4, loss_weight_relation: float = 40.0,
                 loss_weight_cls: float = 0.1, loss_weight_reg: float = 1.0, reg_beta: float = 0.1,
                 relation_beta: float = 1.0, nms_pre: int = 3000, nms_iou: float = 0.3, num_instances: int = 10,
                 min_box_size: float = 10.0, roi_extractor: Optional[dict] = None, adapter: Optional[Any] = None,
                 adapt_on: str = 'features', assigner: Optional[dict] = None, feature_module: str = 'neck',
                 head: str = 'bbox_head', cls_conv: str = 'retina_cls', reg_conv: str = 'retina_reg',
                 init_cfg=None):
        records = {'feats': feature_module, 'cls': f'{head}.{cls_conv}', 'reg': f'{head}.{reg_conv}'}
        super().__init__(student_recorders=dict(records), teacher_recorders=dict(records), init_cfg=init_cfg)
        if adapt_on not in ('features', 'rois'):
            raise ValueError(f"GID: adapt_on must be 'features' or 'rois', got {adapt_on!r}")
        for key, value in (('nms_pre', nms_pre), ('num_instances', num_instances)):
            if int(value) < 1:
                raise ValueError(f'GID: {key} must be >= 1, got {value}')
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f'GID: nms_iou must be in (0, 1], got {nms_iou}')
        if reg_beta < 0 or relation_beta < 0:
            raise ValueError(f'GID: reg_beta and relation_beta must be >= 0, got {reg_beta}, {relation_beta}')
        self.weights = dict(feature=float(loss_weight_feature), relation=float(loss_weight_relation),
                            cls=float(loss_weight_cls), reg=float(loss_weight_reg))
        self.reg_beta, self.relation_beta = float(reg_beta), float(relation_beta)
        self.nms_pre, self.nms_iou, self.num_instances = int(nms_pre), float(nms_iou), int(num_instances)
        self.min_box_size = float(min_box_size)
        self.roi_extractor = self._build_extractor(roi_extractor)
        self.adapter = (ConvAdapter(student_channels, teacher_channels, kernel_size=3) if adapter is None
                        else build_adapter(adapter, where='distiller.adapter'))
        self.adapt_on = adapt_on
        self.assigner_cfg = dict(assigner) if assigner is not None else None
        self._assigner = None
        self.head = head

    @staticmethod
    def _build_extractor(cfg: Optional[dict]) -> RoIFeatureExtractor:
        cfg = dict(DEFAULT_ROI_EXTRACTOR, **(cfg or {}))
        unknown = set(cfg) - set(DEFAULT_ROI_EXTRACTOR)
        if unknown:
            raise KeyError(f'GID: roi_extractor has unknown keys {sorted(unknown)} '
                           f'(allowed: roi_layer, featmap_strides, finest_scale)')
        return RoIFeatureExtractor(**cfg)

    # ------------------------------------------------------------------ model parts
    def check_models(self, student, teacher) -> None:
        # the response loss and the instance scores compare the two heads class by class
        require_same_num_classes(student, teacher, 'GID', heads=(self.head,))

    def _head(self, model: Any, owner: str) -> Any:
        if model is None:
            raise ValueError(f'GID: the context carries no {owner} model (DistillationModel sets context.{owner})')
        try:
            head = operator.attrgetter(self.head)(model)
        except AttributeError:
            raise AttributeError(f'GID: the {owner} has no {self.head!r} (set head=)') from None
        for attr in ('prior_generator', 'bbox_coder', 'cls_out_channels'):
            if not hasattr(head, attr):
                raise AttributeError(f'GID: the {owner} {self.head!r} has no {attr}: GID needs an anchor-based '
                                     f'dense head (e.g. RetinaHead)')
        if not getattr(head, 'use_sigmoid_cls', True):
            raise ValueError(f'GID: the {owner} {self.head!r} uses softmax classification; GID needs sigmoid scores')
        return head

    def assigner(self, student_head: Any) -> Any:
        """The response-mask assigner: ``assigner=`` if given, else the student head's own."""
        if self.assigner_cfg is not None:
            if self._assigner is None:
                from mmdet.registry import TASK_UTILS
                self._assigner = TASK_UTILS.build(self.assigner_cfg)
            return self._assigner
        found = getattr(student_head, 'assigner', None)
        if found is None:
            raise AttributeError(f'GID: the student {self.head!r} has no assigner (no train_cfg.assigner): '
                                 f'set assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, ...)')
        return found

    def predictions(self, records: Records, head: Any, owner: str) -> tuple[list, torch.Tensor, torch.Tensor]:
        """(featmap sizes, cls ``[B, A, K]``, deltas ``[B, A, 4]``) of one model's recorded head calls."""
        cls_levels, reg_levels = records.calls('cls'), records.calls('reg')
        levels = head.prior_generator.num_levels
        if len(cls_levels) != levels or len(reg_levels) != levels:
            raise ValueError(f'GID: the {owner} head ran its cls / reg convs {len(cls_levels)} / '
                             f'{len(reg_levels)} times for {levels} anchor levels (one call per level expected)')
        sizes = [tuple(x.shape[-2:]) for x in cls_levels]
        cls = levels_to_anchor_rows(cls_levels, head.cls_out_channels)
        reg = levels_to_anchor_rows(reg_levels, 4)
        if cls.shape[1] != reg.shape[1]:
            raise ValueError(f'GID: the {owner} head gives {cls.shape[1]} cls and {reg.shape[1]} reg anchors')
        return sizes, cls, reg

    # ------------------------------------------------------------------ GISM
    @torch.no_grad()
    def general_instances(self, t_cls, s_cls, t_boxes, s_boxes, img_shapes) -> list[torch.Tensor]:
        """Per image the GI boxes ``[k_i, 4]`` (detached, clipped, best first)."""
        scores, boxes = gi_candidates(t_cls.detach(), s_cls.detach(), t_boxes.detach(), s_boxes.detach())
        return [select_instances(scores[i], boxes[i], img_shapes[i], self.nms_pre, self.nms_iou,
                                 self.num_instances, self.min_box_size) for i in range(scores.shape[0])]

    # ------------------------------------------------------------------ feature + relation
    def crop_losses(self, s_feats, t_feats, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature, relation) losses of the GI crops ``rois [R, 5]`` of both FPNs."""
        levels = self.roi_extractor.num_levels
        for owner, feats in (('student', s_feats), ('teacher', t_feats)):
            got = len(feats) if isinstance(feats, (tuple, list)) else f'a {type(feats).__name__}, not a tuple'
            if not isinstance(feats, (tuple, list)) or len(feats) < levels:
                raise ValueError(f'GID: roi_extractor.featmap_strides has {levels} levels; the {owner} '
                                 f'feature_module gives {got}')
        s_feats, t_feats = list(s_feats[:levels]), list(t_feats[:levels])
        s_raw, t_roi = self.roi_extractor.extract_pair(s_feats, t_feats, rois)
        if self.adapt_on == 'features':
            adapted = [apply_adapter(self.adapter, s, t) for s, t in zip(s_feats, t_feats)]
            s_adapted = self.roi_extractor(adapted, rois)
        else:
            s_adapted = apply_adapter(self.adapter, s_raw, t_roi)
        feature = gi_feature_loss(s_adapted, t_roi)
        if rois.shape[0] == 0:  # keep every adapter parameter in the graph (DDP)
            feature = feature + sum(p.sum() for p in self.adapter.parameters()) * 0.0
        return feature, gi_relation_loss(s_raw, t_roi, self.relation_beta)

    # ------------------------------------------------------------------ preflight
    def feature_pairs(self, student: Records, teacher: Records) -> list[FeaturePair]:
        """Per FPN level the crops use, the student's feature through the adapter against the
        teacher's (with ``adapt_on='rois'`` the adapter takes the crops, which have the features'
        channels); a mismatch names ``distiller.adapter`` or, for the default adapter,
        ``student_channels`` / ``teacher_channels``."""
        s_feats, t_feats = student['feats'], teacher['feats']
        if not (isinstance(s_feats, (tuple, list)) and isinstance(t_feats, (tuple, list))):
            return []
        levels = self.roi_extractor.num_levels
        if isinstance(self.adapter, ConvAdapter):
            key = (f'distiller.student_channels / teacher_channels (the default ConvAdapter '
                   f'{self.adapter.conv.in_channels} -> {self.adapter.conv.out_channels}) or distiller.adapter')
        else:
            key = 'distiller.adapter'
        module = self.student_recorders['feats']
        return [pair for i, (s, t) in enumerate(zip(s_feats[:levels], t_feats[:levels]))
                for pair in FeaturePair.from_values(f'{module}[{i}]', f'{module}[{i}]', s, t,
                                                    student_adapter=self.adapter, student_adapter_key=key,
                                                    where=f'distiller (GID, level {i})')]

    # ------------------------------------------------------------------ forward
    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        samples = context.data_samples
        if not samples:
            raise ValueError('GID: the context has no data samples (image shapes are needed)')
        s_head, t_head = self._head(context.student, 'student'), self._head(context.teacher, 'teacher')
        sizes, s_cls, s_reg = self.predictions(student, s_head, 'student')
        t_sizes, t_cls, t_reg = self.predictions(teacher, t_head, 'teacher')
        if sizes != t_sizes or s_cls.shape != t_cls.shape:
            raise ValueError(f'GID: student and teacher predictions differ (levels {sizes} vs {t_sizes}, cls '
                             f'{tuple(s_cls.shape)} vs {tuple(t_cls.shape)}): same anchors and classes needed')
        device = s_cls.device
        with torch.no_grad():  # each model's boxes through its own priors and box coder
            s_priors, _, s_boxes = decode_dense_predictions(s_head, student.calls('cls'), student.calls('reg'), 'GID')
            _, _, t_boxes = decode_dense_predictions(t_head, teacher.calls('cls'), teacher.calls('reg'), 'GID')
        s_anchors = torch.cat(s_priors)
        img_shapes = [s.metainfo.get('img_shape') for s in samples]
        instances = self.general_instances(t_cls, s_cls, t_boxes, s_boxes, img_shapes)
        rois = boxes_to_rois(instances).to(device)
        feature, relation = self.crop_losses(student['feats'], teacher['feats'], rois)
        mask = response_mask(self.assigner(s_head), s_anchors, instances)
        w = self.weights
        return {'gid.loss_feature': w['feature'] * feature,
                'gid.loss_relation': w['relation'] * relation,
                'gid.loss_cls': w['cls'] * response_cls_loss(s_cls, t_cls, mask),
                'gid.loss_reg': w['reg'] * response_reg_loss(s_reg, t_reg, mask, self.reg_beta),
                'gid.num_instances': torch.tensor(float(rois.shape[0]), device=device)}


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(GID)
