"""BEVDistill: "Cross-Modal BEV Distillation for Multi-View 3D Object Detection" (Chen et al., ICLR
2023; official code zehuichen123/BEVDistill on BEVFormer), adapted to a CenterHead BEV student.

Three terms, teacher (LiDAR) and student (camera) maps on one BEV grid:

- dense BEV feature loss under a Gaussian foreground mask ``fg [B, H, W]`` (CenterPoint's heatmap of
  the GT boxes, class-agnostic, ``min_overlap`` 0.1, ``min_radius`` 1, max-merged):
  ``L_bev = sum_{b,c,h,w} (F_S - F_T)^2 fg / sum_{b,h,w} fg`` (weight 0.01);
- sparse instance distillation: features of both maps sampled bilinearly at ``K`` instance positions
  per sample go through one projection head per side (``Linear(C, mid)``, then ``Linear(mid, mid),
  BN1d, ReLU, Linear(mid, mid)``, L2-normalised); ``logits = z_T z_S^T / 0.07`` over the ``N = B K``
  rows, cross-entropy against ``arange(N)`` (InfoNCE, weight 0.2); only the heads and the student learn;
- teacher boxes: the teacher's top ``max_teacher_boxes`` heatmap peaks (3x3 max-pool NMS, score = max
  class probability); at each peak's cell the student's regression outputs (reg, height, dim, rot, and
  vel when both heads have it) are pulled to the teacher's, L1 weighted by the teacher's score:
  ``L_box = sum_j s_j |r_S(j) - r_T(j)|_1 / (sum_j s_j * R)`` (weight 0.25, ``R`` regression channels).

What differs from the BEVFormer original (whose student is a DETR-style query detector):
- the instance positions are the student's own top-``K`` heatmap peaks (detached cell centres), where
  the original uses the centres predicted by every decoder layer's 900 queries;
- a teacher box is matched to the student's prediction at its centre cell (CenterPoint's own target
  assignment) instead of by Hungarian matching of queries (cls cost + 0.25 L1); the classification
  distillation is off in the official config and absent here;
- the distilled maps are the BEV neck outputs (the original: the outputs of an auxiliary CenterPoint
  head's shared conv on BEVFormer's ``bev_embed`` and the teacher's FPN level 0); when channels differ
  a 1x1 conv adapter maps the student's to the teacher's for the dense loss (the contrastive heads
  take each side's own channels);
- the Gaussian mask is drawn on the distilled map's grid (the head grid).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.bev import BEVGrid, sample_bev
from kdtoolbox.ops.bev_masks import gaussian_bev_masks

from .camera_common import (as_map, bind_center_heads, cell_centres, gather_cells, gt_boxes_3d, head_maps,
                            heatmap_peaks, resample_to, zero_loss)


def fg_feature_loss(feat_s: torch.Tensor, feat_t: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """``sum (F_S - F_T)^2 fg / sum fg`` (the denominator without channels); 0 when ``fg`` is empty.
    ``feat_*``: ``[B, C, H, W]``; ``fg``: ``[B, H, W]``."""
    total = fg.sum()
    if float(total) <= 0:
        return zero_loss(feat_s)
    return (((feat_s - feat_t.detach()) ** 2) * fg[:, None]).sum() / total


class ProjectionHead(nn.Sequential):
    """``Linear(in, mid)`` then ``Linear(mid, mid), BN1d(mid), ReLU, Linear(mid, mid)`` (BEVDistill's
    ``MoCoCLHead`` projection + encoder of one side); the output is L2-normalised by the loss."""

    def __init__(self, in_channels: int, mid_channels: int = 512):
        super().__init__(nn.Linear(in_channels, mid_channels), nn.Linear(mid_channels, mid_channels),
                         nn.BatchNorm1d(mid_channels), nn.ReLU(inplace=True), nn.Linear(mid_channels, mid_channels))


class InstanceContrastiveLoss(nn.Module):
    """InfoNCE between teacher and student instance features (BEVDistill's sparse instance
    distillation). ``forward(feat_s [N, C_s], feat_t [N, C_t])``: row ``i`` of both is instance ``i``;
    returns ``CE(z_T z_S^T / T, arange(N))`` (0 for ``N = 0``)."""

    def __init__(self, student_channels: int, teacher_channels: int, mid_channels: int = 512,
                 temperature: float = 0.07):
        super().__init__()
        self.student_head = ProjectionHead(student_channels, mid_channels)
        self.teacher_head = ProjectionHead(teacher_channels, mid_channels)
        self.temperature = temperature

    def logits(self, feat_s: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        z_s = F.normalize(self.student_head(feat_s), dim=1)
        z_t = F.normalize(self.teacher_head(feat_t.detach()), dim=1)
        return z_t @ z_s.t() / self.temperature

    def forward(self, feat_s: torch.Tensor, feat_t: torch.Tensor) -> torch.Tensor:
        if feat_s.shape[0] < 2:  # BN1d needs two rows; one instance has no negative either
            return zero_loss(feat_s, *[p for p in self.parameters()])
        logits = self.logits(feat_s, feat_t)
        return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def teacher_box_loss(reg_s: torch.Tensor, reg_t: torch.Tensor, hm_t: torch.Tensor,
                     max_boxes: int = 50) -> torch.Tensor:
    """``sum_j s_j |r_S(j) - r_T(j)|_1 / (sum_j s_j * R)`` over the teacher's top ``max_boxes`` peaks
    ``j`` (score ``s_j`` = max class sigmoid of ``hm_t [B, K, H, W]`` at a 3x3 local maximum);
    ``reg_*``: ``[B, R, H, W]``."""
    if reg_s.shape[1] == 0:
        return zero_loss(reg_s)
    scores, index = heatmap_peaks(torch.sigmoid(hm_t.detach()).amax(dim=1), max_boxes)
    diff = (gather_cells(reg_s, index) - gather_cells(reg_t.detach(), index)).abs().sum(dim=2)  # [B, K]
    total = scores.sum() * reg_s.shape[1]
    if float(total) <= 0:
        return zero_loss(reg_s)
    return (scores * diff).sum() / total


class BEVDistill(BaseDistiller):
    """BEVDistill's dense, instance and teacher-box distillation (module docstring).

    Args:
        student_bev, teacher_bev: modules whose output is the distilled BEV map (BEV necks).
        student_channels, teacher_channels: their channels (the contrastive heads' inputs; a 1x1
            adapter for the dense loss when they differ).
        student_head, teacher_head: CenterHead paths (None: the first found).
        bev_weight (0.01), instance_weight (0.2), box_weight (0.25): term weights (official).
        num_instances: student peaks per sample for the contrastive loss.
        mid_channels (512), temperature (0.07): the projection heads and InfoNCE.
        max_teacher_boxes: teacher peaks for the box loss (50, the official ``max_num``).
        fg_min_overlap, fg_min_radius: the foreground Gaussian (0.1, 1).
        resample: allow grids of different resolution over the same area.
    """

    def __init__(self, student_channels: int, teacher_channels: int, student_bev: str = 'bev_neck',
                 teacher_bev: str = 'pts_neck', student_head: Optional[str] = None,
                 teacher_head: Optional[str] = None, bev_weight: float = 0.01, instance_weight: float = 0.2,
                 box_weight: float = 0.25, num_instances: int = 100, mid_channels: int = 512,
                 temperature: float = 0.07, max_teacher_boxes: int = 50, fg_min_overlap: float = 0.1,
                 fg_min_radius: int = 1, resample: bool = False, init_cfg=None):
        super().__init__(student_recorders=dict(bev=student_bev), teacher_recorders=dict(bev=teacher_bev),
                         init_cfg=init_cfg)
        self.heads = (student_head, teacher_head)
        self.adapter = (nn.Conv2d(student_channels, teacher_channels, 1)
                        if student_channels != teacher_channels else None)
        self.contrastive = InstanceContrastiveLoss(student_channels, teacher_channels, mid_channels, temperature)
        self.weights = dict(bev=bev_weight, instance=instance_weight, box=box_weight)
        self.num_instances = num_instances
        self.max_teacher_boxes = max_teacher_boxes
        self.fg_mask = dict(min_overlap=fg_min_overlap, min_radius=fg_min_radius)
        self.resample = resample

    def check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        # the IoU branch is not distilled
        self.reg_names = [n for n in bind_center_heads(self, student, teacher, self.resample) if n != 'iou']

    def instance_positions(self, hm_s: torch.Tensor, grid: BEVGrid) -> torch.Tensor:
        """Metric centres ``[B, K, 2]`` of the student's top-``K`` heatmap peaks (detached)."""
        _, index = heatmap_peaks(torch.sigmoid(hm_s.detach()).amax(dim=1), self.num_instances)
        return cell_centres(index, grid)

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        grid = self.student_grid
        feat_s, feat_t = as_map(student['bev']), as_map(teacher['bev'])
        hm_s, reg_s = head_maps(student, 'head', self.num_tasks[0], self.reg_names)
        hm_t, reg_t = head_maps(teacher, 'head', self.num_tasks[1], self.reg_names)
        if self.resample:
            feat_t, hm_t, reg_t = (resample_to(t, grid.shape) for t in (feat_t, hm_t, reg_t))
        for what, m in (('student', feat_s), ('teacher', feat_t)):
            if tuple(m.shape[-2:]) != grid.shape:
                raise ValueError(f'BEVDistill: the {what} BEV map is {tuple(m.shape)}, not on the head grid '
                                 f'{grid.describe()}')
        boxes = [b.to(feat_s.device) for b in gt_boxes_3d(context.data_samples, 'BEVDistill')]
        fg = gaussian_bev_masks(boxes, grid, **self.fg_mask)
        adapted = self.adapter(feat_s) if self.adapter is not None else feat_s
        positions = self.instance_positions(hm_s, grid)  # [B, K, 2]
        inst_s = sample_bev(feat_s, positions, grid).reshape(-1, feat_s.shape[1])
        inst_t = sample_bev(feat_t, positions, grid).reshape(-1, feat_t.shape[1])
        return {
            'bevdistill.loss_bev': self.weights['bev'] * fg_feature_loss(adapted, feat_t, fg),
            'bevdistill.loss_instance': self.weights['instance'] * self.contrastive(inst_s, inst_t),
            'bevdistill.loss_box': self.weights['box'] * teacher_box_loss(reg_s, reg_t, hm_t, self.max_teacher_boxes),
        }

    def visual_maps(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        """``bev/fg_mask``: the Gaussian foreground mask of the dense loss ``[B, H, W]`` with the GT box
        centres as points; ``bev/student_score``: the student's class-agnostic heatmap probability
        ``[B, H, W]`` with the instance positions of the contrastive loss (its top-``K`` peaks) as
        points. The same functions and arguments as :meth:`forward`."""
        from kdtoolbox.visualize import metric_to_points
        grid = self.student_grid
        hm_s = head_maps(student, 'head', self.num_tasks[0], self.reg_names)[0]
        boxes = [b.to(hm_s.device) for b in gt_boxes_3d(context.data_samples, 'BEVDistill')]
        fg = gaussian_bev_masks(boxes, grid, **self.fg_mask)
        centres = torch.cat([b[:, :2] for b in boxes]).float()
        batch = torch.cat([torch.full((len(b),), i, device=hm_s.device) for i, b in enumerate(boxes)])
        positions = self.instance_positions(hm_s, grid)  # [B, K, 2]
        pos_batch = torch.arange(len(positions), device=hm_s.device).repeat_interleave(positions.shape[1])
        return {'bev/fg_mask': fg, 'bev/fg_mask.points': metric_to_points(centres, grid, batch),
                'bev/student_score': torch.sigmoid(hm_s).amax(dim=1),
                'bev/student_score.points': metric_to_points(positions.reshape(-1, 2), grid, pos_batch)}


def register(registry):
    registry.distiller(BEVDistill)
    registry.loss(InstanceContrastiveLoss)
