"""Masks and keypoints of 3D boxes on a BEV grid, shared by the BEV distillers.

Layout: :mod:`kdtoolbox.ops.bev`'s (mmdet3d's): a map on a :class:`~kdtoolbox.ops.bev.BEVGrid` is
``[B, C, H, W]`` with rows along y and columns along x; cell ``(i, j)`` has its centre at continuous
cell coordinates ``(j + 0.5, i + 0.5)``. This is CenterPoint's target convention (``center = (x -
x_min) / cx``, cell ``int(center)``, ``heatmap[y, x]``).

Boxes are mmdet3d LiDAR boxes ``[M, >=7]``: ``(x, y, z, x_size, y_size, z_size, yaw)``; ``x_size`` lies
along the heading, which is the x axis rotated counter-clockwise by ``yaw`` (mmdet3d 1.x).

Everything is vectorised over boxes (no Python loop per box), runs under ``no_grad`` on the device of
its inputs, and returns float masks.

- :func:`bev_box_keypoints`: the 9 BEV keypoints of boxes (UniDistill): centre, 4 corners, 4 edge
  midpoints, ``[M, 9, 2]`` metres.
- :func:`gaussian_bev_masks`: CenterPoint's class-agnostic Gaussian heatmap of the boxes (exactly what
  mmdet3d's ``draw_heatmap_gaussian`` draws per box, max-merged), ``[B, H, W]``.
- :func:`box_region_masks`: cells whose centre lies inside a rotated BEV box, and DistillBEV's
  foreground scale ``sqrt(cell_area / (l * w))`` (the largest over boxes covering a cell), ``[B, H, W]``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .bev import BEVGrid

__all__ = ['bev_box_keypoints', 'bev_box_corners', 'gaussian_bev_masks',
           'box_region_masks', 'boxes_tensor', 'gaussian_radii', 'KEYPOINT_NAMES']

#: order of the 9 keypoints returned by :func:`bev_box_keypoints` (box frame: +x = heading, +y = left)
KEYPOINT_NAMES = ('center', 'front_left', 'rear_left', 'rear_right', 'front_right',
                  'front', 'left', 'rear', 'right')
# (along heading, across) offsets in units of (x_size / 2, y_size / 2), same order as KEYPOINT_NAMES
_KEYPOINT_UNITS = ((0., 0.), (1., 1.), (-1., 1.), (-1., -1.), (1., -1.),
                   (1., 0.), (0., 1.), (-1., 0.), (0., -1.))


def boxes_tensor(boxes) -> Tensor:
    """The ``[M, >=7]`` tensor of mmdet3d box structures or plain tensors."""
    t = getattr(boxes, 'tensor', boxes)
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=torch.float32)
    if t.numel() == 0:
        return t.reshape(0, 7).float()
    if t.dim() != 2 or t.shape[1] < 7:
        raise ValueError(f'boxes: expected [M, >=7] (x, y, z, x_size, y_size, z_size, yaw), got {tuple(t.shape)}')
    return t


def _rotate(local: Tensor, yaw: Tensor) -> Tensor:
    """Rotate ``local [M, K, 2]`` counter-clockwise by ``yaw [M]``."""
    c, s = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    x, y = local[..., 0], local[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1)


@torch.no_grad()
def bev_box_keypoints(boxes) -> Tensor:
    """The 9 BEV keypoints of each box (UniDistill): centre, the 4 corners (front-left, rear-left,
    rear-right, front-right), the 4 edge midpoints (front, left, rear, right); ``[M, 9, 2]`` metric
    ``(x, y)`` (see :data:`KEYPOINT_NAMES`)."""
    b = boxes_tensor(boxes)
    units = b.new_tensor(_KEYPOINT_UNITS)  # [9, 2]
    half = b[:, 3:5] / 2  # [M, 2]
    local = units[None] * half[:, None]  # [M, 9, 2]
    return _rotate(local, b[:, 6]) + b[:, None, 0:2]


def bev_box_corners(boxes) -> Tensor:
    """The 4 BEV corners of each box, counter-clockwise from front-left: ``[M, 4, 2]`` metres."""
    return bev_box_keypoints(boxes)[:, 1:5]


def gaussian_radii(length: Tensor, width: Tensor, min_overlap: float) -> Tensor:
    """CornerNet's Gaussian radius of every box at once: the formula of mmdet3d's ``gaussian_radius``
    (smallest of its three roots), which takes one box at a time (it calls Python's ``min``)."""
    b1 = length + width
    c1 = width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (length + width)
    c2 = (1 - min_overlap) * width * length
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (length + width)
    c3 = (min_overlap - 1) * width * length
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def _flatten(boxes_list: Sequence) -> tuple[Tensor, Tensor]:
    """Concatenated ``[M, 7]`` boxes of a batch and the image index ``[M]`` of each."""
    tensors = [boxes_tensor(b)[:, :7] for b in boxes_list]
    if not tensors:
        raise ValueError('boxes_list: one entry per sample is needed (an empty batch has no masks)')
    device = tensors[0].device
    idx = torch.cat([torch.full((len(t),), i, dtype=torch.long, device=device) for i, t in enumerate(tensors)])
    return torch.cat([t.float().to(device) for t in tensors]), idx


@torch.no_grad()
def gaussian_bev_masks(boxes_list: Sequence, grid: BEVGrid, min_overlap: float = 0.1, min_radius: int = 2) -> Tensor:
    """CenterPoint's class-agnostic heatmap of each sample's boxes: ``[B, H, W]`` in ``[0, 1]``.

    Per box, as mmdet3d's ``CenterHead.get_targets_single`` + ``draw_heatmap_gaussian``: sizes in
    cells ``l = x_size / dx``, ``w = y_size / dy``, ``r = max(min_radius, int(gaussian_radius((l, w),
    min_overlap)))``; centre cell ``c = int((x - x_min) / dx), int((y - y_min) / dy)``; a box whose
    centre cell is off the grid, or with a non-positive size, draws nothing (as CenterHead). The box
    paints ``exp(-(di^2 + dj^2) / (2 sigma^2))``, ``sigma = (2r + 1) / 6``, on the ``(2r+1)^2`` window
    around ``c`` (values below ``eps(float64)`` of the peak dropped, as ``gaussian_2d``); overlapping
    boxes keep the maximum.

    Args:
        boxes_list: per sample ``[M_b, >=7]`` LiDAR boxes (tensors or mmdet3d box structures).
        grid: the BEV grid of the mask.
        min_overlap, min_radius: CenterHead's ``gaussian_overlap`` and ``min_radius``.
    """
    boxes, idx = _flatten(boxes_list)
    h, w = grid.shape
    out = boxes.new_zeros(len(boxes_list), h * w)
    if len(boxes) == 0:
        return out.reshape(-1, h, w)
    x0, y0 = grid.point_cloud_range[:2]
    dx, dy = grid.cell_size
    length, width = boxes[:, 3] / dx, boxes[:, 4] / dy
    radius = gaussian_radii(length, width, min_overlap).int().clamp(min=min_radius)
    center = torch.stack([(boxes[:, 0] - x0) / dx, (boxes[:, 1] - y0) / dy], dim=1).int()  # trunc, as .int()
    ok = (length > 0) & (width > 0) & (center[:, 0] >= 0) & (center[:, 0] < w) & (center[:, 1] >= 0) \
        & (center[:, 1] < h)
    boxes, idx, radius, center = boxes[ok], idx[ok], radius[ok], center[ok]
    if len(boxes) == 0:
        return out.reshape(-1, h, w)
    cols = torch.arange(w, device=boxes.device)
    rows = torch.arange(h, device=boxes.device)
    dj = (cols[None] - center[:, :1]).double()  # [M, W]
    di = (rows[None] - center[:, 1:]).double()  # [M, H]
    r = radius.double()[:, None]
    sigma = (2 * r + 1) / 6
    inside = (di.abs()[:, :, None] <= r[:, :, None]) & (dj.abs()[:, None, :] <= r[:, :, None])  # [M, H, W]
    g = torch.exp(-(di[:, :, None] ** 2 + dj[:, None, :] ** 2) / (2 * sigma[:, :, None] ** 2))
    eps = torch.finfo(torch.float64).eps
    g = torch.where(inside & (g >= eps), g, torch.zeros_like(g)).to(out.dtype)
    out.scatter_reduce_(0, idx[:, None].expand(-1, h * w), g.reshape(len(boxes), -1), reduce='amax')
    return out.reshape(-1, h, w)


@torch.no_grad()
def box_region_masks(boxes_list: Sequence, grid: BEVGrid) -> tuple[Tensor, Tensor]:
    """Cells inside the boxes, and DistillBEV's foreground scale: ``(inside [B, H, W] float 0/1,
    scale [B, H, W])``.

    A cell is inside a box when its centre is inside the box's rotated BEV rectangle (borders
    included), as DistillBEV's ``points_in_rbbox`` on cell centres. ``scale = sqrt(dx * dy / (x_size *
    y_size))`` of the box, the largest over boxes covering the cell (a small box's cells keep their
    larger weight where boxes overlap), 0 outside every box.
    """
    boxes, idx = _flatten(boxes_list)
    h, w = grid.shape
    inside = boxes.new_zeros(len(boxes_list), h * w)
    scale = boxes.new_zeros(len(boxes_list), h * w)
    valid = (boxes[:, 3] > 0) & (boxes[:, 4] > 0)
    boxes, idx = boxes[valid], idx[valid]
    if len(boxes) == 0:
        return inside.reshape(-1, h, w), scale.reshape(-1, h, w)
    x0, y0 = grid.point_cloud_range[:2]
    dx, dy = grid.cell_size
    xs = x0 + (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) * dx
    ys = y0 + (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) * dy
    cy, cx = torch.meshgrid(ys, xs, indexing='ij')
    centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)  # [HW, 2]
    rel = centres[None] - boxes[:, None, 0:2]  # [M, HW, 2]
    local = _rotate(rel, -boxes[:, 6])
    tol = 1e-5 * max(dx, dy)  # cell centres exactly on a border count as inside despite rounding
    hit = (local[..., 0].abs() <= boxes[:, 3:4] / 2 + tol) & (local[..., 1].abs() <= boxes[:, 4:5] / 2 + tol)
    box_scale = torch.sqrt(dx * dy / (boxes[:, 3] * boxes[:, 4]))  # [M]
    values = hit.to(boxes.dtype) * box_scale[:, None]
    index = idx[:, None].expand(-1, h * w)
    inside.scatter_reduce_(0, index, hit.to(boxes.dtype), reduce='amax')
    scale.scatter_reduce_(0, index, values, reduce='amax')
    return inside.reshape(-1, h, w), scale.reshape(-1, h, w)

