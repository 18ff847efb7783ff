"""kdtoolbox.ops.imitation_masks: the RoI-scale level rule, DeFeat's per-level GT masks and FGFI's
anchor-IoU masks, against hand-drawn masks and plain-loop transcriptions of the official code."""
import math
import random

import pytest
import torch

from kdtoolbox.ops.imitation_masks import (anchor_iou_masks, find_prior_generator, gt_bboxes_from_samples,
                                           gt_level_masks, map_gt_levels, pad_gt_bboxes)


def T(rows):
    return torch.tensor(rows, dtype=torch.float32)


def grid(h, w, cells):
    m = torch.zeros(h, w)
    for y, x in cells:
        m[y, x] = 1
    return m


# ------------------------------------------------------------------ independent references
def ref_level(box, num_levels, finest):
    x1, y1, x2, y2 = (float(v) for v in box)
    area = max(x2 - x1 + 1, 0.0) * max(y2 - y1 + 1, 0.0)
    if area == 0:
        return 0
    return min(max(math.floor(math.log2(math.sqrt(area) / finest + 1e-6)), 0), num_levels - 1)


def ref_gt_masks(boxes_per_img, sizes, strides, finest=56.0, assign=True):
    """DeFeat's get_gt_mask, one box at a time in plain Python (ints, slices)."""
    out = []
    for level, (h, w) in enumerate(sizes):
        s = strides[level]
        per_img = []
        for boxes in boxes_per_img:
            m = [[0] * w for _ in range(h)]
            for box in boxes:
                if assign and ref_level(box, len(sizes), finest) != level:
                    continue
                x1, y1, x2, y2 = (float(v) for v in box)
                lx, rx = max(int(x1 / s), 0), min(int(x2 / s), w)
                ly, ry = max(int(y1 / s), 0), min(int(y2 / s), h)
                if lx == rx or ly == ry:
                    if 0 <= ly < h and 0 <= lx < w:
                        m[ly][lx] = 1
                else:
                    for y in range(ly, ry):
                        for x in range(lx, rx):
                            m[y][x] = 1
            per_img.append(m)
        out.append(torch.tensor(per_img, dtype=torch.float32))
    return out


def ref_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-6)


def ref_anchor_masks(boxes_per_img, sizes, level_anchors, psi=0.5, assign=False, finest=56.0):
    """FGFI's mask, GT by GT and anchor by anchor (level_anchors[l]: list over h, w, a of boxes)."""
    out = []
    for level, (h, w) in enumerate(sizes):
        anchors = level_anchors[level]
        per_loc = len(anchors) // (h * w)
        per_img = []
        for boxes in boxes_per_img:
            m = [[0] * w for _ in range(h)]
            for box in boxes:
                if assign and ref_level(box, len(sizes), finest) != level:
                    continue
                ious = [ref_iou(a, box) for a in anchors]
                thr = psi * max(ious)
                for idx, iou in enumerate(ious):
                    if iou > thr:
                        loc = idx // per_loc
                        m[loc // w][loc % w] = 1
            per_img.append(m)
        out.append(torch.tensor(per_img, dtype=torch.float32))
    return out


# ------------------------------------------------------------------ level rule
def test_map_gt_levels_by_hand():
    # sqrt((w+1)(h+1)): 56 -> 0, 111 -> 0, 112 -> 1, 224 -> 2, 448 -> 3, 2000 -> clamped 3,
    # degenerate (1x1) -> 0, inverted -> 0
    boxes = T([[0, 0, 55, 55], [0, 0, 110, 110], [0, 0, 111, 111], [10, 10, 233, 233],
               [0, 0, 447, 447], [0, 0, 1999, 1999], [5, 5, 5, 5], [50, 50, 10, 10]])
    assert map_gt_levels(boxes, 4).tolist() == [0, 0, 1, 2, 3, 3, 0, 0]
    # without the legacy +1: sqrt(w h)
    assert map_gt_levels(T([[0, 0, 112, 112], [0, 0, 111, 111]]), 4, plus_one=False).tolist() == [1, 0]
    # batched leading dims
    assert map_gt_levels(boxes.view(2, 4, 4), 4).shape == (2, 4)


# ------------------------------------------------------------------ DeFeat GT masks
SIZES = [(8, 8), (4, 4)]   # a 32 x 32 batch at strides 4 and 8
STRIDES = [4, 8]
FINEST = 8.0               # small canonical size so that 32 px boxes reach level 1


def test_gt_masks_drawn_by_hand():
    boxes = T([[2, 3, 13, 9],      # (12x7): level 0 -> x 0..2, y 0..1 at stride 4
               [16, 8, 31, 31],    # (16x24): level 1 -> x int(2)=2 .. int(3.875)=3, y 1..3 at stride 8
               [20, 20, 20, 20]])  # degenerate: level 0, the single cell (5, 5)
    m0, m1 = gt_level_masks([boxes], SIZES, STRIDES, finest_scale=FINEST)
    assert torch.equal(m0[0], grid(8, 8, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (5, 5)]))
    assert torch.equal(m1[0], grid(4, 4, [(1, 2), (2, 2)]))
    # each box marks only its own level; assign_levels=False marks every level
    a0, a1 = gt_level_masks([boxes], SIZES, STRIDES, finest_scale=FINEST, assign_levels=False)
    assert a0[0, 2:8, 4:8].sum() > 0 and a1[0, 0, 0] == 1


