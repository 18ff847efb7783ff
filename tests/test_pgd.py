"""PGD: the prediction-guided weights and both losses against plain loops written from the paper,
hand-computed Gaussians, the teacher's box decoding (GFL per-level strides, anchor deltas, anchors
per location), edge cases, the distiller inside a DistillationModel (records, gradients, errors),
the paper config and the demo config through tools/train.py."""
import copy
import math
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from conftest import ROOT, distill_model_cfg, make_det_batch, retinanet_cfg
from kdtoolbox_plugins.detection.pgd import (COV_EPS, PGD, PGDClsLoss, PGDRegLoss, gaussian_weights,
                                             pgd_cls_loss, pgd_reg_loss, pgd_value_maps, pgw_weights)

HP = dict(temp=0.8, alpha=0.04, beta=0.02, gamma=0.064, delta=8e-4)


def gfl_cfg(depth=18, channels=32, num_classes=3):
    """A tiny mmdet GFL (ResNet-``depth``, FPN P3-P7, one-conv towers), no download."""
    cfg = retinanet_cfg(depth, num_classes)
    cfg['type'] = 'GFL'
    cfg['neck']['out_channels'] = channels
    cfg['bbox_head'] = dict(
        type='GFLHead', num_classes=num_classes, in_channels=channels, stacked_convs=1,
        feat_channels=channels, norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                              strides=[8, 16, 32, 64, 128]),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25), reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0))
    cfg['train_cfg'] = dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1,
                            debug=False)
    cfg['test_cfg'] = dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                           max_per_img=20)
    return cfg


# --- references written plainly from the paper ------------------------------------------------
def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def inside(c, g):
    return g[0] < c[0] < g[2] and g[1] < c[1] < g[3]


def ref_pgw(centres, logits, boxes, gts, labels, alpha, k, eps=COV_EPS):
    """v[p] = max_g Gaussian weight at g's top-k priors by q, 0 outside g (lists of floats)."""
    out = [0.0] * len(centres)
    for gt, lab in zip(gts, labels):
        q = [sigmoid(logits[p][lab]) ** (1 - alpha) * iou(boxes[p], gt) ** alpha for p in range(len(centres))]
        top = sorted(range(len(centres)), key=lambda p: -q[p])[:min(k, len(centres))]
        mx = sum(centres[p][0] for p in top) / len(top)
        my = sum(centres[p][1] for p in top) / len(top)
        sxx = sum((centres[p][0] - mx) ** 2 for p in top) / len(top) + eps
        syy = sum((centres[p][1] - my) ** 2 for p in top) / len(top) + eps
        sxy = sum((centres[p][0] - mx) * (centres[p][1] - my) for p in top) / len(top)
        det = sxx * syy - sxy * sxy
        for p in top:
            dx, dy = centres[p][0] - mx, centres[p][1] - my
            maha = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
            if inside(centres[p], gt):
                out[p] = max(out[p], math.exp(-0.5 * maha))
    return out


def ref_background(centres, gts):
    return [0.0 if any(inside(c, g) for g in gts) else 1.0 for c in centres]


def ref_delta_decode(anchor, delta, stds):
    px, py = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gx, gy = px + pw * delta[0] * stds[0], py + ph * delta[1] * stds[1]
    gw, gh = pw * math.exp(delta[2] * stds[2]), ph * math.exp(delta[3] * stds[3])
    return [gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2]


def ref_gfl_decode(centre, logits, stride):
    """Each side (l, t, r, b): stride * sum_i i softmax(logits of the side)_i."""
    bins = len(logits) // 4
    dist = []
    for side in range(4):
        z = logits[side * bins:(side + 1) * bins]
        e = [math.exp(v) for v in z]
        dist.append(stride * sum(i * v for i, v in enumerate(e)) / sum(e))
    return [centre[0] - dist[0], centre[1] - dist[1], centre[0] + dist[2], centre[1] + dist[3]]


