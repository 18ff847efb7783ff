"""Bird's-eye-view (BEV) grids, the one axis convention every BEV loss in kdtoolbox uses.

Convention (mmdet3d's): a BEV map is ``[B, C, H, W]`` with **rows = y and columns = x**. Cell
``(row, col)`` covers ``x in [x_min + col*cx, x_min + (col+1)*cx)`` and
``y in [y_min + row*cy, y_min + (row+1)*cy)``; its centre is ``x_min + (col + 0.5)*cx``. This is the
layout of ``SparseEncoder``'s output (``dense().view(N, C*D, H, W)`` with voxel coors ``(b, z, y, x)``),
of ``PointPillarsScatter``'s canvas and of ``CenterHead``'s heatmaps (``heatmap[y, x]``, centre cell
``int((x - x_min) / (voxel_x * stride))``).

Continuous cell coordinates (:func:`metric_to_grid`): ``col = (x - x_min) / cx`` and
``row = (y - y_min) / cy``, so cell ``c`` spans ``[c, c+1)`` and ``floor`` gives its index.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from .sparse_imitation import sparse_to_dense

__all__ = ['BEVGrid', 'sparse_to_bev', 'metric_to_grid', 'sample_bev', 'points_to_bev_cells']


@dataclass(frozen=True)
class BEVGrid:
    """A BEV grid: which metric area a ``[.., H, W]`` map covers and how.

    Attributes:
        point_cloud_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres (mmdet3d order).
        cell_size: ``(cx, cy)`` metres per column / row.
        shape: ``(H, W)`` rows (y) and columns (x).
    """
    point_cloud_range: Tuple[float, float, float, float, float, float]
    cell_size: Tuple[float, float]
    shape: Tuple[int, int]

    def __post_init__(self):
        pcr = tuple(float(v) for v in self.point_cloud_range)
        cell = tuple(float(v) for v in self.cell_size)
        shape = tuple(int(v) for v in self.shape)
        if len(pcr) != 6 or pcr[3] <= pcr[0] or pcr[4] <= pcr[1]:
            raise ValueError(f'BEVGrid.point_cloud_range must be (x_min, y_min, z_min, x_max, y_max, z_max) '
                             f'with max > min, got {self.point_cloud_range}')
        if len(cell) != 2 or min(cell) <= 0 or len(shape) != 2 or min(shape) <= 0:
            raise ValueError(f'BEVGrid needs cell_size (cx, cy) > 0 and shape (H, W) > 0, got '
                             f'cell_size={self.cell_size}, shape={self.shape}')
        object.__setattr__(self, 'point_cloud_range', pcr)
        object.__setattr__(self, 'cell_size', cell)
        object.__setattr__(self, 'shape', shape)

    @classmethod
    def from_voxel(cls, point_cloud_range: Sequence[float], voxel_size: Sequence[float],
                   stride: int = 1) -> 'BEVGrid':
        """The grid of a voxel/pillar model's BEV map at ``stride`` (e.g. 8 for SparseEncoder's output).

        Cells are ``voxel_size[:2] * stride``; ``(H, W) = ceil(round(range / voxel) / stride)`` (a
        stride-2 sparse conv with padding 1 gives ``ceil(n / 2)``).
        """
        pcr = [float(v) for v in point_cloud_range]
        vx, vy = float(voxel_size[0]), float(voxel_size[1])
        nx = round((pcr[3] - pcr[0]) / vx)
        ny = round((pcr[4] - pcr[1]) / vy)
        return cls(tuple(pcr), (vx * stride, vy * stride), (math.ceil(ny / stride), math.ceil(nx / stride)))

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    def same_as(self, other: 'BEVGrid', rel_tol: float = 1e-6) -> bool:
        """Equal shape, and range and cell size equal within ``rel_tol`` (float config noise)."""
        if not isinstance(other, BEVGrid) or self.shape != other.shape:
            return False
        close = [math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9) for a, b in
                 zip(self.point_cloud_range + self.cell_size, other.point_cloud_range + other.cell_size)]
        return all(close)

    def check_same(self, other: 'BEVGrid', what_self: str = 'student', what_other: str = 'teacher') -> None:
        """Raise ValueError naming both grids when they differ."""
        if not self.same_as(other):
            raise ValueError(f'BEV grids differ: {what_self} {self.describe()} vs {what_other} '
                             f'{other.describe() if isinstance(other, BEVGrid) else other!r}; resample one '
                             f'explicitly (e.g. an adapter with a resize) or configure equal grids')

    def describe(self) -> str:
        x0, y0, _, x1, y1, _ = self.point_cloud_range
        return (f'BEVGrid(H={self.shape[0]}, W={self.shape[1]}, cell=({self.cell_size[0]:g}, '
                f'{self.cell_size[1]:g}) m, x=[{x0:g}, {x1:g}], y=[{y0:g}, {y1:g}])')


def sparse_to_bev(features: torch.Tensor, indices: torch.Tensor, spatial_shape: Sequence[int], batch_size: int,
                  reduce: str = 'sum') -> torch.Tensor:
    """Collapse sparse voxel features along z into a BEV map.

    Args:
        features: ``[N, C]``; indices: ``[N, 4]`` (b, z, y, x); spatial_shape: ``(D, H, W)``.
        reduce: over the voxels of one BEV cell: 'sum', 'mean' (of the active voxels), 'max' (empty
            cells 0; ties share the gradient), or 'concat_z': mmdet3d ``SparseEncoder``'s
            ``dense().view(B, C*D, H, W)`` (channel ``c*D + z``).

    Returns:
        ``[B, C, H, W]`` (``[B, C*D, H, W]`` for 'concat_z'), differentiable w.r.t. ``features``.
        Memory: the output only, except 'concat_z' (the dense ``[B, C, D, H, W]``, i.e. the output).
    """
    D, H, W = (int(s) for s in spatial_shape)
    B, C = int(batch_size), features.shape[1]
    if reduce == 'concat_z':
        return sparse_to_dense(features, indices, (D, H, W), B).reshape(B, C * D, H, W)
    if reduce not in ('sum', 'mean', 'max'):
        raise ValueError(f"sparse_to_bev reduce must be 'sum', 'mean', 'max' or 'concat_z', got {reduce!r}")
    idx = indices.long()
    cell = (idx[:, 0] * H + idx[:, 2]) * W + idx[:, 3]
    out = features.new_zeros((B * H * W, C))
    if features.shape[0]:
        if reduce == 'sum':
            out = out.index_add(0, cell, features)
        else:
            op = 'mean' if reduce == 'mean' else 'amax'
            out = out.scatter_reduce(0, cell[:, None].expand(-1, C), features, op, include_self=False)
    return out.view(B, H, W, C).permute(0, 3, 1, 2)


def metric_to_grid(xy: torch.Tensor, grid: BEVGrid) -> Tuple[torch.Tensor, torch.Tensor]:
    """Metric ``xy [..., 2]`` (metres) to continuous cell coordinates ``(col, row)`` (each ``[...]``).

    ``col = (x - x_min) / cx``, ``row = (y - y_min) / cy``: cell ``c`` spans ``[c, c+1)``, its centre
    is ``c + 0.5``.
    """
    x_min, y_min = grid.point_cloud_range[0], grid.point_cloud_range[1]
    cx, cy = grid.cell_size
    return (xy[..., 0] - x_min) / cx, (xy[..., 1] - y_min) / cy


def sample_bev(bev: torch.Tensor, xy: torch.Tensor, grid: BEVGrid, align_corners: bool = False) -> torch.Tensor:
    """Bilinear BEV features at metric points.

    Args:
        bev: ``[B, C, H, W]`` on ``grid`` (rows = y, columns = x).
        xy: ``[B, N, 2]`` metres (x, y).
        align_corners: False (right for voxel/pillar maps): a point at a cell's centre gets that cell's
            value exactly; ``F.grid_sample`` gets ``grid[..., 0] = 2*col/W - 1`` (x) and
            ``grid[..., 1] = 2*row/H - 1`` (y). True reproduces code that normalises
            ``2*(x - x_min)/(x_max - x_min) - 1`` with ``align_corners=True``: the range ends are the
            centres of the first and last cells, a shift of up to half a cell.

    Returns:
        ``[B, N, C]``; points outside the map (beyond the outer cell centres' bilinear support) get
        zeros (``padding_mode='zeros'``). Differentiable w.r.t. ``bev``.
    """
    if bev.dim() != 4 or tuple(bev.shape[-2:]) != grid.shape:
        raise ValueError(f'sample_bev: BEV map {tuple(bev.shape)} does not match {grid.describe()} '
                         f'(expected [B, C, {grid.shape[0]}, {grid.shape[1]}])')
    if xy.dim() != 3 or xy.shape[-1] != 2 or xy.shape[0] != bev.shape[0]:
        raise ValueError(f'sample_bev: xy must be [B={bev.shape[0]}, N, 2] metres, got {tuple(xy.shape)}')
    H, W = grid.shape
    xy = xy.to(bev.dtype)
    if align_corners:
        x0, y0, _, x1, y1, _ = grid.point_cloud_range
        gx, gy = 2 * (xy[..., 0] - x0) / (x1 - x0) - 1, 2 * (xy[..., 1] - y0) / (y1 - y0) - 1
    else:
        col, row = metric_to_grid(xy, grid)
        gx, gy = 2 * col / W - 1, 2 * row / H - 1
    norm = torch.stack([gx, gy], dim=-1)[:, None]  # [B, 1, N, 2]
    out = F.grid_sample(bev, norm, mode='bilinear', padding_mode='zeros', align_corners=align_corners)
    return out[:, :, 0].transpose(1, 2)


def points_to_bev_cells(xyz: torch.Tensor, grid: BEVGrid) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BEV cell of each point.

    Args:
        xyz: ``[N, 2]`` or ``[N, >=3]`` metres.

    Returns:
        ``(row [N], col [N], valid [N] bool)``: ``row = floor((y - y_min)/cy)``,
        ``col = floor((x - x_min)/cx)`` (int64, unclipped); ``valid`` when the cell is on the grid and,
        for 3-D points, ``z_min <= z < z_max``.
    """
    col_f, row_f = metric_to_grid(xyz[:, :2], grid)
    col, row = torch.floor(col_f).long(), torch.floor(row_f).long()
    H, W = grid.shape
    valid = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    if xyz.shape[1] >= 3:
        z = xyz[:, 2]
        valid &= (z >= grid.point_cloud_range[2]) & (z < grid.point_cloud_range[5])
    return row, col, valid