def test_gt_masks_edge_boxes():
    whole = T([[0, 0, 32, 32]])        # covers the image: level 1 (clamped), the full 4x4 grid
    almost = T([[0, 0, 31, 31]])       # int(31/8) = 3: the exclusive end leaves the last row/column
    partly = T([[-10, 24, 12, 40]])    # x from int(-1.25) -> 0 to 1, y from 3 to min(5, 4): one cell
    outside = T([[40, 40, 60, 60]])    # beyond the grid: nothing
    m = gt_level_masks([whole, almost, partly, outside], SIZES, STRIDES, finest_scale=FINEST)
    assert torch.equal(m[1][0], torch.ones(4, 4)) and m[0][0].sum() == 0
    assert torch.equal(m[1][1], grid(4, 4, [(y, x) for y in range(3) for x in range(3)]))
    assert torch.equal(m[1][2], grid(4, 4, [(3, 0)]))
    assert m[0][3].sum() == 0 and m[1][3].sum() == 0


def test_gt_masks_no_boxes_and_mixed_batch():
    empty = torch.zeros(0, 4)
    assert all(m.sum() == 0 and m.shape == (2, *s) for m, s in
               zip(gt_level_masks([empty, empty], SIZES, STRIDES), SIZES))
    # different box counts and image sizes: each image's mask is the one it gets alone
    a = T([[2, 3, 13, 9], [16, 8, 31, 31]])
    b = T([[0, 0, 10, 6]])              # a smaller image (e.g. 16 x 24) padded into the batch
    both = gt_level_masks([a, empty, b], SIZES, STRIDES, finest_scale=FINEST)
    for i, boxes in enumerate([a, empty, b]):
        alone = gt_level_masks([boxes], SIZES, STRIDES, finest_scale=FINEST)
        for level in range(2):
            assert torch.equal(both[level][i], alone[level][0])


def test_gt_masks_match_plain_loops_on_random_boxes():
    rng = random.Random(0)
    sizes, strides = [(25, 34), (13, 17), (7, 9), (4, 5), (2, 3)], [4, 8, 16, 32, 64]
    boxes_per_img = []
    for n in (0, 1, 7, 30):
        boxes = []
        for _ in range(n):
            x1, y1 = rng.randint(-30, 130), rng.randint(-30, 100)
            boxes.append([x1, y1, x1 + rng.choice([0, 1, 3, 9, 40, 90]), y1 + rng.choice([0, 2, 5, 17, 60])])
        boxes_per_img.append(T(boxes).reshape(-1, 4))
    # the official code indexes out of range for a box starting beyond the grid: keep those out
    boxes_per_img = [b[(b[:, 0] < 136) & (b[:, 1] < 100)] for b in boxes_per_img]
    for assign in (True, False):
        ours = gt_level_masks(boxes_per_img, sizes, strides, finest_scale=20.0, assign_levels=assign)
        ref = ref_gt_masks(boxes_per_img, sizes, strides, finest=20.0, assign=assign)
        for o, r in zip(ours, ref):
            assert torch.equal(o, r)


