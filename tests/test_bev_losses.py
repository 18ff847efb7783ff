"""The BEV masks (kdtoolbox/ops/bev_masks.py) and the BEVDistill, UniDistill and DistillBEV losses, each
against an independent computation on small hand-checkable inputs."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet3d.models.utils import draw_heatmap_gaussian, gaussian_radius
from mmdet3d.structures import LiDARInstance3DBoxes

from kdtoolbox.ops.bev import BEVGrid
from kdtoolbox.ops.bev_masks import (bev_box_corners, bev_box_keypoints, box_region_masks, gaussian_bev_masks,
                                     gaussian_radii)
from kdtoolbox_plugins.bev.bevdistill import InstanceContrastiveLoss, fg_feature_loss, teacher_box_loss
from kdtoolbox_plugins.bev.distillbev import distillbev_terms, region_masks
from kdtoolbox_plugins.bev.unidistill import (batch_keypoints, keypoint_feature_loss, keypoint_relation_loss,
                                              response_loss)

# 1 m cells, x in [0, 8) (8 columns), y in [-3, 3) (6 rows): H != W catches swapped axes
GRID = BEVGrid((0., -3., -2., 8., 3., 2.), (1., 1.), (6, 8))


def box(x, y, l, w, yaw=0.):
    return [x, y, 0., l, w, 1.5, yaw]


def cell_of(x, y, grid=GRID):
    """(row, col) of a metric point, written out."""
    return int(math.floor((y - grid.point_cloud_range[1]) / grid.cell_size[1])), \
        int(math.floor((x - grid.point_cloud_range[0]) / grid.cell_size[0]))


def reference_heatmap(boxes, grid, min_overlap, min_radius):
    """mmdet3d's own per-box drawing (CenterHead.get_targets_single), class-agnostic."""
    hm = torch.zeros(grid.shape)
    for b in boxes:
        length, width = b[3] / grid.cell_size[0], b[4] / grid.cell_size[1]
        radius = max(min_radius, int(gaussian_radius((torch.tensor(length), torch.tensor(width)), min_overlap)))
        ct = torch.tensor([(b[0] - grid.point_cloud_range[0]) / grid.cell_size[0],
                           (b[1] - grid.point_cloud_range[1]) / grid.cell_size[1]]).int()
        if 0 <= ct[0] < grid.shape[1] and 0 <= ct[1] < grid.shape[0]:
            draw_heatmap_gaussian(hm, ct, radius)
    return hm


# --- masks and keypoints ------------------------------------------------------------------------------
def test_keypoints_of_a_rotated_box_by_hand():
    # heading along +y (yaw 90 deg), length 4 along y, width 2 along x; left of the heading is -x
    kps = bev_box_keypoints(torch.tensor([box(10., 5., 4., 2., math.pi / 2)]))[0]
    expected = torch.tensor([[10, 5], [9, 7], [9, 3], [11, 3], [11, 7], [10, 7], [9, 5], [10, 3], [11, 5]],
                            dtype=torch.float32)
    assert torch.allclose(kps, expected, atol=1e-5)


def test_corners_match_mmdet3d_boxes():
    boxes = torch.tensor([box(3., -1., 4.2, 1.8, 0.7), box(-2., 2., 1., 3., -2.5)])
    ours = bev_box_corners(boxes)
    theirs = LiDARInstance3DBoxes(boxes).corners[:, :, :2]  # 8 corners, bottom and top share xy
    for o, t in zip(ours, theirs):
        d = torch.cdist(o, t)
        assert d.min(dim=1).values.max() < 1e-5  # each of our corners is an mmdet3d corner
        assert d.min(dim=0).values.max() < 1e-5  # and the other way round


def test_gaussian_radii_equal_mmdet3d_per_box():
    lengths, widths = torch.tensor([1., 4.5, 20., 0.3]), torch.tensor([1., 2., 3., 0.3])
    for overlap in (0.1, 0.7):
        ours = gaussian_radii(lengths, widths, overlap)
        ref = torch.stack([gaussian_radius((lengths[i], widths[i]), overlap) for i in range(4)])
        assert torch.allclose(ours, ref)


def test_gaussian_mask_single_box_at_known_cell():
    m = gaussian_bev_masks([torch.tensor([box(2.5, 0.5, 1., 1.)])], GRID, min_overlap=0.1, min_radius=1)
    row, col = cell_of(2.5, 0.5)
    assert (row, col) == (3, 2)
    assert m[0, row, col] == 1 and m.max() == 1
    # radius 1: the 3x3 window, sigma = 3 / 6 -> a side neighbour is exp(-1 / (2 * 0.25))
    assert torch.isclose(m[0, row, col + 1], torch.tensor(math.exp(-2.)))
    assert torch.isclose(m[0, row + 1, col + 1], torch.tensor(math.exp(-4.)))
    assert (m[0] > 0).sum() == 9


