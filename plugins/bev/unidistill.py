"""UniDistill: "A Universal Cross-Modality Knowledge Distillation Framework for 3D Object Detection in
Bird's-Eye View" (Zhou et al., CVPR 2023; official code megvii-research/CVPR2023-UniDistill).

Three terms on maps of one BEV grid, for any teacher -> student pair of BEV detectors with a CenterHead
(LiDAR -> camera, LiDAR -> LiDAR, ...). For every GT box ``n`` of sample ``b`` take its 9 BEV keypoints
``p_{n,k}`` (:func:`kdtoolbox.ops.bev_masks.bev_box_keypoints`: centre, 4 corners, 4 edge midpoints)
and sample both maps bilinearly there (:func:`kdtoolbox.ops.bev.sample_bev`: ``grid[..., 0]`` is x,
``grid[..., 1]`` is y, rows of the map = y; the official code swaps the two, which only fits a map
laid out ``[H=x, W=y]``: not copied). With ``N`` the number of GT boxes in the batch:

- feature (low-level BEV, after the view transform / the LiDAR middle encoder):
  ``L_feat = sum_n mean_{k, c} |f_S(p_{n,k}) - f_T(p_{n,k})| / N``;
- relation (high-level BEV, the BEV neck output): per box the ``9 x 9`` cosine-similarity matrix
  ``R = f_hat f_hat^T`` of its keypoint features, ``L_rel = sum_n mean_{9x9} |R_S - R_T| / N``;
- response (CenterHead outputs) under the Gaussian GT mask ``G`` (CenterPoint's, ``min_overlap`` 0.7,
  ``min_radius`` 0 by default): ``c_S = max_k clip_sigmoid(hm_S)``, ``c_T = max_k sigmoid(hm_T / 2)``
  (temperature on the teacher only, as the official code), ``r`` = concatenated regression maps
  (reg, height, dim, rot, vel, iou that both heads have, every task):
  ``L_cls = sum |c_S - c_T| G / sum G``, ``L_reg = sum mean_ch |r_S - r_T| G / sum G``.

Returned: ``unidistill.loss_feat = 100 L_feat``, ``unidistill.loss_relation = 40 L_rel``,
``unidistill.loss_cls = 10 L_cls``, ``unidistill.loss_reg = 10 L_reg`` (the official weights).

Differences from the official code: the keypoint axis order (above); ``N`` is this process's box count
(the official all-reduces its mean over GPUs); when the two low-level maps have different channel
counts (a camera LSS map and a pillar scatter, say) a 1x1 conv adapter maps the student's to the
teacher's (the official pairs have 256 channels on both sides and no adapter); the teacher is not
reloaded every iteration. Teacher and student grids must agree (``resample=True`` resamples the
teacher's maps bilinearly to the student's resolution over the same area).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.bev import BEVGrid, sample_bev
from kdtoolbox.ops.bev_masks import bev_box_keypoints, gaussian_bev_masks

from .camera_common import (as_map, bind_center_heads, clip_sigmoid, gt_boxes_3d, head_maps, resample_to,
                            zero_loss)


def batch_keypoints(boxes_list, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints of a batch's boxes padded per sample: ``([B, M, 9, 2] metres, valid [B, M] bool)``."""
    m = max([len(b) for b in boxes_list] + [1])
    kps = torch.zeros(len(boxes_list), m, 9, 2, device=device)
    valid = torch.zeros(len(boxes_list), m, dtype=torch.bool, device=device)
    for i, boxes in enumerate(boxes_list):
        if len(boxes):
            kps[i, :len(boxes)] = bev_box_keypoints(boxes.to(device).float())
            valid[i, :len(boxes)] = True
    return kps, valid


def _sample_keypoints(feat: torch.Tensor, keypoints: torch.Tensor, grid: BEVGrid) -> torch.Tensor:
    """``feat [B, C, H, W]`` at ``keypoints [B, M, 9, 2]``: ``[B, M, 9, C]``."""
    b, m = keypoints.shape[:2]
    return sample_bev(feat, keypoints.reshape(b, m * 9, 2), grid).reshape(b, m, 9, -1)


