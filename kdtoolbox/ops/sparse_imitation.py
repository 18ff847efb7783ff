"""Sparse (voxel-level) feature imitation between a teacher's and a student's sparse tensors.

A sparse tensor here is spconv's ``SparseConvTensor`` or the small :class:`SparseFeatures` (same four
fields; tests and ops need no spconv): ``features [N, C]`` float, ``indices [N, 4]`` int32/int64 rows
``(b, z, y, x)`` (mmdet3d's voxel ``coors`` order), ``spatial_shape (D, H, W)`` (z, y, x sizes) and
``batch_size``. Nothing here imports spconv.

Sites are compared by a linear key ``((b*D + z)*H + y)*W + x`` (int64), never by row order: a
``sort`` of the teacher's keys and a ``searchsorted`` of the student's find the common active sites
in O((N_s + N_t) log N_t) time and O(N_s + N_t) memory, without densifying. This is robust to voxels
shuffled between the two tensors and to ``max_voxels`` truncation (a site active in only one of them
is left out).

When the grids differ (:func:`gather_matched_features`):
- the student's grid is coarser by integer ratios ``(rz, ry, rx)`` (the teacher's voxel size times the
  ratio, same point-cloud range): the teacher's features are averaged onto the student's grid
  (scatter-mean of the teacher sites ``(b, z//rz, y//ry, x//rx)``), then matched by key;
- otherwise: the teacher is densified to ``[B, C, D_t, H_t, W_t]`` and resampled to the student's
  ``(D_s, H_s, W_s)`` (trilinear, ``align_corners=False``: both grids cover the same range, so cell
  centres line up), and read at the student's active sites. This costs ``B*C*D_t*H_t*W_t`` memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['SparseFeatures', 'as_sparse_features', 'linear_keys', 'match_active_sites',
           'pool_to_coarser_grid', 'sparse_to_dense', 'densify_and_resample', 'gather_matched_features',
           'sparse_imitation_loss']


@dataclass
class SparseFeatures:
    """The four fields of a spconv ``SparseConvTensor`` that the ops use.

    Attributes:
        features: ``[N, C]`` float.
        indices: ``[N, 4]`` int (b, z, y, x).
        spatial_shape: ``(D, H, W)``.
        batch_size: B.
    """
    features: torch.Tensor
    indices: torch.Tensor
    spatial_shape: Tuple[int, int, int]
    batch_size: int

    def __post_init__(self):
        self.spatial_shape = tuple(int(s) for s in self.spatial_shape)
        self.batch_size = int(self.batch_size)
        if len(self.spatial_shape) != 3:
            raise ValueError(f'SparseFeatures.spatial_shape must be (D, H, W), got {self.spatial_shape}')
        if self.features.dim() != 2 or self.indices.dim() != 2 or self.indices.shape[1] != 4 \
                or self.indices.shape[0] != self.features.shape[0]:
            raise ValueError(f'SparseFeatures needs features [N, C] and indices [N, 4] (b, z, y, x); got '
                             f'features {tuple(self.features.shape)}, indices {tuple(self.indices.shape)}')

    def dense(self) -> torch.Tensor:
        """``[B, C, D, H, W]``, as spconv's ``SparseConvTensor.dense()``."""
        return sparse_to_dense(self.features, self.indices, self.spatial_shape, self.batch_size)


def as_sparse_features(x, name: str = 'sparse tensor') -> SparseFeatures:
    """A :class:`SparseFeatures` view of a spconv ``SparseConvTensor`` (or of a ``SparseFeatures``)."""
    if isinstance(x, SparseFeatures):
        return x
    if all(hasattr(x, a) for a in ('features', 'indices', 'spatial_shape', 'batch_size')):
        return SparseFeatures(x.features, x.indices, tuple(x.spatial_shape), x.batch_size)
    raise TypeError(f'{name}: expected a spconv SparseConvTensor or kdtoolbox SparseFeatures, got '
                    f'{type(x).__name__}')