@pytest.mark.parametrize('overlap,radius', [(0.1, 2), (0.7, 0), (0.1, 1)])
def test_gaussian_mask_equals_mmdet3d_drawing(overlap, radius):
    boxes = [[box(2.5, 0.5, 4., 2., 0.3), box(3.2, 1.1, 1., 1.), box(7.9, -2.9, 6., 2.),
              box(9., 0., 2., 2.)],  # the last: centre off the grid, draws nothing (as CenterHead)
             [], [box(0.1, -0.2, 30., 30.)]]  # one box covering everything
    m = gaussian_bev_masks([torch.tensor(b).reshape(-1, 7) for b in boxes], GRID, overlap, radius)
    for i, b in enumerate(boxes):
        assert torch.allclose(m[i], reference_heatmap(b, GRID, overlap, radius)), i
    assert m[1].abs().sum() == 0


def test_region_masks_axis_aligned_and_rotated():
    # 2 x 2 m box centred on a cell corner: covers the 4 cells around (3, 0)
    inside, scale = box_region_masks([torch.tensor([box(3., 0., 2., 2.)])], GRID)
    expected = torch.zeros(GRID.shape)
    expected[2:4, 2:4] = 1
    assert torch.equal(inside[0], expected)
    assert torch.allclose(scale[0], expected * math.sqrt(1. / 4.))
    # a 45-degree diamond around the centre of cell (3, 4): |dx| + |dy| <= 1.5 / sqrt(2) * sqrt(2)
    s = 1.5 * math.sqrt(2)
    inside, _ = box_region_masks([torch.tensor([box(4.5, 0.5, s, s, math.pi / 4)])], GRID)
    rows, cols = torch.meshgrid(torch.arange(6.) + 0.5 - 3., torch.arange(8.) + 0.5, indexing='ij')
    manhattan = (cols - 4.5).abs() + (rows - 0.5).abs()
    assert torch.equal(inside[0] > 0, manhattan <= 1.5 + 1e-6)


def test_region_masks_overlap_keeps_the_larger_scale_and_empty_batch():
    boxes = torch.tensor([box(3., 0., 2., 2.), box(3., 0., 4., 4.)])
    inside, scale = box_region_masks([boxes, boxes[:0]], GRID)
    assert scale[0, 2, 2] == pytest.approx(0.5)  # small box: sqrt(1 / 4)
    assert scale[0, 1, 1] == pytest.approx(0.25)  # only the big box: sqrt(1 / 16)
    assert inside[1].sum() == 0 and scale[1].sum() == 0


# --- UniDistill ---------------------------------------------------------------------------------------
def _kp_cells(b):
    """(row, col) of the 9 keypoints of an axis-aligned box whose keypoints are cell centres."""
    return [cell_of(float(x), float(y)) for x, y in bev_box_keypoints(torch.tensor([b]))[0]]


def test_unidistill_axis_convention_on_a_non_square_grid():
    # channel 0 = column index (x), channel 1 = row index (y): sampling at a keypoint returns its cell
    rows, cols = torch.meshgrid(torch.arange(6.), torch.arange(8.), indexing='ij')
    feat = torch.stack([cols, rows])[None]
    b = box(4.5, 0.5, 2., 2.)  # keypoints on cell centres: cols 3..5, rows 2..4
    kps, valid = batch_keypoints([torch.tensor([b])], 'cpu')
    from kdtoolbox.ops.bev import sample_bev
    got = sample_bev(feat, kps.reshape(1, 9, 2), GRID)[0]
    for (r, c), g in zip(_kp_cells(b), got):
        assert torch.allclose(g, torch.tensor([float(c), float(r)]))


def test_unidistill_feature_loss_by_hand():
    torch.manual_seed(0)
    feat_s, feat_t = torch.randn(2, 3, 6, 8, requires_grad=True), torch.randn(2, 3, 6, 8)
    boxes = [torch.tensor([box(4.5, 0.5, 2., 2.), box(1.5, -1.5, 2., 2.)]), torch.tensor([box(6.5, 1.5, 2., 2.)])]
    kps, valid = batch_keypoints(boxes, 'cpu')
    loss = keypoint_feature_loss(feat_s, feat_t, kps, valid, GRID)
    per_box = []
    for i, bs in enumerate(boxes):
        for b in bs.tolist():
            per_box.append(torch.stack([(feat_s[i, :, r, c] - feat_t[i, :, r, c]).abs().mean()
                                        for r, c in _kp_cells(b)]).mean())
    assert torch.allclose(loss, torch.stack(per_box).mean())
    loss.backward()
    assert feat_s.grad.abs().sum() > 0


