"""SparseKD: "Towards Efficient 3D Object Detection with Knowledge Distillation" (Yang et al., NeurIPS 2022).

Official code: CVMI-Lab/SparseKD (OpenPCDet): ``pcdet/models/kd_heads/center_head/center_logit_kd_head.py``
(``get_kd_loss_with_raw_prediction``), ``center_kd_head.py`` (masks), ``kd_head.py`` (alignment,
``parse_teacher_pred_to_targets``), ``pcdet/utils/kd_utils/kd_forwad.py`` (the step),
``kd_tgi_utils.py`` (TGI, see :mod:`.lidar_tgi`), configs ``tools/cfgs/waymo_models/cp-*/*_sparsekd.yaml``.
Here on mmdet3d's ``CenterPoint`` / ``CenterHead`` (one or more tasks; the maps are ``[B, K_t, H, W]``
with ``H`` = y, ``W`` = x).

Per task ``t`` (``T`` tasks), teacher and student heatmap logits ``h_T, h_S``:

- ``P = clamp(sigmoid(h), 1e-4, 1 - 1e-4)`` for both (mmdet3d's ``clip_sigmoid``);
- if the maps differ in size (a coarser pillar student), ``P_S`` is resized to the teacher's size with
  ``F.interpolate(mode='bilinear')`` (``ALIGN: target teacher``; the official call passes no
  ``align_corners``, so it is False, whatever the yaml says);
- pivotal positions ``M(b,y,x) = [max_k P_T > thresh] * max_k P_T (soft) * max_k G_T (fg)``, where
  ``G_T`` is the Gaussian GT heatmap of the **teacher's** target assignment (``teacher.<head>.get_targets``
  on the GT boxes; the label-KD boxes are not in it, as in the official teacher) and optionally the
  top-``rank`` positions of the teacher (``rank=-1``: off, as released);
- ``L_hm,t = sum_{b,k,y,x} (P_S - P_T)^2 * M / (sum_{b,y,x} M + 1e-6)`` (channels summed in the
  numerator, not in the denominator);
- regression KD, only when teacher and student box maps have the same shape: the teacher's maps
  ``cat(reg, height, dim, rot)`` (``HEAD_ORDER``; ``vel`` too when listed) gathered at the teacher's GT
  centre indices, against the student's maps at the same indices, with CenterNet's masked L1
  (``RegLossCenterNet``: per channel ``sum |s - t| * mask / max(sum mask, 1)``, times ``code_weights``,
  summed);
- ``sparsekd.loss_hm = w_hm * sum_t L_hm,t / T`` and ``sparsekd.loss_reg = w_reg * sum_t L_reg,t / T``.

Released weights: ``w_hm`` 15 (CP-Voxel-XS/XXS), 10 (CP-Voxel-S), 7 (CP-Pillar-v0.64); ``w_reg`` 0.2
(voxel), 0 (pillar: the maps differ, so the term is skipped anyway); ``thresh=0``, soft and fg masks on.

**Label KD** (``LABEL_ASSIGN_KD``): the teacher's decoded boxes with ``score > label_score_thresh[label]``
(0.6 per class; 0.6 / 0.5 / 0.5 for pillars), no NMS (``NMS_CONFIG.ENABLED: False``), are added to the
GT for the **student's** own target assignment (teacher boxes first, ``GT_FIRST: False``), so the
student's focal and L1 losses train on GT plus confident teacher boxes. In ``DistillationModel`` the
teacher runs before the student's ``loss()`` but the distiller's ``forward`` runs after it, so this
happens through two hooks installed by :meth:`SparseKD.check_models`: a forward hook on the teacher's
head keeps its raw outputs of this step; the student head's ``get_targets`` is wrapped (an instance
attribute of that head, nothing else of the student changes) to decode them with the **teacher's own**
``bbox_coder`` (exactly ``CenterHead.predict_by_feat`` without NMS: sigmoid heatmap, ``exp`` of the
dims, gravity centre moved to the bottom centre), keep the confident boxes and prepend them to each
sample's ``gt_instances_3d`` (new ``InstanceData``; the data samples themselves are not modified, so
the KD masks above still see the GT alone). Without a teacher pass in the step (distillation scale 0)
the student trains on the GT alone.

**Teacher BN mode.** The official teacher stays in ``train()`` mode (BatchNorm with batch statistics,
running statistics updated): ``teacher_bn_mode='train'`` (default) sets the teacher's BatchNorm layers
to training mode in a forward pre-hook on the teacher (``DistillationModel.train()`` keeps the teacher
in eval mode otherwise) whenever the student is training; ``'eval'`` leaves them in eval mode.

**Teacher-guided initialisation** (``tgi=True``): when the runner initialises the model
(``init_weights``, before a resume or ``load_from`` overwrite it), the teacher's weights narrowed to the
student's width (:mod:`.lidar_tgi`, FNAV2) are loaded into the student (keys the teacher lacks stay as
initialised). Pillar students of the paper load the teacher as is (same widths): the same call.

The teacher must run in ``loss`` mode (``DistillationModel(teacher_mode='loss')``: mmdet3d's
``MVXTwoStageDetector._forward`` runs nothing); it stops right after its head's forward (truncation),
before the teacher's own loss. A teacher with another voxel size needs
``teacher_preprocessor='teacher'`` (its own voxelisation of the same augmented points; the official
``DIFF_VOXEL``).

Deviations from the official code: the rank mask is per task (the official one is one tensor shared by
all tasks, filled task after task); mmdet3d's box maps include ``vel`` when the dataset has velocities
(``reg_heads`` chooses; default the official ``HEAD_ORDER`` without ``vel``); the official decoded
teacher boxes go through the teacher's ``post_center_limit_range`` and score threshold 0.1 before the
0.6 threshold: here the teacher's ``bbox_coder`` (``post_center_range``, ``score_threshold``,
``max_num``) does the same.
"""
from __future__ import annotations

