"""Sparse voxel ops (kdtoolbox/ops/sparse_imitation.py, spconv_compat.py, adapters/sparse.py) against
dense plain-torch references: values and gradients, row orders, truncation, empty sets."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kdtoolbox.ops.sparse_imitation import (SparseFeatures, densify_and_resample, gather_matched_features,
                                            linear_keys, match_active_sites, pool_to_coarser_grid,
                                            sparse_imitation_loss, sparse_to_dense)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def random_sites(n, batch, shape, gen, device='cpu'):
    """``n`` distinct random sites ``[n, 4]`` (b, z, y, x) of ``batch`` grids ``shape``, random order."""
    D, H, W = shape
    flat = torch.randperm(batch * D * H * W, generator=gen)[:n]
    x, rest = flat % W, flat // W
    y, rest = rest % H, rest // H
    z, b = rest % D, rest // D
    return torch.stack([b, z, y, x], 1).to(device)


def dense_loop(features, indices, shape, batch):
    """Reference densify: one python assignment per voxel."""
    out = torch.zeros(batch, features.shape[1], *shape, dtype=features.dtype)
    for f, (b, z, y, x) in zip(features, indices.tolist()):
        out[b, :, z, y, x] += f
    return out


def occupancy(indices, shape, batch):
    occ = torch.zeros(batch, 1, *shape)
    for b, z, y, x in indices.tolist():
        occ[b, 0, z, y, x] = 1.
    return occ


# ------------------------------------------------------------------ keys and matching

def test_linear_keys_is_the_row_major_index_of_a_dense_grid():
    shape, batch = (3, 4, 5), 2
    gen = torch.Generator().manual_seed(0)
    idx = random_sites(40, batch, shape, gen)
    ravel = torch.arange(batch * 3 * 4 * 5).view(batch, *shape)  # dense reference
    assert torch.equal(linear_keys(idx, shape), ravel[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]])
    assert linear_keys(torch.tensor([[1, 2, 3, 4]], dtype=torch.int32), shape).tolist() == [((1 * 3 + 2) * 4 + 3) * 5 + 4]
    assert linear_keys(torch.zeros(0, 4, dtype=torch.int32), shape).shape == (0,)


@pytest.mark.parametrize('bad', [[0, 3, 0, 0], [0, 0, 4, 0], [0, 0, 0, 5], [0, -1, 0, 0]])
def test_linear_keys_rejects_sites_outside_the_grid(bad):
    with pytest.raises(ValueError, match='outside the spatial shape'):
        linear_keys(torch.tensor([bad]), (3, 4, 5))


def test_match_active_sites_shuffled_and_truncated():
    shape, batch = (4, 6, 5), 2
    gen = torch.Generator().manual_seed(1)
    teacher = random_sites(80, batch, shape, gen)
    # student: 50 teacher sites in another order plus 20 sites the teacher does not have
    # (the teacher's max_voxels truncation dropped them)
    others = random_sites(batch * 4 * 6 * 5, batch, shape, gen)
    t_keys = set(map(tuple, teacher.tolist()))
    extra = torch.stack([s for s in others if tuple(s.tolist()) not in t_keys][:20])
    student = torch.cat([teacher[torch.randperm(80, generator=gen)[:50]], extra])
    student = student[torch.randperm(len(student), generator=gen)].int()
    s_rows, t_rows = match_active_sites(student, teacher, shape)
    # dense reference: a map of teacher row ids read at the student sites
    row_map = torch.full((batch, *shape), -1, dtype=torch.long)
    row_map[teacher[:, 0], teacher[:, 1], teacher[:, 2], teacher[:, 3]] = torch.arange(80)
    s = student.long()
    ref = row_map[s[:, 0], s[:, 1], s[:, 2], s[:, 3]]
    assert torch.equal(s_rows, (ref >= 0).nonzero().squeeze(1))
    assert torch.equal(t_rows, ref[ref >= 0])
    assert len(s_rows) == 50
    assert torch.equal(student[s_rows].long(), teacher[t_rows])


def test_match_active_sites_empty_and_duplicates():
    shape = (2, 3, 3)
    some = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 0]])
    empty = torch.zeros(0, 4, dtype=torch.long)
    for s, t in [(empty, some), (some, empty), (empty, empty)]:
        s_rows, t_rows = match_active_sites(s, t, shape)
        assert s_rows.shape == t_rows.shape == (0,)
    with pytest.raises(ValueError, match=r'teacher.*duplicate.*\[0, 1, 2, 0\]'):
        match_active_sites(some, torch.cat([some, some[:1]]), shape)


# ------------------------------------------------------------------ pooling

def test_pool_to_coarser_grid_by_hand_on_4x4():
    # one z slice, 4x4 grid pooled 2x2 -> 2x2; values chosen so each mean is easy to check
    sites = [(0, 0, 0, 0, 1.), (0, 0, 0, 1, 3.), (0, 0, 1, 1, 5.),   # coarse (0, 0): mean 3
             (0, 0, 0, 3, 8.),                                       # coarse (0, 1): 8
             (0, 0, 3, 2, 2.), (0, 0, 2, 3, 4.),                     # coarse (1, 1): 3
             (1, 0, 2, 0, 7.)]                                       # batch 1, coarse (1, 0): 7
    idx = torch.tensor([s[:4] for s in sites])
    feats = torch.tensor([[s[4], -s[4]] for s in sites], requires_grad=True)
    coarse, pooled = pool_to_coarser_grid(idx, feats, (1, 2, 2), (1, 2, 2))
    assert coarse.tolist() == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [1, 0, 1, 0]]
    assert pooled.tolist() == [[3., -3.], [8., -8.], [3., -3.], [7., -7.]]
    pooled[:, 0].sum().backward()  # d/dfeature = 1 / (sites in its coarse cell)
    torch.testing.assert_close(feats.grad[:, 0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 1., .5, .5, 1.]))
    assert feats.grad[:, 1].abs().sum() == 0


def test_pool_to_coarser_grid_matches_dense_avg_pool_values_and_grads():
    shape, batch, ratio, C = (4, 8, 6), 2, (2, 2, 3), 3
    coarse_shape = (2, 4, 2)
    gen = torch.Generator().manual_seed(2)
    idx = random_sites(70, batch, shape, gen)
    feats = torch.randn(70, C, generator=gen, requires_grad=True)
    coarse, pooled = pool_to_coarser_grid(idx, feats, ratio, coarse_shape)
    w = torch.randn(pooled.shape, generator=gen)
    (pooled * w).sum().backward()
    grad = feats.grad.clone()
    # dense reference: sum pooling of features / sum pooling of occupancy
    f2 = feats.detach().clone().requires_grad_(True)
    dense = torch.zeros(batch, *shape, C).index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), f2,
                                                    accumulate=True).permute(0, 4, 1, 2, 3)
    k = ratio[0] * ratio[1] * ratio[2]
    sums = F.avg_pool3d(dense, ratio) * k
    counts = F.avg_pool3d(occupancy(idx, shape, batch), ratio) * k
    active = counts[:, 0] > 0
    assert active.sum() == len(coarse)
    ref = (sums / counts.clamp(min=1)).permute(0, 2, 3, 4, 1)[active]  # row-major = ascending keys
    assert torch.equal(coarse, active.nonzero())
    torch.testing.assert_close(pooled, ref)
    (ref * w).sum().backward()
    torch.testing.assert_close(grad, f2.grad)


def test_pool_to_coarser_grid_empty_and_bad_shape():
    coarse, pooled = pool_to_coarser_grid(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 5), (1, 2, 2), (1, 2, 2))
    assert coarse.shape == (0, 4) and pooled.shape == (0, 5)
    with pytest.raises(ValueError, match='outside coarse_shape'):
        pool_to_coarser_grid(torch.tensor([[0, 0, 0, 5]]), torch.zeros(1, 2), (1, 2, 2), (1, 2, 2))


# ------------------------------------------------------------------ densify / resample

def test_sparse_to_dense_and_resample_against_loops():
    shape, batch, C = (3, 5, 4), 2, 2
    gen = torch.Generator().manual_seed(3)
    idx = random_sites(25, batch, shape, gen)
    feats = torch.randn(25, C, generator=gen, requires_grad=True)
    dense = sparse_to_dense(feats, idx, shape, batch)
    ref = dense_loop(feats.detach(), idx, shape, batch)
    assert torch.equal(dense, ref)
    sp = SparseFeatures(feats, idx.int(), shape, batch)
    for mode, kwargs in [('trilinear', dict(align_corners=False)), ('nearest', {})]:
        out = densify_and_resample(sp, (2, 7, 3), mode)
        torch.testing.assert_close(out, F.interpolate(ref, size=(2, 7, 3), mode=mode, **kwargs))
    assert torch.equal(densify_and_resample(sp, shape), ref)  # same grid: no resampling
    w = torch.randn(batch, C, 2, 7, 3, generator=gen)
    (densify_and_resample(sp, (2, 7, 3)) * w).sum().backward()
    # gradient reference: the dense grid filled by plain indexing, then torch's interpolate
    f2 = feats.detach().clone().requires_grad_(True)
    dense_ref = torch.zeros(batch, *shape, C)
    dense_ref[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = f2
    (F.interpolate(dense_ref.permute(0, 4, 1, 2, 3), size=(2, 7, 3), mode='trilinear', align_corners=False) * w).sum().backward()
    torch.testing.assert_close(feats.grad, f2.grad)
    with pytest.raises(ValueError, match='trilinear'):
        densify_and_resample(sp, shape, 'bicubic')


def test_sparse_to_dense_equals_spconv_dense():
    from kdtoolbox.ops.spconv_compat import import_spconv
    spconv = import_spconv()
    shape, batch = (3, 6, 5), 2
    gen = torch.Generator().manual_seed(4)
    idx = random_sites(30, batch, shape, gen).int()
    feats = torch.randn(30, 4, generator=gen)
    st = spconv.SparseConvTensor(feats, idx, list(shape), batch)
    assert torch.equal(sparse_to_dense(feats, idx, shape, batch), st.dense())
    empty = spconv.SparseConvTensor(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.int32), list(shape), batch)
    assert torch.equal(SparseFeatures(empty.features, empty.indices, shape, batch).dense(), torch.zeros(batch, 4, *shape))


# ------------------------------------------------------------------ gather + loss vs densify-then-MSE

def dense_masked_mse(fs, s_idx, s_shape, ft_dense, t_active, batch):
    """Reference: densify the student, masked MSE over cells active in both, mean over M*C."""
    ds = torch.zeros(batch, *s_shape, fs.shape[1]).index_put(
        (s_idx[:, 0], s_idx[:, 1], s_idx[:, 2], s_idx[:, 3]), fs, accumulate=True).permute(0, 4, 1, 2, 3)
    mask = (occupancy(s_idx, s_shape, batch) > 0) & t_active
    m = mask.sum()
    return (((ds - ft_dense) ** 2) * mask).sum() / (m * fs.shape[1]), int(m)


def test_gather_equal_grids_matches_densify_then_mse():
    shape, batch, C = (3, 8, 8), 2, 4
    gen = torch.Generator().manual_seed(5)
    t_idx = random_sites(120, batch, shape, gen)
    perm = torch.randperm(120, generator=gen)
    s_idx = torch.cat([t_idx[perm[:70]], random_sites(30, batch, shape, gen)])
    s_idx = torch.unique(s_idx, dim=0)                      # distinct student sites
    s_idx = s_idx[torch.randperm(len(s_idx), generator=gen)]
    t_idx = t_idx[perm[:100]]                               # teacher truncated, shuffled
    fs = torch.randn(len(s_idx), C, generator=gen, requires_grad=True)
    ft = torch.randn(100, C, generator=gen, requires_grad=True)
    a, b, info = gather_matched_features(SparseFeatures(fs, s_idx.int(), shape, batch),
                                         SparseFeatures(ft, t_idx.int(), shape, batch))
    assert info['path'] == 'match' and info['num_teacher'] == 100
    loss = sparse_imitation_loss(a, b)
    loss.backward()
    fs2, ft2 = fs.detach().clone().requires_grad_(True), ft.detach().clone().requires_grad_(True)
    dt = torch.zeros(batch, *shape, C).index_put((t_idx[:, 0], t_idx[:, 1], t_idx[:, 2], t_idx[:, 3]), ft2).permute(0, 4, 1, 2, 3)
    ref, m = dense_masked_mse(fs2, s_idx, shape, dt, occupancy(t_idx, shape, batch) > 0, batch)
    assert info['num_matched'] == m > 0
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(fs.grad, fs2.grad)
    torch.testing.assert_close(ft.grad, ft2.grad)


def test_gather_integer_ratio_pools_teacher_onto_student_grid():
    t_shape, s_shape, batch, C = (2, 8, 8), (2, 4, 4), 1, 3
    gen = torch.Generator().manual_seed(6)
    t_idx = random_sites(60, batch, t_shape, gen)
    s_idx = random_sites(20, batch, s_shape, gen)
    fs = torch.randn(20, C, generator=gen, requires_grad=True)
    ft = torch.randn(60, C, generator=gen, requires_grad=True)
    a, b, info = gather_matched_features(SparseFeatures(fs, s_idx, s_shape, batch), SparseFeatures(ft, t_idx, t_shape, batch))
    assert info['path'] == 'pool' and info['ratio'] == (1, 2, 2)
    loss = sparse_imitation_loss(a, b)
    loss.backward()
    # reference: dense teacher, 1x2x2 sum pool / count, masked MSE at cells active in both
    fs2, ft2 = fs.detach().clone().requires_grad_(True), ft.detach().clone().requires_grad_(True)
    dt = torch.zeros(batch, *t_shape, C).index_put((t_idx[:, 0], t_idx[:, 1], t_idx[:, 2], t_idx[:, 3]), ft2).permute(0, 4, 1, 2, 3)
    counts = F.avg_pool3d(occupancy(t_idx, t_shape, batch), (1, 2, 2)) * 4
    pooled = F.avg_pool3d(dt, (1, 2, 2)) * 4 / counts.clamp(min=1)
    ref, m = dense_masked_mse(fs2, s_idx, s_shape, pooled, counts > 0, batch)
    ref.backward()
    assert info['num_matched'] == m > 0
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(fs.grad, fs2.grad)
    torch.testing.assert_close(ft.grad, ft2.grad)


def test_gather_explicit_ratio_on_odd_grid():
    # 5 z-levels downsampled with padding -> 3 (ceil): the inferred ratio would not be an integer
    t_idx = torch.tensor([[0, 4, 0, 0], [0, 4, 1, 1], [0, 0, 0, 0]])
    ft = torch.tensor([[1.], [3.], [10.]])
    s_idx = torch.tensor([[0, 2, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    fs = torch.zeros(3, 1)
    a, b, info = gather_matched_features(SparseFeatures(fs, s_idx, (3, 1, 1), 1), SparseFeatures(ft, t_idx, (5, 2, 2), 1),
                                         ratio=(2, 2, 2))
    assert info['path'] == 'pool' and b.flatten().tolist() == [2., 10.]  # (1+3)/2 at z 2; 10 at z 0
    with pytest.raises(ValueError, match='not the student grid'):
        gather_matched_features(SparseFeatures(fs, s_idx, (3, 1, 1), 1), SparseFeatures(ft, t_idx, (5, 2, 2), 1), ratio=(2, 1, 1))


def test_gather_non_integer_ratio_resamples_teacher():
    t_shape, s_shape, batch, C = (3, 6, 6), (2, 4, 4), 2, 2
    gen = torch.Generator().manual_seed(7)
    t_idx = random_sites(50, batch, t_shape, gen)
    s_idx = random_sites(15, batch, s_shape, gen)
    fs = torch.randn(15, C, generator=gen, requires_grad=True)
    ft = torch.randn(50, C, generator=gen, requires_grad=True)
    a, b, info = gather_matched_features(SparseFeatures(fs, s_idx, s_shape, batch), SparseFeatures(ft, t_idx, t_shape, batch))
    assert info['path'] == 'resample' and info['num_matched'] == 15
    sparse_imitation_loss(a, b).backward()
    ft2 = ft.detach().clone().requires_grad_(True)
    dt = torch.zeros(batch, *t_shape, C).index_put((t_idx[:, 0], t_idx[:, 1], t_idx[:, 2], t_idx[:, 3]), ft2).permute(0, 4, 1, 2, 3)
    res = F.interpolate(dt, size=s_shape, mode='trilinear', align_corners=False)
    ref_ft = torch.stack([res[bb, :, z, y, x] for bb, z, y, x in s_idx.tolist()])
    torch.testing.assert_close(b, ref_ft)
    torch.testing.assert_close(a, fs)
    ((fs.detach() - ref_ft) ** 2).mean().backward()
    torch.testing.assert_close(ft.grad, ft2.grad)


def test_gather_with_spconv_tensors_and_errors():
    from kdtoolbox.ops.spconv_compat import import_spconv
    spconv = import_spconv()
    idx = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]], dtype=torch.int32)
    s = spconv.SparseConvTensor(torch.randn(2, 3), idx, [2, 2, 2], 1)
    t = spconv.SparseConvTensor(torch.randn(2, 5), idx.flip(0), [2, 2, 2], 1)
    a, b, info = gather_matched_features(s, t)
    assert info['path'] == 'match' and torch.equal(a, s.features) and torch.equal(b, t.features.flip(0))
    with pytest.raises(ValueError, match='batch size'):
        gather_matched_features(s, spconv.SparseConvTensor(t.features, t.indices, [2, 2, 2], 2))
    with pytest.raises(TypeError, match='student'):
        gather_matched_features(torch.zeros(2, 3), t)
    with pytest.raises(ValueError, match=r'\(2, 3\).*\(2, 5\)'):
        sparse_imitation_loss(a, b)


@pytest.mark.parametrize('t_shape', [(2, 4, 4), (2, 8, 8), (3, 6, 6)])
def test_empty_voxel_sets_give_a_connected_zero(t_shape):
    s_shape = (2, 4, 4)
    lin = torch.nn.Linear(3, 3)
    for ns, nt in [(0, 5), (5, 0), (0, 0)]:
        gen = torch.Generator().manual_seed(ns * 10 + nt)
        s = SparseFeatures(torch.randn(ns, 3, generator=gen), random_sites(ns, 1, s_shape, gen), s_shape, 1)
        t = SparseFeatures(torch.randn(nt, 3, generator=gen), random_sites(nt, 1, t_shape, gen), t_shape, 1)
        a, b, info = gather_matched_features(SparseFeatures(lin(s.features), s.indices, s_shape, 1), t)
        if info['path'] != 'resample' or ns == 0:
            assert a.shape == b.shape == (0, 3) and info['num_matched'] == 0
        loss = sparse_imitation_loss(a, b)
        lin.zero_grad()
        loss.backward()
        assert loss.grad_fn is not None
        assert torch.isfinite(loss) and (info['num_matched'] > 0 or loss.item() == 0)
        assert lin.weight.grad is not None  # DDP sees the adapter used


def test_sparse_imitation_loss_reductions():
    fs = torch.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    ft = torch.tensor([[0., 2.], [1., 1.]])
    assert sparse_imitation_loss(fs, ft).item() == (1 + 0 + 4 + 9) / 4
    assert sparse_imitation_loss(fs, ft, 'sum').item() == 14
    assert sparse_imitation_loss(fs, ft, 'none').tolist() == [[1., 0.], [4., 9.]]
    sparse_imitation_loss(fs, ft).backward()
    assert fs.grad.tolist() == [[0.5, 0.], [1., 1.5]]  # 2 (fs - ft) / (M*C)


# ------------------------------------------------------------------ spconv compatibility

SPCONV_BACKWARD = r'''
import torch
import spconv.pytorch as spconv
torch.manual_seed(0)
idx = torch.unique(torch.randint(0, 6, (40, 3)), dim=0)
idx = torch.cat([torch.zeros(len(idx), 1, dtype=torch.long), idx], 1).int()
x = spconv.SparseConvTensor(torch.randn(len(idx), 3, requires_grad=True), idx, [6, 6, 6], 1)
net = spconv.SparseSequential(spconv.SubMConv3d(3, 4, 3, bias=False), spconv.SparseConv3d(4, 4, 3, 2, bias=False))
net(x).features.sum().backward()
print('BACKWARD-OK', float(x.features.grad.abs().sum()) > 0)
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason='the bug needs a CPU-only torch')
def test_spconv_cpu_backward_fails_without_the_fix_and_works_with_it():
    # a fresh interpreter, spconv alone: the unpatched backward of SubMConv3d/SparseConv3d fails ...
    raw = subprocess.run([sys.executable, '-c', SPCONV_BACKWARD], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert raw.returncode != 0 and 'Torch not compiled with CUDA enabled' in raw.stderr, raw.stderr[-2000:]
    # ... and the same code runs after import_spconv() (this process)
    from kdtoolbox.ops.spconv_compat import import_spconv
    import_spconv()
    out = {}
    exec(SPCONV_BACKWARD, {'print': lambda *a: out.setdefault('printed', a)})
    assert out['printed'] == ('BACKWARD-OK', True)


def submconv_dense_reference(weight, feats, idx, shape):
    """SubMConv3d as a dense conv3d read at the active sites (spconv 2 weight [out, kD, kH, kW, in])."""
    dense = torch.zeros(1, *shape, feats.shape[1]).index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), feats)
    out = F.conv3d(dense.permute(0, 4, 1, 2, 3), weight.permute(0, 4, 1, 2, 3), padding=weight.shape[1] // 2)
    return out.permute(0, 2, 3, 4, 1)[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]


@pytest.mark.parametrize('train', [True, False])
def test_submconv_adapter_equals_dense_conv_values_and_grads(train):
    from kdtoolbox import ADAPTERS
    from kdtoolbox.ops.spconv_compat import import_spconv, is_cpu_backward_patched
    spconv = import_spconv()
    assert is_cpu_backward_patched() == (not torch.cuda.is_available())
    gen = torch.Generator().manual_seed(8)
    shape = (4, 5, 5)
    idx = random_sites(30, 1, shape, gen)
    feats = torch.randn(30, 3, generator=gen, requires_grad=True)
    adapter = ADAPTERS.build(dict(type='SubMConvAdapter', in_channels=3, out_channels=2))
    adapter.train(train)  # eval: spconv's fused CPU path, which asserts on a bias
    out = adapter(spconv.SparseConvTensor(feats, idx.int(), list(shape), 1))
    assert torch.equal(out.indices, idx.int())
    w = torch.randn(30, 2, generator=gen)
    (out.features * w).sum().backward()
    f2 = feats.detach().clone().requires_grad_(True)
    weight = adapter.conv.weight.detach().clone().requires_grad_(True)
    ref = submconv_dense_reference(weight, f2, idx, shape)
    (ref * w).sum().backward()
    torch.testing.assert_close(out.features, ref)
    torch.testing.assert_close(feats.grad, f2.grad)
    torch.testing.assert_close(adapter.conv.weight.grad, weight.grad)
    # SparseFeatures in, SparseFeatures out
    sf = adapter(SparseFeatures(feats.detach(), idx, shape, 1))
    assert isinstance(sf, SparseFeatures)
    torch.testing.assert_close(sf.features, ref.detach())


def test_spconv_sparse_conv_backward_matches_dense_conv():
    spconv = __import__('kdtoolbox.ops.spconv_compat', fromlist=['x']).import_spconv()
    gen = torch.Generator().manual_seed(9)
    shape = (4, 6, 6)
    idx = random_sites(40, 1, shape, gen)
    feats = torch.randn(40, 2, generator=gen, requires_grad=True)
    conv = spconv.SparseConv3d(2, 3, 3, stride=2, padding=1, bias=False)
    out = conv(spconv.SparseConvTensor(feats, idx.int(), list(shape), 1))
    (out.dense() ** 2).sum().backward()
    f2 = feats.detach().clone().requires_grad_(True)
    dense = torch.zeros(1, *shape, 2).index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), f2).permute(0, 4, 1, 2, 3)
    ref = F.conv3d(dense, conv.weight.detach().permute(0, 4, 1, 2, 3), stride=2, padding=1)
    (ref ** 2).sum().backward()
    torch.testing.assert_close(out.dense(), ref.detach())
    torch.testing.assert_close(feats.grad, f2.grad)


def test_import_spconv_is_idempotent():
    from kdtoolbox.ops import spconv_compat
    spconv_compat.import_spconv()
    import spconv.pytorch.ops as ops
    first = ops.get_current_stream
    spconv_compat.import_spconv()
    spconv_compat.patch_cpu_backward()
    assert ops.get_current_stream is first
    if not torch.cuda.is_available():
        assert spconv_compat.is_cpu_backward_patched()
        assert first() == 0 and first.__wrapped__ is not first


WITHOUT_SPCONV = r'''
import os, sys, traceback
import torch
MINE = [os.path.join('kdtoolbox', 'ops', f) for f in ('bev.py', 'sparse_imitation.py', 'spconv_compat.py')]
MINE.append(os.path.join('kdtoolbox', 'adapters', 'sparse.py'))
culprits = []


class NoSpconv:
    """As if spconv were not installed; records imports of it attempted from the sparse-op modules."""

    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'spconv':
            culprits.extend(f.filename for f in traceback.extract_stack()[:-1]
                            if any(f.filename.endswith(m) for m in MINE) and f.name != 'import_spconv')
            raise ModuleNotFoundError(f'No module named {name!r}')
        return None


sys.meta_path.insert(0, NoSpconv())
from kdtoolbox import ADAPTERS
import kdtoolbox.ops.bev, kdtoolbox.adapters.sparse
from kdtoolbox.ops.sparse_imitation import SparseFeatures, gather_matched_features
from kdtoolbox.ops.spconv_compat import import_spconv
print('CULPRITS', sorted(set(culprits)))
idx = torch.tensor([[0, 0, 1, 1]])
a, b, info = gather_matched_features(SparseFeatures(torch.ones(1, 2), idx, (1, 2, 2), 1),
                                     SparseFeatures(torch.zeros(1, 2), idx, (1, 2, 2), 1))
print('GATHER', info['path'], ADAPTERS.build(dict(type='SparseLinearAdapter', in_channels=2, out_channels=3))(a).shape)
try:
    import_spconv('cpu')
except ImportError as e:
    print('ERR', e)
'''


@pytest.mark.slow  # a fresh interpreter importing kdtoolbox (and mmdet3d): about 20 s here
def test_without_spconv_ops_work_and_import_spconv_names_the_package():
    res = subprocess.run([sys.executable, '-c', WITHOUT_SPCONV], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT))
    assert res.returncode == 0, res.stderr[-3000:]
    # importing these modules never imports spconv (kdtoolbox may, through mmdet3d, which tolerates
    # its absence); the ops and the linear adapter work without it
    assert 'CULPRITS []' in res.stdout, res.stdout
    assert 'GATHER match torch.Size([1, 3])' in res.stdout
    assert 'ERR' in res.stdout and 'pip install spconv' in res.stdout, res.stdout


def test_import_spconv_wrong_build_names_the_package():
    from spconv.cppconstants import CPU_ONLY_BUILD
    from kdtoolbox.ops.spconv_compat import import_spconv, spconv_package_for
    if CPU_ONLY_BUILD:  # the CPU wheel asked to run CUDA tensors
        with pytest.raises(ImportError, match=r'CPU-only build.*pip install spconv-cu'):
            import_spconv('cuda')
    assert spconv_package_for('cpu') == 'spconv'
    assert spconv_package_for('cuda').startswith('spconv-cu')


def test_submconv_adapter_refuses_bias_and_biased_spconv_asserts_in_eval():
    from kdtoolbox.adapters.sparse import SubMConvAdapter
    from kdtoolbox.ops.spconv_compat import import_spconv
    with pytest.raises(ValueError, match='719'):
        SubMConvAdapter(3, 3, bias=True)
    if torch.cuda.is_available():
        return
    spconv = import_spconv()
    biased = spconv.SubMConv3d(3, 3, 3, bias=True).eval()
    x = spconv.SparseConvTensor(torch.randn(2, 3), torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32), [1, 1, 2], 1)
    with pytest.raises(AssertionError, match='bias'):  # why the adapter is bias-free (spconv issue 719)
        biased(x)


def test_sparse_linear_adapter():
    from kdtoolbox import ADAPTERS
    from kdtoolbox.ops.spconv_compat import import_spconv
    spconv = import_spconv()
    adapter = ADAPTERS.build(dict(type='SparseLinearAdapter', in_channels=3, out_channels=5)).eval()
    gen = torch.Generator().manual_seed(10)
    feats = torch.randn(7, 3, generator=gen)
    ref = feats @ adapter.linear.weight.T + adapter.linear.bias
    st = spconv.SparseConvTensor(feats, random_sites(7, 1, (2, 3, 3), gen).int(), [2, 3, 3], 1)
    out = adapter(st)
    assert type(out) is type(st) and torch.equal(out.indices, st.indices)
    torch.testing.assert_close(out.features, ref)
    torch.testing.assert_close(adapter(SparseFeatures(feats, st.indices, (2, 3, 3), 1)).features, ref)
    torch.testing.assert_close(adapter(feats), ref)
    assert adapter(torch.zeros(0, 3)).shape == (0, 5)
    with pytest.raises(TypeError, match='SparseLinearAdapter'):
        adapter(torch.zeros(1, 3, 4, 4))


# ------------------------------------------------------------------ CUDA

@CUDA
def test_gather_paths_on_cuda_equal_cpu():
    gen = torch.Generator().manual_seed(11)
    for t_shape in [(2, 8, 8), (2, 16, 16), (3, 12, 12)]:
        s_shape = (2, 8, 8)
        s = SparseFeatures(torch.randn(40, 4, generator=gen), random_sites(40, 2, s_shape, gen), s_shape, 2)
        t = SparseFeatures(torch.randn(90, 4, generator=gen), random_sites(90, 2, t_shape, gen), t_shape, 2)
        a, b, info = gather_matched_features(s, t)
        to = lambda x: SparseFeatures(x.features.cuda().requires_grad_(True), x.indices.cuda(), x.spatial_shape, 2)  # noqa: E731
        sc, tc = to(s), to(t)
        ac, bc, info_c = gather_matched_features(sc, tc)
        assert info_c['path'] == info['path']
        torch.testing.assert_close(ac.cpu(), a)
        torch.testing.assert_close(bc.cpu(), b)
        loss = sparse_imitation_loss(ac, bc)
        loss.backward()
        torch.testing.assert_close(loss.cpu(), sparse_imitation_loss(a, b))
        assert sc.features.grad.is_cuda


@CUDA
def test_submconv_adapter_on_cuda():
    from kdtoolbox.adapters.sparse import SubMConvAdapter
    from kdtoolbox.ops.spconv_compat import import_spconv
    spconv = import_spconv('cuda')
    gen = torch.Generator().manual_seed(12)
    idx = random_sites(30, 1, (4, 5, 5), gen)
    feats = torch.randn(30, 3, generator=gen)
    adapter = SubMConvAdapter(3, 2).cuda().eval()
    out = adapter(spconv.SparseConvTensor(feats.cuda(), idx.int().cuda(), [4, 5, 5], 1))
    ref = submconv_dense_reference(adapter.conv.weight.detach().cpu(), feats, idx, (4, 5, 5))
    torch.testing.assert_close(out.features.cpu(), ref, rtol=1e-3, atol=1e-3)