def ref_maps(head, cls_preds, reg_preds, gts, labels, pad_shapes, alpha_cls, alpha_reg, topk, gfl):
    """The three maps of every image by loops over levels, locations and anchors; each location
    takes the max over its anchors. Returns per level [N][H][W] lists."""
    gen = head.prior_generator
    num_classes = head.cls_out_channels
    out = {'cls': [], 'reg': [], 'bg': []}
    for i in range(cls_preds[0].shape[0]):
        centres, logits, boxes, where = [], [], [], []
        for lvl, (cp, rp) in enumerate(zip(cls_preds, reg_preds)):
            h_n, w_n = cp.shape[-2:]
            cpl, rpl = cp[i].tolist(), rp[i].tolist()  # [channels][H][W]
            stride = gen.strides[lvl][0]
            anchors = gen.single_level_grid_priors((h_n, w_n), lvl, device='cpu').tolist()
            a_n = gen.num_base_priors[lvl]
            valid_h, valid_w = math.ceil(pad_shapes[i][0] / stride), math.ceil(pad_shapes[i][1] / stride)
            for h in range(h_n):
                for w in range(w_n):
                    for a in range(a_n):
                        if h >= valid_h or w >= valid_w:
                            continue
                        anchor = anchors[(h * w_n + w) * a_n + a]
                        centre = [(anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2]
                        assert centre == pytest.approx([w * stride, h * stride], abs=1e-4)  # offset 0
                        logits.append([cpl[a * num_classes + c][h][w] for c in range(num_classes)])
                        if gfl:
                            boxes.append(ref_gfl_decode(centre, [ch[h][w] for ch in rpl], stride))
                        else:
                            boxes.append(ref_delta_decode(anchor, [rpl[a * 4 + j][h][w] for j in range(4)],
                                                          head.bbox_coder.stds))
                        centres.append(centre)
                        where.append((lvl, h, w))
        g, lab = gts[i].tolist(), labels[i].tolist()
        values = {'cls': ref_pgw(centres, logits, boxes, g, lab, alpha_cls, topk),
                  'reg': ref_pgw(centres, logits, boxes, g, lab, alpha_reg, topk),
                  'bg': ref_background(centres, g)}
        for key, vals in values.items():
            grids = [[[0.0] * p.shape[-1] for _ in range(p.shape[-2])] for p in cls_preds]
            for (lvl, h, w), v in zip(where, vals):
                grids[lvl][h][w] = max(grids[lvl][h][w], v)
            out[key].append(grids)
    return out


def loop_cls_loss(s, t, v, b, temp, alpha, beta, delta, lw):
    """PGD's cls loss by loops over n, c, h, w (float64)."""
    n_n, c_n, h_n, w_n = s.shape
    s, t, v, b = s.double().tolist(), t.double().tolist(), v.double().tolist(), b.double().tolist()
    fg = bg = at_c = at_s = 0.0
    for n in range(n_n):
        def spatial(f):
            logit = [[sum(abs(f[n][c][h][w]) for c in range(c_n)) / c_n / temp for w in range(w_n)]
                     for h in range(h_n)]
            z = sum(math.exp(x) for row in logit for x in row)
            return [[h_n * w_n * math.exp(x) / z for x in row] for row in logit]

        def channel(f, h, w):
            z = sum(math.exp(abs(f[n][c][h][w]) / temp) for c in range(c_n))
            return [c_n * math.exp(abs(f[n][c][h][w]) / temp) / z for c in range(c_n)]

        sp_t, sp_s = spatial(t), spatial(s)
        nz_v = sum(1 for row in v[n] for x in row if x != 0)
        nz_b = sum(1 for row in b[n] for x in row if x != 0)
        for h in range(h_n):
            for w in range(w_n):
                ch_t, ch_s = channel(t, h, w), channel(s, h, w)
                m_fg = v[n][h][w] / nz_v if nz_v else 0.0
                m_bg = b[n][h][w] / nz_b if nz_b else 0.0
                for c in range(c_n):
                    sq = (s[n][c][h][w] - t[n][c][h][w]) ** 2
                    fg += m_fg * sp_t[h][w] * ch_t[c] * sq
                    bg += m_bg * sp_t[h][w] * ch_t[c] * sq
                    at_c += abs(ch_s[c] - ch_t[c])
                at_s += abs(sp_s[h][w] - sp_t[h][w])
    return dict(loss_fg=lw * alpha * fg / n_n, loss_bg=lw * beta * bg / n_n,
                loss_at=delta * (at_c / (n_n * h_n * w_n) + at_s / n_n))


def loop_reg_loss(s, t, v, temp, gamma, delta):
    n_n, c_n, h_n, w_n = s.shape
    feat = at = 0.0
    count = 0
    for n in range(n_n):
        for h in range(h_n):
            for w in range(w_n):
                if float(v[n, h, w]) == 0:
                    continue
                count += 1
                xs = [float(s[n, c, h, w]) for c in range(c_n)]
                xt = [float(t[n, c, h, w]) for c in range(c_n)]
                zs = sum(math.exp(abs(x) / temp) for x in xs)
                zt = sum(math.exp(abs(x) / temp) for x in xt)
                ch_s = [c_n * math.exp(abs(x) / temp) / zs for x in xs]
                ch_t = [c_n * math.exp(abs(x) / temp) / zt for x in xt]
                feat += float(v[n, h, w]) * sum(ch_t[c] * (xs[c] - xt[c]) ** 2 for c in range(c_n)) / c_n
                at += sum(abs(ch_s[c] - ch_t[c]) for c in range(c_n))
    return dict(loss_feat=gamma * feat / count, loss_at=delta * at / count)


def assert_close(actual, expected, rel=1e-4, abs_=1e-6):
    assert float(actual) == pytest.approx(expected, rel=rel, abs=abs_)


# --- the Gaussian and the weights, by hand ----------------------------------------------------
def test_gaussian_weights_by_hand():
    # four corners of a square: mean (10, 20), covariance I (+eps): d^T S^-1 d = 2 / (1 + eps)
    pts = torch.tensor([[[9., 19.], [11., 19.], [9., 21.], [11., 21.]]])
    w = gaussian_weights(pts)
    assert torch.allclose(w, torch.full((1, 4), math.exp(-1 / (1 + COV_EPS))))
    # three collinear points (singular covariance without the regulariser): variance along the
    # line 4/3 -> the end points are at Mahalanobis distance^2 = 2 / (4/3 + eps), the middle at 0
    pts = torch.tensor([[[0., 0.], [1., 1.], [2., 2.]]])
    w = gaussian_weights(pts)
    end = math.exp(-1 / (4 / 3 + COV_EPS))
    assert torch.allclose(w, torch.tensor([[end, 1.0, end]]), atol=1e-6)
    assert torch.isfinite(gaussian_weights(torch.zeros(2, 5, 2))).all()  # identical points: weight 1
    assert torch.equal(gaussian_weights(torch.zeros(2, 5, 2)), torch.ones(2, 5))


def test_pgw_top_k_includes_priors_outside_the_box_but_weights_only_inside():
    """One GT covering the first two of three top-3 priors: the Gaussian is fitted to all three
    centres (x = 0, 2, 4: mean 2, variance 8/3), the third gets 0 as it is outside the box."""
    centres = torch.tensor([[0., 0.], [2., 0.], [4., 0.], [50., 50.]])
    quality = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    from kdtoolbox_plugins.detection.pgd import centres_inside
    ins = centres_inside(centres, torch.tensor([[-1., -1., 3., 1.]]))
    assert ins.reshape(-1).tolist() == [True, True, False, False]
    w = pgw_weights(centres, quality, ins, topk=3)
    expected = [math.exp(-0.5 * 4 / (8 / 3 + COV_EPS)), 1.0, 0.0, 0.0]
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)
    # K larger than the number of priors: all 4 used, no error
    w = pgw_weights(centres, quality, ins, topk=30)
    assert w.shape == (4,) and torch.isfinite(w).all() and w[2] == 0 and w[3] == 0
    # two GTs: the max over GTs; no GT: zeros
    q2 = torch.cat([quality, quality.flip(0)], dim=1)
    ins2 = torch.tensor([[True, True], [True, False], [False, False], [False, True]])
    w2 = pgw_weights(centres, q2, ins2, topk=3)
    # GT 2's top-3 are priors 3, 2, 1: three points, each at Mahalanobis distance^2 2 (an affine
    # image of an equilateral triangle) -> exp(-1) for prior 3, the only one inside GT 2
    assert torch.allclose(w2, torch.tensor([expected[0], 1.0, 0.0, math.exp(-1)]), atol=1e-4)
    assert torch.equal(pgw_weights(centres, quality[:, :0], ins[:, :0], topk=3), torch.zeros(4))