def test_unidistill_relation_loss_by_hand():
    torch.manual_seed(1)
    feat_s, feat_t = torch.randn(1, 4, 6, 8), torch.randn(1, 5, 6, 8)  # channels may differ
    b = box(4.5, 0.5, 2., 2.)
    kps, valid = batch_keypoints([torch.tensor([b])], 'cpu')
    loss = keypoint_relation_loss(feat_s, feat_t, kps, valid, GRID)
    cells = _kp_cells(b)
    fs = torch.stack([feat_s[0, :, r, c] for r, c in cells])
    ft = torch.stack([feat_t[0, :, r, c] for r, c in cells])
    rel_s = torch.tensor([[F.cosine_similarity(fs[i], fs[j], dim=0) for j in range(9)] for i in range(9)])
    rel_t = torch.tensor([[F.cosine_similarity(ft[i], ft[j], dim=0) for j in range(9)] for i in range(9)])
    assert torch.allclose(loss, (rel_s - rel_t).abs().mean(), atol=1e-6)


def test_unidistill_response_loss_by_hand():
    torch.manual_seed(2)
    hm_s, hm_t = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    reg_s, reg_t = torch.randn(1, 3, 6, 8), torch.randn(1, 3, 6, 8)
    b = box(2.5, 0.5, 4., 2.)
    mask = gaussian_bev_masks([torch.tensor([b])], GRID, 0.7, 0)
    ref_mask = reference_heatmap([b], GRID, 0.7, 0)
    assert torch.allclose(mask[0], ref_mask)
    loss_cls, loss_reg = response_loss(hm_s, hm_t, reg_s, reg_t, mask)
    c_s = torch.clamp(torch.sigmoid(hm_s), 1e-4, 1 - 1e-4).max(dim=1).values[0]
    c_t = (1 / (1 + torch.exp(-hm_t / 2))).max(dim=1).values[0]
    assert torch.allclose(loss_cls, ((c_s - c_t).abs() * ref_mask).sum() / ref_mask.sum())
    expected_reg = sum(((reg_s[0, k] - reg_t[0, k]).abs() * ref_mask).sum() for k in range(3)) / 3 / ref_mask.sum()
    assert torch.allclose(loss_reg, expected_reg)


def test_unidistill_no_boxes_gives_zero_with_gradient():
    feat = torch.randn(2, 3, 6, 8, requires_grad=True)
    kps, valid = batch_keypoints([torch.zeros(0, 7), torch.zeros(0, 7)], 'cpu')
    for fn in (keypoint_feature_loss, keypoint_relation_loss):
        loss = fn(feat, feat.detach() + 1, kps, valid, GRID)
        assert loss.item() == 0 and loss.requires_grad
    mask = gaussian_bev_masks([torch.zeros(0, 7)] * 2, GRID)
    cls, reg = response_loss(feat, feat.detach(), feat, feat.detach() + 1, mask)
    assert cls.item() == 0 and reg.item() == 0


# --- BEVDistill ---------------------------------------------------------------------------------------
def test_bevdistill_fg_loss_single_box_by_hand():
    torch.manual_seed(3)
    feat_s, feat_t = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    b = box(2.5, 0.5, 1., 1.)  # radius max(1, 0) = 1 -> a 3x3 Gaussian around cell (3, 2)
    fg = gaussian_bev_masks([torch.tensor([b])], GRID, 0.1, 1)
    loss = fg_feature_loss(feat_s, feat_t, fg)
    num, den = 0., 0.
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            w = math.exp(-(dr * dr + dc * dc) / (2 * 0.25))
            num += w * ((feat_s[0, :, 3 + dr, 2 + dc] - feat_t[0, :, 3 + dr, 2 + dc]) ** 2).sum()
            den += w
    assert torch.allclose(loss, num / den)
    assert fg_feature_loss(feat_s, feat_t, torch.zeros(1, 6, 8)).item() == 0


def test_bevdistill_contrastive_is_infonce_and_trains_only_heads_and_student():
    torch.manual_seed(4)
    loss_fn = InstanceContrastiveLoss(4, 6, mid_channels=8, temperature=0.07)
    feat_s, feat_t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 6, requires_grad=True)
    loss = loss_fn(feat_s, feat_t)
    logits = loss_fn.logits(feat_s, feat_t)
    z_s = F.normalize(loss_fn.student_head(feat_s), dim=1)
    z_t = F.normalize(loss_fn.teacher_head(feat_t), dim=1)
    assert torch.allclose(logits, torch.einsum('nc,mc->nm', z_t, z_s) / 0.07)
    expected = -sum(math.log(math.exp(logits[i, i]) / sum(math.exp(v) for v in logits[i])) for i in range(5)) / 5
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    assert feat_s.grad is not None and feat_t.grad is None
    assert all(p.grad is not None for p in loss_fn.parameters())
    assert loss_fn(feat_s[:1], feat_t[:1]).item() == 0  # a single instance: no negatives