import types
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.spconv_compat import import_spconv

from .lidar_tgi import secondfpn_concat_inputs, teacher_guided_init

#: the official HEAD_ORDER in mmdet3d's head names: center -> reg, center_z -> height, dim, rot
DEFAULT_REG_HEADS = ('reg', 'height', 'dim', 'rot')
BN_MODES = ('train', 'eval')


# ------------------------------------------------------------------------------------ the losses
def clip_sigmoid(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``clamp(sigmoid(x), eps, 1 - eps)`` (mmdet3d's ``clip_sigmoid``, OpenPCDet's ``sigmoid``)."""
    return torch.clamp(x.sigmoid(), min=eps, max=1 - eps)


def align_to(value: torch.Tensor, size: Sequence[int], mode: str = 'bilinear') -> torch.Tensor:
    """``value [B, C, H, W]`` resized to ``size (H', W')`` (as the official ``interpolate_feature_map``:
    no ``align_corners``); unchanged when the sizes already match."""
    if tuple(value.shape[-2:]) == tuple(size):
        return value
    return F.interpolate(value, size=tuple(size), mode=mode)


def rank_mask(teacher_prob: torch.Tensor, k: int) -> torch.Tensor:
    """1 at the ``k`` positions of the largest class scores of ``teacher_prob [B, K, H, W]`` (CenterNet's
    ``_topk`` over classes and positions), else 0: ``[B, H, W]``."""
    b, c, h, w = teacher_prob.shape
    k = min(int(k), c * h * w)
    flat_idx = teacher_prob.reshape(b, -1).topk(k, dim=1).indices % (h * w)
    mask = teacher_prob.new_zeros(b, h * w)
    mask.scatter_(1, flat_idx, 1.0)
    return mask.view(b, h, w)


def pivotal_mask(teacher_prob: torch.Tensor, fg_heatmap: Optional[torch.Tensor] = None, thresh: float = 0.0,
                 soft: bool = True, rank: int = -1) -> torch.Tensor:
    """SparseKD's pivotal-position mask ``[B, H, W]`` from ``teacher_prob [B, K, H, W]`` and the teacher's
    GT heatmap ``fg_heatmap [B, K, H, W]`` (None: no fg mask).

    ``[max_k P_T > thresh] * (max_k P_T if soft) * (max_k G_T if soft else [sum_k G_T > 0]) * rank mask``.
    """
    peak = teacher_prob.amax(dim=1)
    mask = (peak > thresh).float()
    if soft:
        mask = mask * peak
    if fg_heatmap is not None:
        if tuple(fg_heatmap.shape[-2:]) != tuple(peak.shape[-2:]):
            raise ValueError(f'SparseKD: the GT heatmap {tuple(fg_heatmap.shape)} and the teacher heatmap '
                             f'{tuple(teacher_prob.shape)} differ in size')
        fg = fg_heatmap.amax(dim=1) if soft else (fg_heatmap.sum(dim=1) > 0).float()
        mask = mask * fg
    if rank != -1:
        mask = mask * rank_mask(teacher_prob, rank)
    return mask.detach()


def heatmap_kd_loss(student_prob: torch.Tensor, teacher_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum_{b,k,y,x} (P_S - P_T)^2 * mask[b,y,x] / (sum mask + 1e-6)`` for ``[B, K, H, W]`` maps."""
    if student_prob.shape != teacher_prob.shape:
        raise ValueError(f'SparseKD: student heatmap {tuple(student_prob.shape)} and teacher heatmap '
                         f'{tuple(teacher_prob.shape)} differ (different class counts per task?)')
    err = (student_prob - teacher_prob.detach()).pow(2)
    return (err * mask.unsqueeze(1)).sum() / (mask.sum() + 1e-6)


def gather_at(maps: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``maps [B, C, H, W]`` at flat positions ``ind [B, M]`` (``y * W + x``) -> ``[B, M, C]``."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1).permute(0, 2, 1)
    return flat.gather(1, ind.long().unsqueeze(-1).expand(-1, -1, c))


def center_reg_kd_loss(student_maps: torch.Tensor, teacher_maps: torch.Tensor, ind: torch.Tensor,
                       mask: torch.Tensor, code_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """CenterNet's masked L1 (``RegLossCenterNet``) of the student's box maps against the teacher's,
    both ``[B, C, H, W]``, at ``ind [B, M]`` where ``mask [B, M]``: per channel
    ``sum_{b,m} |s - t| * mask / max(sum mask, 1)``, times ``code_weights [C]``, summed."""
    pred = gather_at(student_maps, ind)
    target = gather_at(teacher_maps.detach(), ind)
    m = mask.float().unsqueeze(-1).expand_as(target) * (~torch.isnan(target)).float()
    target = torch.nan_to_num(target)
    per_channel = ((pred * m - target * m).abs()).sum(dim=(0, 1)) / mask.float().sum().clamp(min=1.0)
    if code_weights is not None:
        weights = per_channel.new_tensor(code_weights)
        if weights.numel() != per_channel.numel():
            raise ValueError(f'SparseKD: {weights.numel()} code_weights for {per_channel.numel()} regression channels')
        per_channel = per_channel * weights
    return per_channel.sum()


# --------------------------------------------------------------------------------- label KD
def decode_center_head(head: nn.Module, preds_dicts, box_type=None) -> list:
    """A CenterHead's raw outputs (``head(feats)``: per task, per level, a dict) decoded by the head's own
    ``bbox_coder`` as ``CenterHead.predict_by_feat`` does, **without NMS**: per sample an ``InstanceData``
    with ``bboxes_3d`` (``box_type``, bottom centre, ``code_size`` values), ``scores_3d`` and
    ``labels_3d`` (indices over all tasks' classes)."""
    from mmengine.structures import InstanceData
    if box_type is None:
        from mmdet3d.structures import LiDARInstance3DBoxes as box_type
    per_task = []
    offset = 0
    for task_id, preds in enumerate(preds_dicts):
        p = preds[0]
        dim = torch.exp(p['dim']) if head.norm_bbox else p['dim']
        decoded = head.bbox_coder.decode(p['heatmap'].sigmoid(), p['rot'][:, 0:1], p['rot'][:, 1:2], p['height'], dim,
                                         p.get('vel'), reg=p['reg'], task_id=task_id)
        for d in decoded:
            d['labels'] = d['labels'].long() + offset
        per_task.append(decoded)
        offset += head.num_classes[task_id]
    out = []
    for i in range(len(per_task[0])):
        boxes = torch.cat([t[i]['bboxes'] for t in per_task])
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:3] - boxes[:, 5:6] * 0.5, boxes[:, 3:]], dim=1)
        out.append(InstanceData(bboxes_3d=box_type(boxes, box_dim=boxes.shape[-1]),
                                scores_3d=torch.cat([t[i]['scores'] for t in per_task]),
                                labels_3d=torch.cat([t[i]['labels'] for t in per_task])))
    return out