def _shape3(spatial_shape, what: str = 'spatial_shape') -> Tuple[int, int, int]:
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f'{what} must be three positive sizes (D, H, W), got {tuple(spatial_shape)}')
    return shape


def linear_keys(indices: torch.Tensor, spatial_shape: Sequence[int], check: bool = True) -> torch.Tensor:
    """Linear site keys ``((b*D + z)*H + y)*W + x``.

    Args:
        indices: ``[N, 4]`` int (b, z, y, x).
        spatial_shape: ``(D, H, W)``.
        check: raise when a coordinate is outside ``[0, size)`` (such keys would alias other sites;
            costs one host-device synchronisation).

    Returns:
        ``[N]`` int64 keys on the device of ``indices``; equal keys <=> equal sites.
    """
    D, H, W = _shape3(spatial_shape)
    if indices.dim() != 2 or indices.shape[1] != 4:
        raise ValueError(f'indices must be [N, 4] (b, z, y, x), got {tuple(indices.shape)}')
    idx = indices.long()
    if check and idx.numel():
        bounds = torch.tensor([torch.iinfo(torch.int64).max // (D * H * W), D, H, W], device=idx.device)
        bad = ((idx < 0) | (idx >= bounds)).any(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f'indices row {row} = {idx[row].tolist()} (b, z, y, x) is outside the spatial '
                             f'shape (D, H, W) = {(D, H, W)}')
    b, z, y, x = idx.unbind(1)
    return ((b * D + z) * H + y) * W + x


def _keys_to_indices(keys: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    D, H, W = spatial_shape
    x = keys % W
    rest = keys // W
    y = rest % H
    rest = rest // H
    return torch.stack([rest // D, rest % D, y, x], dim=1)


def match_active_sites(student_indices: torch.Tensor, teacher_indices: torch.Tensor,
                       spatial_shape: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of the student and the teacher that are the same active site.

    Args:
        student_indices: ``[N_s, 4]`` (b, z, y, x); teacher_indices: ``[N_t, 4]``; one grid ``(D, H, W)``.

    Returns:
        ``(student_rows [M], teacher_rows [M])`` int64, student rows ascending:
        ``student_indices[student_rows] == teacher_indices[teacher_rows]``. Sites active in only one
        tensor are left out. Duplicate student sites each get the teacher's row.

    Raises:
        ValueError: the teacher has a site twice (its match would be ambiguous).
    """
    device = student_indices.device
    ks = linear_keys(student_indices, spatial_shape)
    kt = linear_keys(teacher_indices.to(device), spatial_shape)
    if kt.numel() == 0 or ks.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    kt_sorted, order = torch.sort(kt)
    dup = kt_sorted[1:] == kt_sorted[:-1]
    if bool(dup.any()):
        key = kt_sorted[1:][dup][:1]
        site = _keys_to_indices(key, _shape3(spatial_shape))[0].tolist()
        raise ValueError(f'teacher sparse tensor has duplicate active sites (e.g. (b, z, y, x) = {site}, '
                         f'{int(dup.sum())} duplicates): matching teacher to student sites needs unique '
                         f'teacher sites')
    pos = torch.searchsorted(kt_sorted, ks).clamp_(max=kt_sorted.numel() - 1)
    hit = kt_sorted[pos] == ks
    student_rows = hit.nonzero().squeeze(1)
    return student_rows, order[pos[student_rows]]


def pool_to_coarser_grid(indices: torch.Tensor, features: torch.Tensor, ratio: Sequence[int],
                         coarse_shape: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Average sparse features onto a grid coarser by integer ratios (scatter-mean).

    Site ``(b, z, y, x)`` goes to ``(b, z // rz, y // ry, x // rx)``; each coarse site gets the mean of
    the features of the fine sites in it (the empty fine sites do not count).

    Args:
        indices: ``[N, 4]`` (b, z, y, x) on the fine grid; features: ``[N, C]``.
        ratio: ``(rz, ry, rx)`` positive ints; coarse_shape: ``(D', H', W')`` of the coarse grid.

    Returns:
        ``(coarse_indices [K, 4] int64 in ascending key order, pooled [K, C])``, differentiable w.r.t.
        ``features``.

    Raises:
        ValueError: a fine site falls outside ``coarse_shape`` (the shapes and ratio do not agree).
    """
    ratio = tuple(int(r) for r in ratio)
    if len(ratio) != 3 or min(ratio) <= 0:
        raise ValueError(f'ratio must be three positive ints (rz, ry, rx), got {ratio}')
    coarse_shape = _shape3(coarse_shape, 'coarse_shape')
    if features.dim() != 2 or features.shape[0] != indices.shape[0]:
        raise ValueError(f'features must be [N, C] with N = {indices.shape[0]} rows of indices, got '
                         f'{tuple(features.shape)}')
    idx = indices.long()
    coarse = torch.cat([idx[:, :1], idx[:, 1:] // torch.tensor(ratio, device=idx.device)], dim=1)
    try:
        keys = linear_keys(coarse, coarse_shape)
    except ValueError as exc:
        raise ValueError(f'pool_to_coarser_grid: ratio {ratio} maps a site outside coarse_shape '
                         f'{coarse_shape}: {exc}') from None
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    sums = features.new_zeros((uniq.numel(), features.shape[1])).index_add_(0, inverse, features)
    counts = torch.bincount(inverse, minlength=uniq.numel()).clamp_(min=1).to(features.dtype)
    return _keys_to_indices(uniq, coarse_shape), sums / counts[:, None]


def sparse_to_dense(features: torch.Tensor, indices: torch.Tensor, spatial_shape: Sequence[int],
                    batch_size: int) -> torch.Tensor:
    """Scatter sparse features into a dense ``[B, C, D, H, W]`` (zeros elsewhere; duplicates summed).

    Equal to spconv's ``SparseConvTensor.dense()`` for unique sites; differentiable w.r.t.
    ``features``. Memory: ``B*C*D*H*W`` elements of ``features.dtype``.
    """
    D, H, W = _shape3(spatial_shape)
    C = features.shape[1]
    out = features.new_zeros((int(batch_size), D, H, W, C))
    if features.shape[0]:
        b, z, y, x = indices.long().unbind(1)
        out = out.index_put((b, z, y, x), features, accumulate=True)
    return out.permute(0, 4, 1, 2, 3)


def densify_and_resample(sparse_tensor, target_shape: Sequence[int], mode: str = 'trilinear') -> torch.Tensor:
    """Densify a sparse tensor and resample it to another grid over the same range.

    Args:
        sparse_tensor: SparseConvTensor or :class:`SparseFeatures` on ``(D, H, W)``.
        target_shape: ``(D', H', W')``.
        mode: 'trilinear' (``F.interpolate``, ``align_corners=False``: cell centres of both grids are
            placed on the same physical range; inactive cells count as zeros) or 'nearest'.

    Returns:
        ``[B, C, D', H', W']``, differentiable w.r.t. the features.
    """
    if mode not in ('trilinear', 'nearest'):
        raise ValueError(f"densify_and_resample mode must be 'trilinear' or 'nearest', got {mode!r}")
    sp = as_sparse_features(sparse_tensor)
    target_shape = _shape3(target_shape, 'target_shape')
    dense = sp.dense()
    if tuple(sp.spatial_shape) == target_shape:
        return dense
    kwargs = dict(align_corners=False) if mode == 'trilinear' else {}
    return F.interpolate(dense, size=target_shape, mode=mode, **kwargs)


def _integer_ratio(fine: Sequence[int], coarse: Sequence[int]) -> Optional[Tuple[int, int, int]]:
    if all(f % c == 0 for f, c in zip(fine, coarse)):
        return tuple(f // c for f, c in zip(fine, coarse))
    return None


def gather_matched_features(student, teacher, ratio: Optional[Sequence[int]] = None,
                            mode: str = 'trilinear') -> Tuple[torch.Tensor, torch.Tensor, dict]:
    """Student and teacher features at the student's active sites that the teacher can supply.

    Args:
        student, teacher: SparseConvTensor or :class:`SparseFeatures` (same batch size and point-cloud
            range; channels may differ).
        ratio: ``(rz, ry, rx)`` of teacher cells per student cell; default: inferred when every teacher
            size is a multiple of the student's. Given explicitly, ``ceil(teacher_shape / ratio)`` must
            equal the student's shape (odd grids downsampled with padding, e.g. 41 -> 21).
        mode: resampling mode of the fallback path (see :func:`densify_and_resample`).

    Returns:
        ``(fs [M, C_s], ft [M, C_t], info)``; ``info``: ``path`` ('match': equal grids, key match;
        'pool': teacher scatter-mean onto the coarser student grid, then key match; 'resample':
        teacher densified and resampled, read at every student site), ``ratio``, ``num_student``,
        ``num_teacher``, ``num_matched`` (M). Gradients flow to both feature tensors.
    """
    s = as_sparse_features(student, 'student')
    t = as_sparse_features(teacher, 'teacher')
    if s.batch_size != t.batch_size:
        raise ValueError(f'student batch size {s.batch_size} != teacher batch size {t.batch_size}')
    s_shape, t_shape = tuple(s.spatial_shape), tuple(t.spatial_shape)
    info = dict(num_student=int(s.features.shape[0]), num_teacher=int(t.features.shape[0]), ratio=None,
                student_shape=s_shape, teacher_shape=t_shape)
    t_idx, t_feat = t.indices.to(s.indices.device), t.features
    if ratio is None:
        ratio = (1, 1, 1) if s_shape == t_shape else _integer_ratio(t_shape, s_shape)
    else:
        ratio = tuple(int(r) for r in ratio)
        expected = tuple(-(-n // r) for n, r in zip(t_shape, ratio))
        if expected != s_shape:
            raise ValueError(f'ratio {ratio}: teacher grid {t_shape} pooled gives {expected}, not the '
                             f'student grid {s_shape}')
    if ratio is not None:
        if ratio != (1, 1, 1):
            t_idx, t_feat = pool_to_coarser_grid(t_idx, t_feat, ratio, s_shape)
        s_rows, t_rows = match_active_sites(s.indices, t_idx, s_shape)
        info.update(path='match' if ratio == (1, 1, 1) else 'pool', ratio=ratio, num_matched=int(s_rows.numel()))
        return s.features[s_rows], t_feat[t_rows], info
    dense = densify_and_resample(t, s_shape, mode)  # [B, C_t, D_s, H_s, W_s]
    b, z, y, x = s.indices.long().unbind(1)
    ft = dense.permute(0, 2, 3, 4, 1)[b, z, y, x]
    info.update(path='resample', num_matched=int(s.features.shape[0]))
    return s.features, ft, info


def sparse_imitation_loss(fs: torch.Tensor, ft: torch.Tensor, reduction: str = 'mean') -> torch.Tensor:
    """MSE between matched student and teacher features.

    Args:
        fs, ft: ``[M, C]`` (the student's after its adapter).
        reduction: 'mean' (sum of squares / (M*C)), 'sum', or 'none' (``[M, C]``).

    Returns:
        The loss. With ``M == 0`` a zero ('mean'/'sum') that still depends on ``fs`` (``0 * fs.sum()``),
        so backward and DDP see the student's parameters used.
    """
    if fs.shape != ft.shape:
        raise ValueError(f'sparse_imitation_loss: student features {tuple(fs.shape)} and teacher features '
                         f'{tuple(ft.shape)} differ (adapt the student channels first)')
    if reduction not in ('mean', 'sum', 'none'):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    diff2 = (fs - ft.to(fs.dtype)) ** 2
    if reduction == 'none':
        return diff2
    if diff2.numel() == 0:
        return fs.sum() * 0.
    return diff2.sum() if reduction == 'sum' else diff2.mean()
