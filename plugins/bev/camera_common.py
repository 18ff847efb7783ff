"""What the cross-modal BEV distillers (BEVDistill, UniDistill, DistillBEV) share: the BEV grid of a
model's CenterHead, the grid check, GT boxes from the data samples, CenterHead outputs recorded per task,
and the decoded peaks of a heatmap.

Head outputs are recorded on the *leaf* convolutions of each task head
(``<head>.task_heads.<t>.<name>``), not on the head: mmdet3d's ``CenterHead.loss_by_feat`` overwrites
``preds_dict['heatmap']`` with its sigmoid in the dict the head returned, so a record of the head's
output would hold probabilities for the student (whose loss runs) and logits for the teacher (stopped
after its head). The leaves' outputs are never modified.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet3d.models.dense_heads import CenterHead

from kdtoolbox.ops.bev import BEVGrid

#: CenterHead regression outputs in mmdet3d's order (those a head has are used)
REG_HEADS = ('reg', 'height', 'dim', 'rot', 'vel', 'iou')


def find_center_head(model: nn.Module, path: Optional[str], owner: str) -> tuple[str, CenterHead]:
    """``(path, module)`` of the model's CenterHead: ``path`` if given, else the first CenterHead."""
    if path is not None:
        try:
            head = model.get_submodule(path)
        except AttributeError:
            raise KeyError(f'{owner} has no module {path!r} (the CenterHead)') from None
        if not isinstance(head, CenterHead):
            raise TypeError(f'{owner}.{path} is a {type(head).__name__}, not an mmdet3d CenterHead')
        return path, head
    for name, module in model.named_modules():
        if isinstance(module, CenterHead):
            return name, module
    raise TypeError(f'{owner} ({type(model).__name__}) has no mmdet3d CenterHead')


def head_grid(head: CenterHead, owner: str) -> BEVGrid:
    """The BEV grid of a CenterHead's maps, from its ``train_cfg`` (``point_cloud_range``,
    ``voxel_size``, ``out_size_factor``: the fields its target assignment uses)."""
    cfg = head.train_cfg or {}
    missing = [k for k in ('point_cloud_range', 'voxel_size', 'out_size_factor') if k not in cfg]
    if missing:
        raise KeyError(f'{owner}: the CenterHead train_cfg lacks {missing}, which define its BEV grid')
    return BEVGrid.from_voxel(cfg['point_cloud_range'], cfg['voxel_size'], stride=int(cfg['out_size_factor']))


def check_grids(student: BEVGrid, teacher: BEVGrid, resample: bool, what: str) -> None:
    """Refuse different grids unless ``resample`` (then the ranges must still agree)."""
    if student.same_as(teacher):
        return
    if not resample:
        student.check_same(teacher, f'student {what}', f'teacher {what}')
    if any(abs(a - b) > 1e-6 for a, b in zip(student.point_cloud_range[:2] + student.point_cloud_range[3:5],
                                              teacher.point_cloud_range[:2] + teacher.point_cloud_range[3:5])):
        raise ValueError(f'BEV grids cover different areas: student {what} {student.describe()} vs teacher '
                         f'{what} {teacher.describe()}; resampling only changes the resolution')


