"""A lift-splat-shoot view transformer onto a given BEV grid (the LiDAR teacher's).

Lift: a 1x1 conv on each camera's image feature ``[B*N, C_in, h, w]`` predicts ``D`` depth logits and
``C`` context channels per pixel; the depth distribution (softmax over the ``D`` bins) times the
context gives a frustum of features ``[B, N, D, h, w, C]``.

Geometry: feature pixel ``(i, j)`` is the image point ``u = (j + 0.5) * W_img / w``,
``v = (i + 0.5) * H_img / h`` (continuous pixel coordinates, pixel ``k`` spanning ``[k, k+1)``); bin
``k`` is the depth ``d_k = d_min + (k + 0.5) * step`` (bin centres of ``depth_bins = (d_min, d_max,
step)``). Un-projection to the (augmented) LiDAR frame uses the calibration in each data sample's
metainfo: ``p_cam = d * K^-1 [u', v', 1]`` with ``[u', v']`` the point before image augmentation
(``img_aug_matrix`` ``[N, 4, 4]`` when present: a 2-D affine in its top-left block), ``K = cam2img``
(``[N, 3, 3]`` or ``[N, 4, 4]``), ``p_lidar = lidar2cam^-1 p_cam`` and
``p = lidar_aug_matrix p_lidar`` (the BEV augmentation applied to the points and boxes, identity
when absent), so that the student lifts into exactly the frame the LiDAR teacher sees.

Splat: each frustum point falls in the grid cell ``points_to_bev_cells`` gives (rows = y, columns =
x, z inside the range); the features of the points of a cell are summed (sum pooling, one
``index_add`` for the whole batch: vectorised, on the device of the input, no Python loop over
cameras or points); points off the grid are dropped. Output ``[B, C, H, W]``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from kdtoolbox.ops.bev import BEVGrid, points_to_bev_cells


def _matrices(metas: Sequence[dict], key: str, num_views: int, device, default: Optional[np.ndarray] = None,
              per_view: bool = True) -> torch.Tensor:
    """``metas[b][key]`` stacked to ``[B, N, 4, 4]`` (``per_view``) or ``[B, 4, 4]``, 3x3 padded to 4x4."""
    out = []
    for b, meta in enumerate(metas):
        value = meta.get(key, default)
        if value is None:
            raise KeyError(f'LSSViewTransformer: data sample {b} has no {key!r} in its metainfo (the pipeline '
                           f'must carry the camera calibration, see kdtoolbox.datasets.multimodal_scenes)')
        arr = np.asarray(value if not isinstance(value, torch.Tensor) else value.cpu().numpy(), dtype=np.float64)
        if per_view and arr.ndim == 2:  # one matrix for every view (e.g. a default)
            arr = np.broadcast_to(arr, (num_views,) + arr.shape)
        arr = arr.reshape((num_views,) + arr.shape[-2:]) if per_view else arr.reshape(arr.shape[-2:])
        pad = np.zeros(arr.shape[:-2] + (4, 4))
        pad[..., :, :] = np.eye(4)
        pad[..., :arr.shape[-2], :arr.shape[-1]] = arr
        out.append(pad)
    return torch.as_tensor(np.stack(out), dtype=torch.float32, device=device)


class LSSViewTransformer(nn.Module):
    """Depth-distribution view transformer (module docstring).

    Args:
        in_channels: image feature channels.
        out_channels: BEV channels ``C``.
        grid: the target grid: a :class:`BEVGrid` or ``dict(point_cloud_range=..., voxel_size=...,
            stride=1)`` (:meth:`BEVGrid.from_voxel`, so it can be written like the teacher's voxel
            config).
        depth_bins: ``(d_min, d_max, step)`` metres.
    """

    def __init__(self, in_channels: int, out_channels: int, grid: Any,
                 depth_bins: Sequence[float] = (1.0, 41.0, 1.0)):
        super().__init__()
        if isinstance(grid, BEVGrid):
            self.grid = grid
        else:
            grid = dict(grid)
            self.grid = BEVGrid.from_voxel(grid['point_cloud_range'], grid['voxel_size'], int(grid.get('stride', 1)))
        d_min, d_max, step = (float(v) for v in depth_bins)
        if not (d_max > d_min > 0 and step > 0):
            raise ValueError(f'LSSViewTransformer: depth_bins must be (d_min > 0, d_max > d_min, step > 0), '
                             f'got {tuple(depth_bins)}')
        self.register_buffer('depths', torch.arange(d_min + step / 2, d_max, step), persistent=False)
        self.out_channels = out_channels
        self.depthnet = nn.Conv2d(in_channels, len(self.depths) + out_channels, kernel_size=1)

    @property
    def num_bins(self) -> int:
        return len(self.depths)

    def geometry(self, metas: Sequence[dict], num_views: int, feat_hw: Sequence[int],
                 img_hw: Sequence[int], device) -> torch.Tensor:
        """Metric position of every frustum point in the augmented LiDAR frame: ``[B, N, D, h, w, 3]``,
        float32 also under autocast (``--amp``): fp16 (CUDA) rounds pixel coordinates of 512-1024 to
        0.5 px and bf16 (CPU) to 4 px, and the lifted points land in other BEV cells (about 4 % of
        them in fp16 and 19 % in bf16 with the cameras of tests/test_camera_bev.py)."""
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            return self._geometry(metas, num_views, feat_hw, img_hw, device)

    def _geometry(self, metas: Sequence[dict], num_views: int, feat_hw: Sequence[int],
                  img_hw: Sequence[int], device) -> torch.Tensor:
        h, w = int(feat_hw[0]), int(feat_hw[1])
        img_h, img_w = float(img_hw[0]), float(img_hw[1])
        u = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (img_w / w)
        v = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (img_h / h)
        vv, uu = torch.meshgrid(v, u, indexing='ij')
        pix = torch.stack([uu, vv, torch.ones_like(uu), torch.ones_like(uu)], dim=-1)  # [h, w, 4]
        cam2img = _matrices(metas, 'cam2img', num_views, device)
        lidar2cam = _matrices(metas, 'lidar2cam', num_views, device)
        img_aug = _matrices(metas, 'img_aug_matrix', num_views, device, default=np.eye(4))
        lidar_aug = _matrices(metas, 'lidar_aug_matrix', num_views, device, default=np.eye(4), per_view=False)
        # undo the image augmentation, then K^-1: a ray direction per pixel with unit depth
        rays = torch.einsum('bnij,hwj->bnhwi', torch.linalg.inv(img_aug), pix)[..., :3]
        rays = torch.einsum('bnij,bnhwj->bnhwi', torch.linalg.inv(cam2img[..., :3, :3]), rays)
        pts = rays[:, :, None] * self.depths.to(device)[None, None, :, None, None, None]  # [B, N, D, h, w, 3]
        pts = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)
        cam2aug = lidar_aug[:, None] @ torch.linalg.inv(lidar2cam)  # [B, N, 4, 4]
        return torch.einsum('bnij,bndhwj->bndhwi', cam2aug, pts)[..., :3]

    def splat(self, volume: torch.Tensor, geom: torch.Tensor) -> torch.Tensor:
        """Sum-pool frustum features ``volume [B, N, D, h, w, C]`` at positions ``geom [B, N, D, h, w, 3]``
        into the grid: ``[B, C, H, W]``."""
        b, c = volume.shape[0], volume.shape[-1]
        height, width = self.grid.shape
        row, col, valid = points_to_bev_cells(geom.reshape(-1, 3), self.grid)
        batch = torch.arange(b, device=volume.device).repeat_interleave(geom[0, ..., 0].numel())
        index = (batch * height + row) * width + col
        feats = volume.reshape(-1, c)
        bev = volume.new_zeros(b * height * width, c)
        bev = bev.index_add(0, index[valid], feats[valid])
        return bev.reshape(b, height, width, c).permute(0, 3, 1, 2).contiguous()

    def forward(self, feats: torch.Tensor, metas: Sequence[dict], img_hw: Sequence[int]) -> torch.Tensor:
        """``feats [B, N, C_in, h, w]`` of ``N`` cameras whose images are ``img_hw`` (the padded batch
        input): the BEV map ``[B, C, H, W]``."""
        b, n, _, h, w = feats.shape
        x = self.depthnet(feats.flatten(0, 1))
        depth = x[:, :self.num_bins].softmax(dim=1)  # [B*N, D, h, w]
        context = x[:, self.num_bins:]  # [B*N, C, h, w]
        volume = depth[:, :, None] * context[:, None]  # [B*N, D, C, h, w]
        volume = volume.reshape(b, n, self.num_bins, self.out_channels, h, w).permute(0, 1, 2, 4, 5, 3)
        geom = self.geometry(metas, n, (h, w), img_hw, feats.device)
        return self.splat(volume, geom)