def test_pgw_against_plain_loops_with_sigmoid_and_iou():
    g = torch.Generator().manual_seed(1)
    num = 40
    centres = torch.rand(num, 2, generator=g) * 64
    logits = torch.randn(num, 3, generator=g)
    # predicted boxes around the centres, large enough to overlap every GT (no ties at q = 0)
    half = 66 + 20 * torch.rand(num, 2, generator=g)
    boxes = torch.cat([centres - half, centres + half], dim=1)
    gts = torch.tensor([[5., 8., 40., 30.], [20., 25., 60., 62.], [0., 0., 12., 10.]])
    labels = torch.tensor([2, 0, 2])
    from kdtoolbox_plugins.detection.pgd import centres_inside, prediction_quality
    for alpha, k in ((0.8, 30), (0.6, 7), (0.6, 100)):
        q = prediction_quality(logits, boxes, gts, labels, alpha)
        w = pgw_weights(centres, q, centres_inside(centres, gts), k)
        ref = ref_pgw(centres.tolist(), logits.tolist(), boxes.tolist(), gts.tolist(), labels.tolist(), alpha, k)
        assert torch.allclose(w, torch.tensor(ref, dtype=torch.float32), atol=1e-5), (alpha, k)
        assert (w > 0).sum() > 3


# --- the teacher's predictions -> maps ---------------------------------------------------------
def build_head(kind, num_classes=3):
    if kind == 'gfl':
        cfg = gfl_cfg(num_classes=num_classes)['bbox_head']
    else:
        cfg = dict(retinanet_cfg(18, num_classes)['bbox_head'])
        # 3 big anchors per location (every anchor overlaps every GT: no ties at q = 0) and the
        # coder's stds of ATSS / GFL-style configs, to check they are used
        cfg['anchor_generator'] = dict(type='AnchorGenerator', octave_base_scale=8, scales_per_octave=1,
                                       ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128])
        cfg['bbox_coder'] = dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])
    return MODELS.build(cfg)