def test_bevdistill_teacher_box_loss_by_hand():
    hm_t = torch.full((1, 2, 6, 8), -10.)
    hm_t[0, 0, 1, 1], hm_t[0, 1, 4, 6] = 2., 0.  # two peaks: scores sigmoid(2), 0.5
    reg_t = torch.zeros(1, 2, 6, 8)
    reg_s = torch.zeros(1, 2, 6, 8)
    reg_s[0, :, 1, 1] = torch.tensor([1., -2.])  # L1 3 at the first peak
    reg_s[0, 0, 4, 6] = 0.5  # L1 0.5 at the second
    reg_s[0, 0, 0, 0] = 100.  # not a teacher box: ignored
    loss = teacher_box_loss(reg_s, reg_t, hm_t, max_boxes=2)
    s1, s2 = 1 / (1 + math.exp(-2)), 0.5
    assert loss.item() == pytest.approx((s1 * 3 + s2 * 0.5) / ((s1 + s2) * 2), rel=1e-5)


# --- DistillBEV ---------------------------------------------------------------------------------------
def test_distillbev_regions_with_a_false_positive():
    b = torch.tensor([box(3., 0., 2., 2.)])  # fg: rows 2-3, cols 2-3
    fp = torch.zeros(1, 6, 8, dtype=torch.bool)
    fp[0, 0, 7] = fp[0, 2, 2] = True  # one teacher false positive off the boxes, one on a box (stays fg)
    r = region_masks([b], GRID, fp)
    assert r['fg'].sum() == 4 and r['fp'].sum() == 1 and r['fp'][0, 0, 7] == 1
    assert torch.equal(r['fg'] + r['bg'] + r['fp'], torch.ones(1, 6, 8))  # a partition
    n_bg = 48 - 4 - 1
    assert r['scale'][0, 0, 0] == pytest.approx(1 / n_bg)
    assert r['scale'][0, 2, 2] == pytest.approx(0.5)  # max(sqrt(1/4), 1/43)
    assert r['fp_scale'][0, 0, 7] == pytest.approx(1.)
    empty = region_masks([torch.zeros(0, 7)], GRID)
    assert empty['bg'].sum() == 48 and empty['fg'].sum() == 0 and empty['fp'].sum() == 0


def test_distillbev_terms_by_hand():
    torch.manual_seed(5)
    feat_s, feat_t = torch.randn(2, 3, 6, 8, requires_grad=True), torch.randn(2, 3, 6, 8)
    boxes = [torch.tensor([box(3., 0., 2., 2.)]), torch.zeros(0, 7)]
    fp = torch.zeros(2, 6, 8, dtype=torch.bool)
    fp[1, 5, 0] = True
    regions = region_masks(boxes, GRID, fp)
    terms = distillbev_terms(feat_s, feat_t, regions, temperature=0.5)

    def spatial(f):  # H W softmax over cells of mean_c |f| / T
        a = f.abs().mean(dim=0) / 0.5
        return 48 * torch.exp(a) / torch.exp(a).sum()

    fg = bg = fp_loss = 0.
    for i in range(2):
        a_s = (spatial(feat_t[i]) + spatial(feat_s[i].detach())) / 2
        ch = feat_t[i].abs().mean(dim=(1, 2)) / 0.5
        a_c = 3 * torch.exp(ch) / torch.exp(ch).sum()
        sq = (feat_s[i].detach() - feat_t[i]) ** 2
        fg += (sq.sum(0) * a_s * regions['fg'][i] * regions['scale'][i]).sum()
        bg += (sq.sum(0) * a_s * regions['bg'][i] * regions['scale'][i]).sum()
        fp_loss += ((sq * a_c[:, None, None]).sum(0) * a_s * regions['fp'][i] * regions['fp_scale'][i]).sum()
    assert torch.allclose(terms['fg'], fg / 2) and torch.allclose(terms['bg'], bg / 2)
    assert torch.allclose(terms['fp'], fp_loss / 2)
    terms['fg'].backward()
    assert feat_s.grad[1].abs().sum() == 0 and feat_s.grad[0].abs().sum() > 0  # sample 1 has no fg
