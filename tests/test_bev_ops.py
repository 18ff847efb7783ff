"""BEV grid ops (kdtoolbox/ops/bev.py): the rows = y, columns = x convention, against hand-made maps,
python loops, mmdet3d's SparseEncoder and plain-torch bilinear interpolation (values and gradients)."""
from __future__ import annotations

import pytest
import torch

from kdtoolbox.ops.bev import BEVGrid, metric_to_grid, points_to_bev_cells, sample_bev, sparse_to_bev

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def random_sites(n, batch, shape, gen):
    D, H, W = shape
    flat = torch.randperm(batch * D * H * W, generator=gen)[:n]
    x, rest = flat % W, flat // W
    y, rest = rest % H, rest // H
    return torch.stack([rest // D, rest % D, y, x], 1)


# a non-square grid with different cell sizes, so an x/y swap cannot pass: W=4 columns of 0.5 m
# over x in [0, 2), H=3 rows of 1 m over y in [-1, 2)
GRID = BEVGrid((0., -1., -2., 2., 2., 1.), (0.5, 1.0), (3, 4))


# ------------------------------------------------------------------ BEVGrid

def test_bev_grid_from_voxel_for_mmdet3d_configs():
    nus = BEVGrid.from_voxel([-51.2, -51.2, -5., 51.2, 51.2, 3.], [0.1, 0.1, 0.2], stride=8)
    assert nus.shape == (128, 128) and nus.cell_size == pytest.approx((0.8, 0.8))
    kitti = BEVGrid.from_voxel([0, -40, -3, 70.4, 40, 1], [0.05, 0.05, 0.1], stride=8)
    assert kitti.shape == (200, 176)  # SECOND's 256 x 200 x 176 (H = y, W = x)
    pillars = BEVGrid.from_voxel([0, -39.68, -3, 69.12, 39.68, 1], [0.16, 0.16, 4])
    assert pillars.shape == (496, 432)  # PointPillarsScatter canvas
    assert BEVGrid.from_voxel([0, 0, 0, 10, 10, 1], [1, 1, 1], stride=4).shape == (3, 3)  # ceil(10 / 4)


def test_bev_grid_equality_and_error_names_both_grids():
    a = BEVGrid.from_voxel([-51.2, -51.2, -5., 51.2, 51.2, 3.], [0.1, 0.1, 0.2], stride=8)
    b = BEVGrid((-51.2, -51.2, -5., 51.2, 51.2, 3.), (0.8000000001, 0.8), (128, 128))
    assert a.same_as(b) and b.same_as(a)
    a.check_same(b)
    c = BEVGrid.from_voxel([-54, -54, -5, 54, 54, 3], [0.075, 0.075, 0.2], stride=8)  # 180 x 180, 0.6 m
    assert not a.same_as(c)
    with pytest.raises(ValueError) as err:
        a.check_same(c, 'student (pts_neck)', 'teacher (img_view_transformer)')
    msg = str(err.value)
    assert 'student (pts_neck)' in msg and 'teacher (img_view_transformer)' in msg
    assert 'H=128' in msg and 'H=180' in msg and '0.8' in msg and '0.6' in msg
    shifted = BEVGrid((-51.2, -50.4, -5., 51.2, 52., 3.), (0.8, 0.8), (128, 128))  # same size, moved
    assert not a.same_as(shifted)
    with pytest.raises(ValueError, match='point_cloud_range'):
        BEVGrid((0, 0, 0, 0, 1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match='cell_size'):
        BEVGrid((0, 0, 0, 1, 1, 1), (0, 1), (1, 1))


# ------------------------------------------------------------------ sparse_to_bev

def loop_reference(features, indices, shape, batch, reduce):
    D, H, W = shape
    C = features.shape[1]
    cells = {}
    for f, (b, z, y, x) in zip(features, indices.tolist()):
        cells.setdefault((b, y, x), []).append((z, f))
    out = torch.zeros(batch, C * D if reduce == 'concat_z' else C, H, W)
    for (b, y, x), items in cells.items():
        fs = torch.stack([f for _, f in items])
        if reduce == 'sum':
            out[b, :, y, x] = fs.sum(0)
        elif reduce == 'mean':
            out[b, :, y, x] = fs.mean(0)
        elif reduce == 'max':
            out[b, :, y, x] = fs.max(0).values
        else:
            for z, f in items:
                out[b, torch.arange(C) * D + z, y, x] = f  # channel c*D + z
    return out


def dense_reference(features, indices, shape, batch, reduce):
    """The same reductions on a dense [B, C, D, H, W] grid (autograd reference)."""
    D, H, W = shape
    C = features.shape[1]
    dense = torch.zeros(batch, D, H, W, C).index_put(tuple(indices.long().T), features).permute(0, 4, 1, 2, 3)
    occ = torch.zeros(batch, D, H, W).index_put(tuple(indices.long().T), torch.ones(len(indices)))[:, None]
    if reduce == 'sum':
        return dense.sum(2)
    if reduce == 'mean':
        return dense.sum(2) / occ.sum(2).clamp(min=1)
    if reduce == 'max':
        masked = dense.masked_fill(occ == 0, float('-inf')).amax(2)
        return torch.where(occ.sum(2) > 0, masked, torch.zeros(()))
    return dense.reshape(batch, C * D, H, W)


@pytest.mark.parametrize('reduce', ['sum', 'mean', 'max', 'concat_z'])
def test_sparse_to_bev_values_and_grads(reduce):
    shape, batch, C = (3, 4, 5), 2, 3
    gen = torch.Generator().manual_seed(0)
    idx = random_sites(45, batch, shape, gen).int()
    feats = torch.randn(45, C, generator=gen, requires_grad=True)
    out = sparse_to_bev(feats, idx, shape, batch, reduce)
    assert out.shape == (batch, C * 3 if reduce == 'concat_z' else C, 4, 5)
    assert torch.allclose(out, loop_reference(feats.detach(), idx, shape, batch, reduce), atol=1e-6)
    w = torch.randn(out.shape, generator=gen)
    (out * w).sum().backward()
    f2 = feats.detach().clone().requires_grad_(True)
    (dense_reference(f2, idx, shape, batch, reduce) * w).sum().backward()
    torch.testing.assert_close(feats.grad, f2.grad)


def test_sparse_to_bev_rows_are_y_columns_are_x():
    feats = torch.tensor([[5.]])
    out = sparse_to_bev(feats, torch.tensor([[1, 0, 2, 3]]), (1, 3, 4), 2)  # b=1, y=2, x=3
    assert out.shape == (2, 1, 3, 4) and out[1, 0, 2, 3] == 5 and out.sum() == 5


@pytest.mark.parametrize('reduce', ['sum', 'mean', 'max', 'concat_z'])
def test_sparse_to_bev_empty(reduce):
    feats = torch.zeros(0, 2, requires_grad=True)
    out = sparse_to_bev(feats, torch.zeros(0, 4, dtype=torch.int32), (2, 3, 4), 2, reduce)
    assert out.shape == (2, 4 if reduce == 'concat_z' else 2, 3, 4) and out.abs().sum() == 0
    with pytest.raises(ValueError, match='concat_z'):
        sparse_to_bev(feats, torch.zeros(0, 4), (2, 3, 4), 2, 'median')


def test_concat_z_equals_mmdet3d_sparse_encoder_output():
    from mmdet3d.models.middle_encoders import SparseEncoder
    from kdtoolbox.ops.spconv_compat import import_spconv
    import_spconv()
    torch.manual_seed(0)
    # mmdet3d's CenterPoint voxel encoder, narrower: z 41 -> 21 -> 11 -> 5 -> conv_out 2
    enc = SparseEncoder(in_channels=4, sparse_shape=[41, 32, 32], order=('conv', 'norm', 'act'),
                        base_channels=8, output_channels=16,
                        encoder_channels=((8,), (16, 16, 16), (16, 16, 16), (16, 16, 16)),
                        encoder_paddings=((1,), (1, 1, 1), (1, 1, 1), ((0, 1, 1), 1, 1))).eval()
    gen = torch.Generator().manual_seed(1)
    coors = random_sites(300, 2, (41, 32, 32), gen).int()
    feats = torch.randn(300, 4, generator=gen)
    recorded = {}
    enc.conv_out.register_forward_hook(lambda m, i, o: recorded.setdefault('out', o))
    with torch.no_grad():
        bev = enc(feats, coors, 2)
    sp = recorded['out']
    ours = sparse_to_bev(sp.features, sp.indices, sp.spatial_shape, sp.batch_size, 'concat_z')
    assert bev.shape == ours.shape and ours.shape[1] == 16 * sp.spatial_shape[0]
    assert ours.abs().sum() > 0 and torch.equal(ours, bev)


# ------------------------------------------------------------------ metric <-> grid

def test_metric_to_grid_and_points_to_cells_by_hand():
    xy = torch.tensor([[0., -1.], [0.25, -0.5], [1.9, 1.99], [2.0, 0.], [-0.01, 0.], [1.0, 2.0]])
    col, row = metric_to_grid(xy, GRID)
    torch.testing.assert_close(col, torch.tensor([0., 0.5, 3.8, 4.0, -0.02, 2.0]))
    torch.testing.assert_close(row, torch.tensor([0., 0.5, 2.99, 1.0, 1.0, 3.0]))
    xyz = torch.cat([xy, torch.tensor([[0.], [0.], [0.], [0.], [0.], [0.]])], 1)
    r, c, valid = points_to_bev_cells(xyz, GRID)
    assert r.tolist() == [0, 0, 2, 1, 1, 3] and c.tolist() == [0, 0, 3, 4, -1, 2]
    assert valid.tolist() == [True, True, True, False, False, False]  # x_max, y_max exclusive
    z = torch.tensor([[0.5, 0.5, -2.], [0.5, 0.5, 1.], [0.5, 0.5, 0.99], [0.5, 0.5, -2.01]])
    assert points_to_bev_cells(z, GRID)[2].tolist() == [True, False, True, False]
    assert points_to_bev_cells(z[:, :2], GRID)[2].all()  # 2-D points: no z test
    r, c, valid = points_to_bev_cells(torch.zeros(0, 3), GRID)
    assert r.shape == c.shape == valid.shape == (0,)


# ------------------------------------------------------------------ sample_bev

def bilinear_reference(bev, xy, grid):
    """Plain-torch bilinear interpolation between cell centres (zeros outside the map)."""
    B, C, H, W = bev.shape
    x0, y0 = grid.point_cloud_range[:2]
    u = (xy[..., 0] - x0) / grid.cell_size[0] - 0.5  # continuous column, centres at integers
    v = (xy[..., 1] - y0) / grid.cell_size[1] - 0.5
    out = torch.zeros(B, xy.shape[1], C, dtype=bev.dtype)
    for b in range(B):
        for n in range(xy.shape[1]):
            c0, r0 = int(torch.floor(u[b, n])), int(torch.floor(v[b, n]))
            fu, fv = u[b, n] - c0, v[b, n] - r0
            for dr, dc, wgt in [(0, 0, (1 - fu) * (1 - fv)), (0, 1, fu * (1 - fv)), (1, 0, (1 - fu) * fv),
                                (1, 1, fu * fv)]:
                r, c = r0 + dr, c0 + dc
                if 0 <= r < H and 0 <= c < W:
                    out[b, n] = out[b, n] + wgt * bev[b, :, r, c]
    return out


def test_sample_bev_single_hot_cell():
    bev = torch.zeros(1, 2, 3, 4)
    bev[0, :, 1, 2] = torch.tensor([1., 10.])  # row 1 (y in [0, 1)), col 2 (x in [1, 1.5))
    centre = (1.25, 0.5)
    pts = torch.tensor([[centre,
                         (1.5, 0.5),            # halfway to the next column's centre
                         (1.25, 1.0),           # halfway to the next row's centre
                         (1.5, 1.0),            # the corner of four centres
                         (1.25 + 0.125, 0.5),   # a quarter of the way
                         (0.75, 0.5),           # the left neighbour's centre
                         (5.0, 0.5), (1.25, -4.0)]])  # off the map
    out = sample_bev(bev, pts, GRID)
    assert out.shape == (1, 8, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([1., .5, .5, .25, .75, 0., 0., 0.]))
    torch.testing.assert_close(out[0, :, 1], 10 * out[0, :, 0])
    # a point in the hot cell's neighbour with swapped axes would read the wrong cell: guard the layout
    swapped = torch.zeros(1, 1, 3, 4)
    swapped[0, 0, 2, 1] = 1.  # row 2 / col 1 is (x=0.75, y=1.5)
    assert sample_bev(swapped, torch.tensor([[[0.75, 1.5]]]), GRID).item() == pytest.approx(1.)
    assert sample_bev(swapped, torch.tensor([[[1.5, 0.75]]]), GRID).item() == pytest.approx(0.)


def test_sample_bev_matches_bilinear_reference_values_and_grads():
    gen = torch.Generator().manual_seed(2)
    bev = torch.randn(2, 3, 3, 4, generator=gen, requires_grad=True)
    xy = torch.rand(2, 25, 2, generator=gen) * torch.tensor([2.6, 3.6]) + torch.tensor([-0.3, -1.3])
    out = sample_bev(bev, xy, GRID)
    w = torch.randn(out.shape, generator=gen)
    (out * w).sum().backward()
    bev2 = bev.detach().clone().requires_grad_(True)
    ref = bilinear_reference(bev2, xy, GRID)
    (ref * w).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(bev.grad, bev2.grad)


def test_sample_bev_align_corners_true_puts_range_ends_on_outer_centres():
    bev = torch.arange(12.).view(1, 1, 3, 4)
    pts = torch.tensor([[[0., -1.], [2., 2.], [1., 0.5]]])
    out = sample_bev(bev, pts, GRID, align_corners=True)[0, :, 0]
    # (x_min, y_min) -> cell (0, 0); (x_max, y_max) -> cell (2, 3); the middle -> mean of the map's centre
    torch.testing.assert_close(out, torch.tensor([0., 11., 5.5]))


def test_sample_bev_empty_and_errors():
    bev = torch.randn(2, 3, 3, 4)
    assert sample_bev(bev, torch.zeros(2, 0, 2), GRID).shape == (2, 0, 3)
    with pytest.raises(ValueError, match=r'H=3, W=4'):
        sample_bev(torch.zeros(2, 3, 4, 3), torch.zeros(2, 1, 2), GRID)
    with pytest.raises(ValueError, match='xy'):
        sample_bev(bev, torch.zeros(1, 1, 2), GRID)


@CUDA
def test_bev_ops_on_cuda_equal_cpu():
    gen = torch.Generator().manual_seed(3)
    idx = random_sites(40, 2, (3, 3, 4), gen)
    feats = torch.randn(40, 2, generator=gen)
    for reduce in ('sum', 'mean', 'max', 'concat_z'):
        torch.testing.assert_close(sparse_to_bev(feats.cuda(), idx.cuda(), (3, 3, 4), 2, reduce).cpu(),
                                   sparse_to_bev(feats, idx, (3, 3, 4), 2, reduce))
    bev = torch.randn(2, 3, 3, 4, generator=gen)
    xy = torch.rand(2, 9, 2, generator=gen) * 2
    torch.testing.assert_close(sample_bev(bev.cuda(), xy.cuda(), GRID).cpu(), sample_bev(bev, xy, GRID))
    r, c, v = points_to_bev_cells(xy[0].cuda(), GRID)
    assert r.is_cuda and torch.equal(r.cpu(), points_to_bev_cells(xy[0], GRID)[0])