def test_gt_masks_no_grad_dtype_device():
    boxes = T([[2, 3, 13, 9]]).requires_grad_()
    masks = gt_level_masks([boxes], SIZES, STRIDES)
    assert all(not m.requires_grad and m.dtype == torch.float32 for m in masks)
    with pytest.raises(ValueError, match='strides'):
        gt_level_masks([boxes], SIZES, [4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_masks_follow_the_device():
    boxes = T([[2, 3, 13, 9]])
    m = gt_level_masks([boxes], SIZES, STRIDES, device=torch.device('cuda'))
    assert m[0].is_cuda
    gen = dict(type='AnchorGenerator', strides=[16], ratios=[1.0], scales=[1.0], base_sizes=[16])
    assert anchor_iou_masks([boxes.cuda()], [(2, 2)], gen)[0].is_cuda


# ------------------------------------------------------------------ FGFI anchor-IoU masks
ONE_ANCHOR = dict(type='AnchorGenerator', strides=[16], ratios=[1.0], scales=[1.0], base_sizes=[16])
TWO_ANCHORS = dict(type='AnchorGenerator', strides=[16], ratios=[1.0], scales=[1.0, 2.0], base_sizes=[16])


def test_anchor_mask_one_anchor_by_hand():
    # 2x2 grid, stride 16, one 16 px anchor centred on each grid point (mmdet: centre offset 0):
    # (0,0) [-8,-8,8,8] (border-crossing), (0,1) [8,-8,24,8], (1,0) [-8,8,8,24], (1,1) [8,8,24,24].
    # GT [4,4,20,20]: IoU 16/496 = 0.032, 48/464 = 0.103, 0.103, 144/368 = 0.391 (the best).
    gt = [T([[4, 4, 20, 20]])]
    assert torch.equal(anchor_iou_masks(gt, [(2, 2)], ONE_ANCHOR, psi=0.5)[0][0], grid(2, 2, [(1, 1)]))
    assert torch.equal(anchor_iou_masks(gt, [(2, 2)], ONE_ANCHOR, psi=0.2)[0][0],
                       grid(2, 2, [(0, 1), (1, 0), (1, 1)]))
    # psi 0.05: threshold 0.0196 < 0.032, the border-crossing anchor counts too
    assert torch.equal(anchor_iou_masks(gt, [(2, 2)], ONE_ANCHOR, psi=0.05)[0][0], torch.ones(2, 2))


def test_anchor_mask_two_anchors_by_hand():
    # anchors of 16 and 32 px per location. GT [0,0,32,32]:
    #   (0,0): 64/1216 = 0.053, 256/1792 = 0.143;  (0,1) and (1,0): 128/1152 = 0.111, 512/1536 = 0.333;
    #   (1,1): 256/1024 = 0.25, 1.0 (the 32 px anchor is the GT itself).
    gt = [T([[0, 0, 32, 32]])]
    assert torch.equal(anchor_iou_masks(gt, [(2, 2)], TWO_ANCHORS, psi=0.5)[0][0], grid(2, 2, [(1, 1)]))
    # psi 0.3: only the 32 px anchors of (0,1), (1,0) pass (0.333); at (1,1) the second anchor
    assert torch.equal(anchor_iou_masks(gt, [(2, 2)], TWO_ANCHORS, psi=0.3)[0][0],
                       grid(2, 2, [(0, 1), (1, 0), (1, 1)]))
    # two GTs, each against its own best anchor: the union
    gts = [T([[0, 0, 32, 32], [-8, -8, 8, 8]])]
    assert torch.equal(anchor_iou_masks(gts, [(2, 2)], TWO_ANCHORS, psi=0.5)[0][0],
                       grid(2, 2, [(0, 0), (1, 1)]))


def test_anchor_mask_edge_cases():
    empty = torch.zeros(0, 4)
    out = anchor_iou_masks([empty, empty], [(2, 2)], ONE_ANCHOR)
    assert out[0].shape == (2, 2, 2) and out[0].sum() == 0
    # degenerate and far-away GTs overlap no anchor: nothing; a box partly outside still marks
    weird = [T([[10, 10, 10, 30]]), T([[500, 500, 600, 600]]), T([[-20, -20, 12, 12]])]
    out = anchor_iou_masks(weird, [(2, 2)], ONE_ANCHOR)[0]
    assert out[0].sum() == 0 and out[1].sum() == 0 and out[2, 0, 0] == 1
    # a box covering the image marks the anchors nearest its best IoU
    whole = anchor_iou_masks([T([[0, 0, 32, 32]])], [(2, 2)], TWO_ANCHORS, psi=0.1)[0]
    assert whole.sum() == 4


def test_anchor_masks_fpn_assignment():
    gen = dict(type='AnchorGenerator', strides=[4, 8], ratios=[1.0], scales=[2.0], base_sizes=[4, 8])
    small = T([[4, 4, 12, 12]])    # 9 x 9: level 0 with finest_scale 8
    big = T([[0, 0, 30, 30]])      # 31 x 31: level 1
    sizes = [(8, 8), (4, 4)]
    assigned = anchor_iou_masks([small, big], sizes, gen, assign_levels=True, finest_scale=8.0)
    assert assigned[0][0].sum() > 0 and assigned[1][0].sum() == 0
    assert assigned[0][1].sum() == 0 and assigned[1][1].sum() > 0
    everywhere = anchor_iou_masks([small, big], sizes, gen, assign_levels=False, finest_scale=8.0)
    assert everywhere[1][0].sum() > 0 and everywhere[0][1].sum() > 0


def test_anchor_masks_match_plain_loops_with_retinanet_anchors():
    from kdtoolbox.ops.imitation_masks import build_anchor_generator
    cfg = dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
               strides=[8, 16, 32])
    gen = build_anchor_generator(cfg)
    sizes = [(12, 10), (6, 5), (3, 3)]
    level_anchors = [gen.single_level_grid_priors(s, i, device='cpu').tolist() for i, s in enumerate(sizes)]
    rng = random.Random(1)
    boxes_per_img = []
    for n in (0, 1, 5):
        boxes = []
        for _ in range(n):
            x1, y1 = rng.uniform(-10, 70), rng.uniform(-10, 90)
            boxes.append([x1, y1, x1 + rng.uniform(4, 80), y1 + rng.uniform(4, 80)])
        boxes_per_img.append(T(boxes).reshape(-1, 4))
    for assign in (False, True):
        for psi in (0.5, 0.8):
            ours = anchor_iou_masks(boxes_per_img, sizes, gen, psi=psi, assign_levels=assign, finest_scale=16.0)
            ref = ref_anchor_masks(boxes_per_img, sizes, level_anchors, psi=psi, assign=assign, finest=16.0)
            for o, r in zip(ours, ref):
                assert torch.equal(o, r)


def test_helpers(det_batch):
    inputs, samples = det_batch
    boxes = gt_bboxes_from_samples(samples)
    assert len(boxes) == 2 and boxes[0].shape == (2, 4)
    padded, valid = pad_gt_bboxes([boxes[0], torch.zeros(0, 4)])
    assert padded.shape == (2, 2, 4) and valid.tolist() == [[True, True], [False, False]]
    from mmdet.registry import MODELS
    from conftest import retinanet_cfg
    detector = MODELS.build(retinanet_cfg(18))
    assert find_prior_generator(detector) is detector.bbox_head.prior_generator
    with pytest.raises(AttributeError, match='prior_generator'):
        find_prior_generator(torch.nn.Linear(1, 1))