def confident_boxes(pred, score_thresh: Union[float, Sequence[float]]):
    """The boxes of ``pred`` (``scores_3d``, ``labels_3d``) with ``score > thresh[label]``."""
    labels = pred.labels_3d.long()
    if isinstance(score_thresh, (int, float)):
        thresh = torch.full_like(pred.scores_3d, float(score_thresh))
    else:
        table = pred.scores_3d.new_tensor(list(score_thresh))
        if len(labels) and int(labels.max()) >= len(table):
            raise ValueError(f'SparseKD: label_score_thresh has {len(table)} values but the teacher predicts '
                             f'label {int(labels.max())}')
        thresh = table[labels] if len(labels) else pred.scores_3d
    return pred[pred.scores_3d > thresh]


def merge_gt_and_teacher(gt, teacher, gt_first: bool = False):
    """A new ``InstanceData`` with ``bboxes_3d`` / ``labels_3d`` = the teacher's boxes and the GT (teacher
    first unless ``gt_first``), the teacher's boxes cut or zero-padded to the GT's ``box_dim``."""
    from mmengine.structures import InstanceData
    gt_boxes = gt.bboxes_3d
    t = teacher.bboxes_3d.tensor.to(gt_boxes.tensor)
    dim = gt_boxes.tensor.shape[-1]
    if t.shape[-1] >= dim:
        t = t[:, :dim]
    else:
        t = torch.cat([t, t.new_zeros(t.shape[0], dim - t.shape[-1])], dim=1)
    parts = [gt_boxes.tensor, t] if gt_first else [t, gt_boxes.tensor]
    labels = [gt.labels_3d, teacher.labels_3d.to(gt.labels_3d)]
    labels = labels if gt_first else labels[::-1]
    boxes = type(gt_boxes)(torch.cat(parts), box_dim=dim, with_yaw=getattr(gt_boxes, 'with_yaw', True))
    return InstanceData(bboxes_3d=boxes, labels_3d=torch.cat(labels))