def resample_to(feat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Bilinear resampling of ``[B, C, H, W]`` to ``shape`` (the same metric area)."""
    if tuple(feat.shape[-2:]) == tuple(shape):
        return feat
    return F.interpolate(feat, size=tuple(shape), mode='bilinear', align_corners=False)


def as_map(value: Any) -> torch.Tensor:
    """A recorded BEV map: a tensor, or the first of a list/tuple (SECONDFPN returns ``[x]``)."""
    while isinstance(value, (list, tuple)):
        value = value[0]
    return value


def gt_boxes_3d(data_samples: Optional[Sequence[Any]], where: str) -> list[torch.Tensor]:
    """Each sample's ``gt_instances_3d.bboxes_3d`` as a ``[M, >=7]`` tensor."""
    if not data_samples:
        raise ValueError(f'{where}: the data samples (gt_instances_3d) are needed in the context')
    out = []
    for i, sample in enumerate(data_samples):
        gt = getattr(sample, 'gt_instances_3d', None)
        if gt is None or 'bboxes_3d' not in gt:
            raise KeyError(f'{where}: data sample {i} has no gt_instances_3d.bboxes_3d')
        out.append(getattr(gt.bboxes_3d, 'tensor', gt.bboxes_3d))
    return out


def head_recorders(path: str, head: CenterHead, prefix: str) -> tuple[dict, list[str]]:
    """Recorders ``{prefix}{t}.{name}: path.task_heads.<t>.<name>`` of every task's heatmap and
    regression convs, and the regression names (:data:`REG_HEADS` order) every task has."""
    recorders, common = {}, None
    for t, task in enumerate(head.task_heads):
        names = [n for n in ('heatmap',) + REG_HEADS if hasattr(task, n)]
        for n in names:
            recorders[f'{prefix}{t}.{n}'] = f'{path}.task_heads.{t}.{n}'
        regs = [n for n in names if n != 'heatmap']
        common = regs if common is None else [n for n in common if n in regs]
    return recorders, list(common or [])


def bind_center_heads(distiller, student: nn.Module, teacher: nn.Module, resample: bool) -> list[str]:
    """Find both models' CenterHeads (``distiller.heads`` = (student path, teacher path), None: the
    only one), check their BEV grids agree (or ``resample``), add recorders ``head<t>.<name>`` of
    every task's heatmap and regression convs on both sides, and set ``distiller.student_grid``,
    ``teacher_grid`` and ``num_tasks``. Returns the regression names both heads have."""
    s_path, s_head = find_center_head(student, distiller.heads[0], 'student')
    t_path, t_head = find_center_head(teacher, distiller.heads[1], 'teacher')
    distiller.student_grid, distiller.teacher_grid = head_grid(s_head, 'student'), head_grid(t_head, 'teacher')
    check_grids(distiller.student_grid, distiller.teacher_grid, resample, f'CenterHead ({s_path} / {t_path})')
    s_rec, s_regs = head_recorders(s_path, s_head, 'head')
    t_rec, t_regs = head_recorders(t_path, t_head, 'head')
    distiller.student_recorders.update(s_rec)
    distiller.teacher_recorders.update(t_rec)
    distiller.num_tasks = (len(s_head.task_heads), len(t_head.task_heads))
    return [n for n in s_regs if n in t_regs]


def head_maps(records, prefix: str, num_tasks: int, reg_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated heatmap logits ``[B, K_all, H, W]`` and regression maps ``[B, R, H, W]`` of all tasks."""
    hm = torch.cat([records[f'{prefix}{t}.heatmap'] for t in range(num_tasks)], dim=1)
    reg = torch.cat([records[f'{prefix}{t}.{n}'] for t in range(num_tasks) for n in reg_names], dim=1) \
        if reg_names else hm.new_zeros(hm.shape[0], 0, *hm.shape[2:])
    return hm, reg


@torch.no_grad()
def heatmap_peaks(scores: torch.Tensor, k: int, kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` local maxima of a class-agnostic score map ``[B, H, W]`` (CenterPoint's decoding:
    ``kernel x kernel`` max-pool NMS): ``(score [B, k], flat index [B, k])`` (``k`` capped at ``H*W``)."""
    b, h, w = scores.shape
    pooled = F.max_pool2d(scores[:, None], kernel, stride=1, padding=kernel // 2)[:, 0]
    kept = torch.where(pooled == scores, scores, torch.zeros_like(scores))
    return kept.reshape(b, -1).topk(min(k, h * w), dim=1)


def cell_centres(index: torch.Tensor, grid: BEVGrid) -> torch.Tensor:
    """Metric ``(x, y)`` ``[..., 2]`` of the centres of flat cell indices ``row * W + col``."""
    w = grid.shape[1]
    col, row = (index % w).to(torch.float32), torch.div(index, w, rounding_mode='floor').to(torch.float32)
    x0, y0 = grid.point_cloud_range[:2]
    cx, cy = grid.cell_size
    return torch.stack([x0 + (col + 0.5) * cx, y0 + (row + 0.5) * cy], dim=-1)


def gather_cells(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``maps [B, C, H, W]`` at flat cell indices ``[B, K]``: ``[B, K, C]``."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return flat.gather(2, index[:, None, :].expand(-1, c, -1)).transpose(1, 2)


def grid_of_map(feat: torch.Tensor, grid: BEVGrid) -> BEVGrid:
    """The grid of a map covering ``grid``'s area at the map's own resolution (a backbone stage at
    stride 2 of the head's grid, say)."""
    h, w = int(feat.shape[-2]), int(feat.shape[-1])
    if (h, w) == grid.shape:
        return grid
    x0, y0, _, x1, y1, _ = grid.point_cloud_range
    return BEVGrid(grid.point_cloud_range, ((x1 - x0) / w, (y1 - y0) / h), (h, w))


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that depends on ``tensors`` (every parameter that produced them gets a gradient, so DDP
    sees them used even in a batch without boxes)."""
    return sum(t.sum() * 0. for t in tensors)


def clip_sigmoid(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``clamp(sigmoid(x), eps, 1 - eps)``: mmdet3d's ``clip_sigmoid`` without its in-place
    ``sigmoid_`` (which would overwrite a recorded map that autograd still needs)."""
    return torch.clamp(torch.sigmoid(x), min=eps, max=1 - eps)