def random_preds(head, sizes, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = head.prior_generator.num_base_priors[0]
    reg_ch = 4 * (head.reg_max + 1) if hasattr(head, 'reg_max') else 4 * a
    cls = [torch.randn(n, a * head.cls_out_channels, h, w, generator=g) for h, w in sizes]
    reg = [torch.randn(n, reg_ch, h, w, generator=g) for h, w in sizes]
    return cls, reg


@pytest.mark.parametrize('kind, num_classes', [('gfl', 3), ('retina', 3), ('retina', 1)])
def test_value_maps_against_plain_loops(kind, num_classes):
    """Decoding (GFL: integral x the level's own stride; anchors: the coder's deltas), top-K over
    all levels, Gaussian, inside test, max over anchors of a location, background, pad_shape."""
    head = build_head(kind, num_classes)
    sizes = [(6, 5), (3, 3), (2, 2), (1, 1), (1, 1)]  # a 48 x 40 batch
    cls, reg = random_preds(head, sizes)
    gts = [torch.tensor([[4., 6., 30., 40.], [20., 2., 39., 20.]]), torch.tensor([[10., 10., 22., 26.]])]
    labels = [torch.tensor([0, num_classes - 1]), torch.tensor([num_classes - 1])]
    pads = [(48, 40), (32, 24)]  # the second image is smaller: its right/bottom priors are invalid
    topk = 9
    cls_maps, reg_maps, bg_maps = pgd_value_maps(head, cls, reg, gts, labels, pads, 0.8, 0.6, topk)
    ref = ref_maps(head, cls, reg, gts, labels, pads, 0.8, 0.6, topk, gfl=(kind == 'gfl'))
    for lvl, (h, w) in enumerate(sizes):
        assert cls_maps[lvl].shape == (2, h, w)
        assert torch.allclose(cls_maps[lvl], torch.tensor([r[lvl] for r in ref['cls']]), atol=1e-5), lvl
        assert torch.allclose(reg_maps[lvl], torch.tensor([r[lvl] for r in ref['reg']]), atol=1e-5), lvl
        assert torch.equal(bg_maps[lvl], torch.tensor([r[lvl] for r in ref['bg']])), lvl
    assert sum(int((m > 0).sum()) for m in cls_maps) > 4
    # invalid (padding) priors of the second image: no weight, no background
    assert bg_maps[0][1, 4:, :].sum() == 0 and bg_maps[0][1, :, 3:].sum() == 0
    assert bg_maps[0][0, 4:, :].sum() > 0


def test_gfl_decodes_each_level_with_its_own_stride():
    """A distribution peaked at bin 2 on every side: the box is the centre +- 2 * stride on every
    level (the official code decodes all levels with one stride, that of the level index = image
    index)."""
    from kdtoolbox.ops.dense_assign import decode_dense_predictions
    head = build_head('gfl')
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    cls = [torch.zeros(2, 3, h, w) for h, w in sizes]
    reg = [torch.full((2, 68, h, w), -50.0) for h, w in sizes]
    for r in reg:
        r[:, 2::17] = 50.0  # bin 2 of each side
    priors, logits, boxes = decode_dense_predictions(head, cls, reg)
    assert logits.shape == (2, 23, 3) and boxes.shape == (2, 23, 4)
    # level 0, location (h=1, w=3): centre (24, 8), stride 8; level 1, (1, 0): centre (0, 16), stride 16
    assert torch.allclose(boxes[1, 1 * 4 + 3], torch.tensor([24 - 16., 8 - 16., 24 + 16., 8 + 16.]))
    assert torch.allclose(boxes[0, 16 + 1 * 2 + 0], torch.tensor([0 - 32., 16 - 32., 0 + 32., 16 + 32.]))


def test_edge_cases_no_gt_off_grid_box_and_one_prior_per_gt():
    head = build_head('gfl')
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    cls, reg = random_preds(head, sizes, seed=3)
    box = torch.tensor([[3., 3., 20., 28.]])
    # no GT in the second image: zero value maps, background everywhere, finite
    maps = pgd_value_maps(head, cls, reg, [box, box[:0]], [torch.tensor([1]), torch.tensor([], dtype=torch.long)],
                          None, 0.8, 0.6, 30)
    for v, r, b in zip(*maps):
        assert torch.isfinite(v).all() and torch.isfinite(r).all()
        assert v[1].sum() == 0 and r[1].sum() == 0 and bool((b[1] == 1).all())
    assert maps[0][0][0].sum() > 0
    # a box off the grid (outside the image) adds nothing and removes no background
    off = torch.tensor([[3., 3., 20., 28.], [200., 200., 260., 240.]])
    no_label = torch.tensor([], dtype=torch.long)
    with_off = pgd_value_maps(head, cls, reg, [off, box[:0]], [torch.tensor([1, 0]), no_label], None, 0.8, 0.6, 30)
    for a, b in zip(maps, with_off):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # a tiny GT around one prior centre (8, 8): only that prior can carry weight
    tiny = torch.tensor([[7., 7., 9., 9.]])
    # (P = 23 < K = 30: every prior is in the top-K, the Gaussian still fits)
    v, r, bg = pgd_value_maps(head, cls, reg, [tiny, tiny], [torch.tensor([0])] * 2, None, 0.8, 0.6, 30)
    only = torch.zeros(2, 4, 4, dtype=torch.bool)
    only[:, 1, 1] = True
    for maps in (v, r):
        assert bool((maps[0][:, 1, 1] > 0).all()) and bool((maps[0][~only] == 0).all())
        assert all(bool((m == 0).all()) for m in maps[1:])
    assert torch.equal(bg[0], (~only).float()) and all(bool((b == 1).all()) for b in bg[1:])


# --- the losses ---------------------------------------------------------------------------------
def test_cls_loss_against_plain_loops():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    v = torch.zeros(2, 3, 5)
    v[0, 1, 1:4] = torch.tensor([0.5, 1.0, 0.25])
    v[0, 2, 0] = 0.7
    b = (torch.rand(2, 3, 5, generator=g) > 0.4).float()
    b[0] = b[0] * (v[0] == 0)
    out = pgd_cls_loss(s, t, v, b, level_weight=1.5, **{k: HP[k] for k in ('temp', 'alpha', 'beta', 'delta')})
    ref = loop_cls_loss(s, t, v, b, HP['temp'], HP['alpha'], HP['beta'], HP['delta'], 1.5)
    for key in ('loss_fg', 'loss_bg', 'loss_at'):
        assert_close(out[key], ref[key])
    assert out['loss_fg'] > 0  # image 1 has no foreground: it adds 0, not NaN
    module = PGDClsLoss(level_weight=1.5)
    assert torch.allclose(module(s, t, v, b)['loss_fg'], out['loss_fg'])


def test_cls_loss_equals_the_official_sqrt_weighted_mse():
    """The official code: MSE(sum) of sqrt(M A_S A_C)-weighted features over N."""
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 6, 4, 4, generator=g), torch.randn(2, 6, 4, 4, generator=g)
    v = torch.rand(2, 4, 4, generator=g) * (torch.rand(2, 4, 4, generator=g) > 0.5)
    out = pgd_cls_loss(s, t, v, torch.zeros_like(v), temp=0.5, alpha=1.0, beta=1.0, delta=0.0)
    m = v / (v != 0).sum(dim=(1, 2), keepdim=True).clamp(min=1)
    sp = 16 * torch.softmax((t.abs().mean(1) / 0.5).reshape(2, -1), 1).reshape(2, 4, 4)
    ch = 6 * torch.softmax(t.abs() / 0.5, dim=1)
    wgt = torch.sqrt(sp[:, None] * ch * m[:, None])
    assert_close(out['loss_fg'], float(((s * wgt - t * wgt) ** 2).sum() / 2))
    assert out['loss_bg'] == 0 and out['loss_at'] == 0