def keypoint_feature_loss(feat_s: torch.Tensor, feat_t: torch.Tensor, keypoints: torch.Tensor,
                          valid: torch.Tensor, grid: BEVGrid) -> torch.Tensor:
    """``sum_n mean_{k,c} |f_S - f_T|`` at the keypoints of the valid boxes, divided by their number
    (0 without boxes). ``feat_*``: ``[B, C, H, W]``; ``keypoints [B, M, 9, 2]``; ``valid [B, M]``."""
    if not bool(valid.any()):
        return zero_loss(feat_s)
    fs = _sample_keypoints(feat_s, keypoints, grid)
    ft = _sample_keypoints(feat_t.detach(), keypoints, grid)
    per_box = (fs - ft).abs().mean(dim=(2, 3))  # [B, M]
    return (per_box * valid).sum() / valid.sum()


def keypoint_relation_loss(feat_s: torch.Tensor, feat_t: torch.Tensor, keypoints: torch.Tensor,
                           valid: torch.Tensor, grid: BEVGrid) -> torch.Tensor:
    """``sum_n mean_{9x9} |R_S - R_T| / N`` with ``R`` the cosine similarities of a box's 9 keypoint
    features (channel counts of the two maps may differ)."""
    if not bool(valid.any()):
        return zero_loss(feat_s)
    fs = F.normalize(_sample_keypoints(feat_s, keypoints, grid), dim=-1)
    ft = F.normalize(_sample_keypoints(feat_t.detach(), keypoints, grid), dim=-1)
    rel_s = fs @ fs.transpose(-1, -2)  # [B, M, 9, 9]
    rel_t = ft @ ft.transpose(-1, -2)
    per_box = (rel_s - rel_t).abs().mean(dim=(2, 3))
    return (per_box * valid).sum() / valid.sum()