# -------------------------------------------------------------------------------- the distiller
def _batchnorms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class SparseKD(BaseDistiller):
    """SparseKD on mmdet3d CenterPoint (CenterHead) pairs: pivotal-position logit KD, regression KD at
    GT centres, label KD, teacher BN mode and teacher-guided initialisation (see the module docstring).

    Args:
        head: the CenterHead's path in both detectors (``'pts_bbox_head'`` for CenterPoint,
            ``'bbox_head'`` for a VoxelNet-style detector).
        hm_weight, reg_weight: ``w_hm``, ``w_reg`` (0 disables a term).
        score_thresh, soft_mask, fg_mask, rank: the pivotal-position mask (``HM_LOSS.thresh``,
            ``soft_mask``, ``fg_mask``, ``rank``).
        reg_heads: the box maps of the regression KD, concatenated in this order.
        code_weights: per regression channel (default all 1, as released).
        align_mode: interpolation mode when the heatmaps differ in size ('bilinear').
        label_kd: add confident teacher boxes to the student's GT (label KD).
        label_score_thresh: a threshold per class (or one for all).
        label_gt_first: GT before the teacher boxes (official ``GT_FIRST``, False).
        teacher_bn_mode: 'train' (official) or 'eval'.
        tgi: initialise the student from the teacher narrowed to its width.
        tgi_mode: 'first' (FNAV2).
    """

    def __init__(self, head: str = 'pts_bbox_head', hm_weight: float = 15.0, reg_weight: float = 0.2,
                 score_thresh: float = 0.0, soft_mask: bool = True, fg_mask: bool = True, rank: int = -1,
                 reg_heads: Sequence[str] = DEFAULT_REG_HEADS, code_weights: Optional[Sequence[float]] = None,
                 align_mode: str = 'bilinear', label_kd: bool = True,
                 label_score_thresh: Union[float, Sequence[float]] = (0.6, 0.6, 0.6), label_gt_first: bool = False,
                 teacher_bn_mode: str = 'train', tgi: bool = False, tgi_mode: str = 'first', init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        import_spconv()  # CenterPoint's SparseEncoder trains on CPU only with its backward fix
        if teacher_bn_mode not in BN_MODES:
            raise ValueError(f'SparseKD: teacher_bn_mode must be one of {BN_MODES}, got {teacher_bn_mode!r}')
        if hm_weight < 0 or reg_weight < 0:
            raise ValueError(f'SparseKD: hm_weight and reg_weight must be >= 0, got {hm_weight}, {reg_weight}')
        self.head = head
        self.hm_weight, self.reg_weight = float(hm_weight), float(reg_weight)
        self.score_thresh, self.soft_mask, self.fg_mask, self.rank = float(score_thresh), soft_mask, fg_mask, int(rank)
        self.reg_heads = tuple(reg_heads)
        self.code_weights = None if code_weights is None else [float(w) for w in code_weights]
        self.align_mode = align_mode
        self.label_kd = label_kd
        self.label_score_thresh = label_score_thresh
        self.label_gt_first = label_gt_first
        self.teacher_bn_mode = teacher_bn_mode
        self.tgi, self.tgi_mode = tgi, tgi_mode
        self.num_tasks = 0
        # plain attributes (not submodules): the models are owned by the DistillationModel
        self._models: list = []
        self._teacher_outs = None

    # --- wiring -------------------------------------------------------------------------------
    def _head_of(self, model: nn.Module, owner: str) -> nn.Module:
        try:
            head = model.get_submodule(self.head)
        except AttributeError:
            raise ValueError(f'SparseKD: the {owner} has no module {self.head!r} (set head=...)') from None
        if not hasattr(head, 'task_heads') or not hasattr(head, 'get_targets'):
            raise ValueError(f'SparseKD: the {owner} module {self.head!r} ({type(head).__name__}) is not an mmdet3d '
                             f'CenterHead (no task_heads / get_targets)')
        return head

    def check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        s_head, t_head = self._head_of(student, 'student'), self._head_of(teacher, 'teacher')
        if list(s_head.num_classes) != list(t_head.num_classes):
            raise ValueError(f'SparseKD compares heatmaps class by class, but the student has classes per task '
                             f'{list(s_head.num_classes)} and the teacher {list(t_head.num_classes)}')
        for owner, head in (('student', s_head), ('teacher', t_head)):
            missing = [n for n in self.reg_heads + ('heatmap',) if not hasattr(head.task_heads[0], n)]
            if missing:
                raise ValueError(f'SparseKD: the {owner} CenterHead has no branch {missing} '
                                 f'(it has {list(head.task_heads[0].heads)})')
        self.num_tasks = len(s_head.task_heads)
        recorders = {}
        for t in range(self.num_tasks):
            for name in ('heatmap',) + self.reg_heads:
                recorders[f't{t}.{name}'] = f'{self.head}.task_heads.{t}.{name}'
        self.student_recorders = dict(recorders)
        self.teacher_recorders = dict(recorders)
        self._models = [student, teacher]
        bns = _batchnorms(teacher)

        def set_teacher_bn(module, args):
            train_bn = self.teacher_bn_mode == 'train' and student.training
            for bn in bns:
                bn.training = train_bn
        teacher.register_forward_pre_hook(set_teacher_bn)
        if self.label_kd:
            t_head.register_forward_hook(self._keep_teacher_outputs)
            original = s_head.get_targets

            def get_targets(head_self, batch_gt_instances_3d):
                return original(self._with_teacher_boxes(batch_gt_instances_3d))
            s_head.get_targets = types.MethodType(get_targets, s_head)

    def _keep_teacher_outputs(self, module, inputs, output) -> None:
        if self._models and self._models[0].training:
            self._teacher_outs = output

    def _with_teacher_boxes(self, batch_gt_instances_3d):
        """The student's GT plus the confident teacher boxes of this step (label KD); the GT alone when
        the teacher did not run in this step."""
        outs, self._teacher_outs = self._teacher_outs, None
        if outs is None or not self._models or not self._models[0].training:
            return batch_gt_instances_3d
        t_head = self._models[1].get_submodule(self.head)
        with torch.no_grad():
            box_type = type(batch_gt_instances_3d[0].bboxes_3d) if batch_gt_instances_3d else None
            preds = decode_center_head(t_head, outs, box_type)
        if len(preds) != len(batch_gt_instances_3d):
            raise ValueError(f'SparseKD label KD: the teacher decoded {len(preds)} samples, the student has '
                             f'{len(batch_gt_instances_3d)}')
        return [merge_gt_and_teacher(gt, confident_boxes(p, self.label_score_thresh), self.label_gt_first)
                for gt, p in zip(batch_gt_instances_3d, preds)]

    def init_weights(self) -> None:
        super().init_weights()
        if self.tgi and self._models:
            student, teacher = self._models
            concat = secondfpn_concat_inputs(student, teacher, head=self.head)
            teacher_guided_init(student, teacher.state_dict(), concat, self.tgi_mode)

    # --- losses -------------------------------------------------------------------------------
    def _teacher_targets(self, context: DistillContext):
        samples = context.data_samples or []
        gts = [s.gt_instances_3d for s in samples]
        with torch.no_grad():
            heatmaps, _, inds, masks = self._models[1].get_submodule(self.head).get_targets(gts)
        return heatmaps, inds, masks

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        self._teacher_outs = None  # consumed by the student's target assignment (or not needed)
        if not self._models:
            raise RuntimeError('SparseKD: check_models() was not called (build it inside a DistillationModel)')
        heatmaps, inds, masks = self._teacher_targets(context)
        hm_total, reg_total, reg_done = 0.0, 0.0, False
        for t in range(self.num_tasks):
            t_prob = clip_sigmoid(teacher[f't{t}.heatmap'])
            s_prob = clip_sigmoid(student[f't{t}.heatmap'])
            if self.hm_weight > 0:
                s_aligned = align_to(s_prob, t_prob.shape[-2:], self.align_mode)
                mask = pivotal_mask(t_prob, heatmaps[t] if self.fg_mask else None, self.score_thresh,
                                    self.soft_mask, self.rank)
                hm_total = hm_total + self.hm_weight * heatmap_kd_loss(s_aligned, t_prob, mask)
            if self.reg_weight > 0:
                s_box = torch.cat([student[f't{t}.{n}'] for n in self.reg_heads], dim=1)
                t_box = torch.cat([teacher[f't{t}.{n}'] for n in self.reg_heads], dim=1)
                if s_box.shape == t_box.shape:  # official: no regression KD across resolutions
                    reg_total = reg_total + self.reg_weight * center_reg_kd_loss(
                        s_box, t_box, inds[t], masks[t], self.code_weights)
                    reg_done = True
        losses = {}
        if self.hm_weight > 0:
            losses['sparsekd.loss_hm'] = hm_total / self.num_tasks
        if reg_done:
            losses['sparsekd.loss_reg'] = reg_total / self.num_tasks
        return losses

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """Per task ``t``: ``bev/task<t>/teacher_heatmap`` (``max_k P_T``, ``[B, H, W]`` on the teacher's
        grid) with the teacher's GT centre cells (the positions of the regression KD) as points, and
        ``bev/task<t>/pivotal_mask``: the pivotal-position mask ``M`` of the heatmap KD (the same
        :func:`pivotal_mask` call as :meth:`forward`, on the teacher's own target assignment)."""
        from kdtoolbox.visualize import flat_index_points
        if not self._models:
            raise RuntimeError('SparseKD: check_models() was not called (build it inside a DistillationModel)')
        heatmaps, inds, masks = self._teacher_targets(context)
        maps = {}
        for t in range(self.num_tasks):
            t_prob = clip_sigmoid(teacher[f't{t}.heatmap'])
            mask = pivotal_mask(t_prob, heatmaps[t] if self.fg_mask else None, self.score_thresh,
                                self.soft_mask, self.rank)
            maps[f'bev/task{t}/teacher_heatmap'] = t_prob.amax(dim=1)
            maps[f'bev/task{t}/teacher_heatmap.points'] = flat_index_points(inds[t], t_prob.shape[-1], masks[t])
            maps[f'bev/task{t}/pivotal_mask'] = mask
        return maps


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(SparseKD)