def test_reg_loss_against_plain_loops_and_without_positions():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(2, 5, 3, 3, generator=g), torch.randn(2, 5, 3, 3, generator=g)
    v = torch.zeros(2, 3, 3)
    v[0, 0, 0], v[0, 2, 1], v[1, 1, 1] = 0.9, 0.3, 1.0
    out = pgd_reg_loss(s, t, v, temp=0.8, gamma=0.064, delta=8e-4)
    ref = loop_reg_loss(s, t, v, 0.8, 0.064, 8e-4)
    assert_close(out['loss_feat'], ref['loss_feat'])
    assert_close(out['loss_at'], ref['loss_at'])
    assert torch.allclose(PGDRegLoss()(s, t, v)['loss_at'], out['loss_at'])
    s.requires_grad_(True)
    empty = pgd_reg_loss(s, t, torch.zeros(2, 3, 3))
    assert empty['loss_feat'].item() == 0 and empty['loss_at'].item() == 0
    empty['loss_feat'].backward()  # still in the graph
    assert s.grad is not None and s.grad.abs().sum() == 0
    with pytest.raises(ValueError, match='differ'):
        pgd_reg_loss(s, t[:, :4], v)


# --- the distiller --------------------------------------------------------------------------------
def gfl_model_cfg(**kwargs):
    return distill_model_cfg(dict(type='PGD', head_type='GFLHead', **kwargs), student=gfl_cfg(18), teacher=gfl_cfg(18))