def response_loss(hm_s: torch.Tensor, hm_t: torch.Tensor, reg_s: torch.Tensor, reg_t: torch.Tensor,
                  mask: torch.Tensor, teacher_temperature: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_cls, L_reg)`` of the module docstring. ``hm_*``: heatmap logits ``[B, K, H, W]`` (all
    tasks concatenated); ``reg_*``: ``[B, R, H, W]``; ``mask``: ``[B, H, W]`` (0 without boxes:
    both terms 0)."""
    total = mask.sum()
    if float(total) <= 0:
        return zero_loss(hm_s), zero_loss(reg_s)
    c_s = clip_sigmoid(hm_s).amax(dim=1)
    c_t = torch.sigmoid(hm_t.detach() / teacher_temperature).amax(dim=1)
    loss_cls = ((c_s - c_t).abs() * mask).sum() / total
    if reg_s.shape[1] == 0:
        return loss_cls, zero_loss(reg_s)
    loss_reg = ((reg_s - reg_t.detach()).abs().mean(dim=1) * mask).sum() / total
    return loss_cls, loss_reg


class UniDistill(BaseDistiller):
    """UniDistill's feature, relation and response distillation (see the module docstring).

    Args:
        student_low, teacher_low: modules whose output is the low-level BEV map (camera: the view
            transformer; LiDAR: the middle encoder / scatter).
        student_high, teacher_high: modules whose output is the high-level BEV map (BEV neck).
        student_head, teacher_head: paths of the CenterHeads (None: the first CenterHead found).
        student_low_channels, teacher_low_channels: give both when they differ: a 1x1 conv maps the
            student's low-level map to the teacher's channels.
        feat_weight, relation_weight, response_weight: 100, 40, 10 (official).
        response_min_overlap, response_min_radius: the Gaussian response mask (0.7, 0).
        teacher_temperature: 2 (official, teacher heatmap only).
        resample: allow grids of different resolution over the same area (teacher maps resampled).
    """

    def __init__(self, student_low: str = 'view_transform', teacher_low: str = 'pts_middle_encoder',
                 student_high: str = 'bev_neck', teacher_high: str = 'pts_neck',
                 student_head: Optional[str] = None, teacher_head: Optional[str] = None,
                 student_low_channels: Optional[int] = None, teacher_low_channels: Optional[int] = None,
                 feat_weight: float = 100.0, relation_weight: float = 40.0, response_weight: float = 10.0,
                 response_min_overlap: float = 0.7, response_min_radius: int = 0,
                 teacher_temperature: float = 2.0, resample: bool = False, init_cfg=None):
        super().__init__(student_recorders=dict(low=student_low, high=student_high),
                         teacher_recorders=dict(low=teacher_low, high=teacher_high), init_cfg=init_cfg)
        self.heads = (student_head, teacher_head)
        self.low_adapter = (nn.Conv2d(student_low_channels, teacher_low_channels, 1)
                            if student_low_channels and teacher_low_channels
                            and student_low_channels != teacher_low_channels else None)
        self.weights = dict(feat=feat_weight, relation=relation_weight, response=response_weight)
        self.response_mask = dict(min_overlap=response_min_overlap, min_radius=response_min_radius)
        self.teacher_temperature = teacher_temperature
        self.resample = resample

    def check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        self.reg_names = bind_center_heads(self, student, teacher, self.resample)

    def _pair(self, student: Records, teacher: Records, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = as_map(student[name]), as_map(teacher[name])
        if self.resample:
            t = resample_to(t, s.shape[-2:])
        for what, m in (('student', s), ('teacher', t)):
            if tuple(m.shape[-2:]) != self.student_grid.shape:
                raise ValueError(f'UniDistill: the {what} {name}-level map is {tuple(m.shape)}, not on the '
                                 f'head grid {self.student_grid.describe()}')
        return s, t

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        grid = self.student_grid
        low_s, low_t = self._pair(student, teacher, 'low')
        high_s, high_t = self._pair(student, teacher, 'high')
        if self.low_adapter is not None:
            low_s = self.low_adapter(low_s)
        boxes = gt_boxes_3d(context.data_samples, 'UniDistill')
        keypoints, valid = batch_keypoints(boxes, low_s.device)
        hm_s, reg_s = head_maps(student, 'head', self.num_tasks[0], self.reg_names)
        hm_t, reg_t = head_maps(teacher, 'head', self.num_tasks[1], self.reg_names)
        if self.resample:
            hm_t, reg_t = resample_to(hm_t, hm_s.shape[-2:]), resample_to(reg_t, reg_s.shape[-2:])
        mask = gaussian_bev_masks([b.to(low_s.device) for b in boxes], grid, **self.response_mask)
        loss_cls, loss_reg = response_loss(hm_s, hm_t, reg_s, reg_t, mask, self.teacher_temperature)
        return {
            'unidistill.loss_feat': self.weights['feat'] * keypoint_feature_loss(low_s, low_t, keypoints, valid, grid),
            'unidistill.loss_relation': self.weights['relation'] * keypoint_relation_loss(
                high_s, high_t, keypoints, valid, grid),
            'unidistill.loss_cls': self.weights['response'] * loss_cls,
            'unidistill.loss_reg': self.weights['response'] * loss_reg,
        }

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """``bev/teacher_low`` and ``bev/teacher_high`` (``mean_c |F_T|`` of the teacher's low- and
        high-level maps, ``[B, H, W]``) with the 9 keypoints of every GT box as points (``[P, 3]``,
        batch index first), and ``bev/response_mask``: the Gaussian mask ``G`` of the response terms,
        ``[B, H, W]``, with the box centres as points. Keypoints and mask are those :meth:`forward`
        uses (same functions, same arguments)."""
        from kdtoolbox.visualize import metric_to_points
        grid = self.student_grid
        low_s, low_t = self._pair(student, teacher, 'low')
        high_t = self._pair(student, teacher, 'high')[1]
        boxes = gt_boxes_3d(context.data_samples, 'UniDistill')
        keypoints, valid = batch_keypoints(boxes, low_t.device)  # [B, M, 9, 2], [B, M]
        batch = torch.arange(len(valid), device=valid.device)[:, None].expand_as(valid)
        points = metric_to_points(keypoints[valid].reshape(-1, 2), grid, batch[valid].repeat_interleave(9))
        centres = metric_to_points(keypoints[valid][:, 0], grid, batch[valid])
        mask = gaussian_bev_masks([b.to(low_t.device) for b in boxes], grid, **self.response_mask)
        return {'bev/teacher_low': low_t.abs().mean(dim=1), 'bev/teacher_low.points': points,
                'bev/teacher_high': high_t.abs().mean(dim=1), 'bev/teacher_high.points': points,
                'bev/response_mask': mask, 'bev/response_mask.points': centres}


def register(registry):
    registry.distiller(UniDistill)