@pytest.fixture(scope='module')
def gfl_model():
    """A GFL R18 -> GFL R18 (another random init) DistillationModel, built once."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        return MODELS.build(gfl_model_cfg())


def test_defaults_registration_and_config_errors():
    from kdtoolbox.registry import DISTILLERS, LOSSES
    assert DISTILLERS.get('PGD') is PGD and LOSSES.get('PGDClsLoss') is PGDClsLoss
    assert LOSSES.get('PGDRegLoss') is PGDRegLoss
    d = PGD()
    assert (d.temp, d.alpha, d.beta, d.gamma, d.delta) == (0.8, 0.04, 0.02, 0.064, 8e-4)
    assert d.level_weights == [1.0, 1.25, 1.5, 1.75, 2.0] and (d.alpha_cls, d.alpha_reg, d.topk) == (0.8, 0.6, 30)
    assert d.student_recorders == dict(cls_feat='bbox_head.cls_convs.0', reg_feat='bbox_head.reg_convs.0')
    assert d.teacher_recorders['cls_pred'] == 'bbox_head.gfl_cls'
    assert d.teacher_recorders['reg_pred4'] == 'bbox_head.scales.4'
    with pytest.raises(KeyError, match='FCOSHead'):
        PGD(head_type='FCOSHead')
    with pytest.raises(ValueError, match='level_weights'):
        PGD(num_levels=4)
    with pytest.raises(KeyError, match='cls and reg'):
        PGD(teacher_pred_modules=dict(cls='x'))
    # a GFL distiller on a RetinaNet teacher: the missing prediction layer is named at build time
    with pytest.raises(Exception, match='gfl_cls'):
        MODELS.build(distill_model_cfg(dict(type='PGD', head_type='GFLHead')))


@pytest.mark.parametrize('head_type', ['GFLHead', 'ATSSHead', 'RetinaHead'])
def test_prediction_layers_recorded_per_head_type_are_the_head_outputs(head_type):
    """mmdet's _forward calls bbox_head.forward() directly (no hook): the recorded prediction
    layers of HEAD_PREDICTIONS must give exactly the head's outputs, level by level."""
    from kdtoolbox.engine.recorder import Recorder
    from kdtoolbox_plugins.detection.pgd import HEAD_PREDICTIONS
    cfg = gfl_cfg()['bbox_head'] if head_type == 'GFLHead' else dict(retinanet_cfg(18)['bbox_head'])
    if head_type == 'ATSSHead':
        cfg.update(type='ATSSHead', in_channels=64, feat_channels=64, stacked_convs=1,
                   loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True,
                   loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))
    head = MODELS.build(cfg)
    head.eval()
    channels = cfg['in_channels']
    feats = [torch.randn(1, channels, 8 // 2 ** i + 1, 8 // 2 ** i + 1) for i in range(5)]
    paths = {}
    for kind, path in HEAD_PREDICTIONS[head_type].items():
        paths.update({f'{kind}{i}': path.format(i) for i in range(5)} if '{}' in path else {kind: path})
    recorder = Recorder(head, paths, 'teacher')
    with recorder, torch.no_grad():
        outs = head.forward(feats)
    records = recorder.records()
    for kind, out in zip(('cls', 'reg'), outs[:2]):
        got = records.calls(kind) if kind in paths else [records[f'{kind}{i}'] for i in range(5)]
        assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(got, out)), kind
    assert type(head).__name__ == head_type


def test_teacher_runner_records_the_teacher_raw_predictions(gfl_model):
    inputs, samples = make_det_batch(n=1, size=64)
    records = gfl_model.teacher_runner(inputs, samples)
    cls_scores, bbox_preds = gfl_model.teacher.bbox_head(gfl_model.teacher.extract_feat(inputs))
    for lvl in range(5):
        assert torch.equal(records.calls('cls_pred')[lvl], cls_scores[lvl])
        assert torch.equal(records[f'reg_pred{lvl}'], bbox_preds[lvl])  # after the level's Scale
    assert len(records.calls('cls_feat')) == 5


@pytest.mark.parametrize('which', ['gfl', 'retina'])
def test_distiller_losses_gradients_and_edge_batches(which, request):
    torch.manual_seed(0)
    if which == 'gfl':
        model = request.getfixturevalue('gfl_model')
        model.zero_grad()
    else:
        model = MODELS.build(distill_model_cfg(dict(type='PGD', head_type='RetinaHead')))
    inputs, samples = make_det_batch(n=2, size=64, boxes=[[4., 6., 40., 50.], [30., 20., 62., 60.]])
    samples[1].gt_instances = samples[1].gt_instances[:0]  # an image without boxes
    losses = model(inputs, samples, mode='loss')
    keys = [k for k in losses if k.startswith('distill.')]
    assert len(keys) == 25
    for key in keys:
        assert losses[key].dtype == torch.float32 and losses[key].dim() == 0 and torch.isfinite(losses[key]), key
    assert losses['distill.cls0.loss_bg'] > 0
    assert sum(float(losses[f'distill.cls{i}.loss_fg'].detach()) for i in range(5)) > 0
    assert sum(float(losses[f'distill.reg{i}.loss_feat'].detach()) for i in range(5)) > 0
    sum(losses[k] for k in keys).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    head = model.student.bbox_head
    for conv in (head.cls_convs[0].conv, head.reg_convs[0].conv):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
    # no box in the whole batch: no foreground, no reg loss, no NaN
    model.zero_grad()
    for s in samples:
        s.gt_instances = s.gt_instances[:0]
    losses = model(inputs, samples, mode='loss')
    for i in range(5):
        assert losses[f'distill.cls{i}.loss_fg'].item() == 0
        assert losses[f'distill.reg{i}.loss_feat'].item() == 0 and losses[f'distill.reg{i}.loss_at'].item() == 0
        assert torch.isfinite(losses[f'distill.cls{i}.loss_bg'])


def test_distiller_errors_name_the_fault():
    from kdtoolbox.engine import DistillContext
    model = MODELS.build(distill_model_cfg(dict(type='PGD', head_type='RetinaHead')))
    inputs, samples = make_det_batch(n=1, size=64)
    samples[0].gt_instances.labels = torch.tensor([0, 7])
    records = model.teacher_runner(inputs, samples)
    context = DistillContext.from_batch(inputs, samples)
    context.teacher = model.teacher
    with pytest.raises(ValueError, match='labels outside'):
        model.distiller.value_maps(records, context)
    # the teacher's head is not of head_type (a config mistake that recording alone misses)
    d = PGD(head_type='RetinaHead', teacher_pred_modules=dict(cls='retina_cls', reg='retina_reg'))
    d.head_type = 'ATSSHead'
    with pytest.raises(TypeError, match="head_type='ATSSHead'.*RetinaHead"):
        d.teacher_head(context)
    # 4 levels configured, 5 recorded
    d = PGD(head_type='RetinaHead', num_levels=4, level_weights=[1.0] * 4)
    with pytest.raises(ValueError, match='5 calls, expected one per level'):
        d._levels(records, 'cls_feat', 'teacher')
    student = retinanet_cfg(18)
    student['bbox_head'].update(feat_channels=32)
    model = MODELS.build(distill_model_cfg(dict(type='PGD', head_type='RetinaHead'), student=student))
    with pytest.raises(ValueError, match='same channels'):
        model(*make_det_batch(n=1, size=64), mode='loss')


# --- configs ---------------------------------------------------------------------------------------
def test_paper_config_declares_the_official_settings():
    cfg = Config.fromfile(f'{ROOT}/configs/pgd_gfl.py')
    d = cfg.model.distiller
    assert d.type == 'PGD' and d.head_type == 'GFLHead'
    assert (d.temp, d.alpha, d.beta, d.gamma, d.delta) == (0.8, 0.04, 0.02, 0.064, 8e-4)
    assert list(d.level_weights) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert (d.alpha_cls, d.alpha_reg, d.topk) == (0.8, 0.6, 30)
    ckpt = cfg.model.teacher_checkpoint
    assert cfg.model.teacher == 'mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py'
    assert cfg.model.student.bbox_head.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='bbox_head.')
    assert cfg.model.student.neck.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='neck.')
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.train_dataloader.batch_size == 4
    assert cfg.train_cfg.max_epochs == 12
    demo = Config.fromfile(f'{ROOT}/configs/demo/pgd_retinanet_shapes.py')
    assert demo.model.distiller.head_type == 'RetinaHead' and demo.model.student.backbone.depth == 18


@pytest.mark.slow
def test_paper_config_builds_and_runs_a_step():
    """The full GFL R101 -> R50 models (random weights, nothing downloaded) on one 64 px image."""
    from test_fgd import offline
    cfg = offline('configs/pgd_gfl.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert type(model.student).__name__ == 'GFL' and model.teacher.backbone.depth == 101
    inputs, samples = make_det_batch(n=1, size=64, boxes=[[8., 8., 40., 56.]])
    losses = model.loss(inputs, samples)
    for i in range(5):
        for key in ('cls{}.loss_fg', 'cls{}.loss_bg', 'cls{}.loss_at', 'reg{}.loss_feat', 'reg{}.loss_at'):
            assert torch.isfinite(losses['distill.' + key.format(i)])
    assert losses['distill.cls0.loss_fg'] > 0


@pytest.mark.slow
def test_demo_config_trains_two_iterations(tmp_path):
    from test_train_e2e import data_options, run
    teacher_cfg = Config.fromfile(f'{ROOT}/configs/demo/retinanet_r50_shapes_teacher.py').model
    teacher_cfg['_scope_'] = 'mmdet'
    teacher = MODELS.build(copy.deepcopy(teacher_cfg))
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)  # random: mechanics only
    del teacher
    work = tmp_path / 'pgd'
    out = run(['tools/train.py', 'configs/demo/pgd_retinanet_shapes.py', '--work-dir', str(work),
               '--cfg-options', f'model.teacher_checkpoint={ckpt}',
               f'model.student.neck.init_cfg.checkpoint={ckpt}',
               f'model.student.bbox_head.init_cfg.checkpoint={ckpt}',
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
               *[o for o in data_options(tmp_path / 'shapes') if not o.startswith('train_cfg.val_interval')]])
    assert f'load bbox_head. in model from: {ckpt}' in out, out[-3000:]
    for key in ('cls4.loss_bg', 'cls0.loss_at', 'reg0.loss_at'):
        assert re.search(rf'distill\.{re.escape(key)}: [0-9.e-]+', out), (key, out[-3000:])
    saved = torch.load(work / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert not any(k.startswith('teacher.') for k in saved['state_dict'])
