"""GID (general instance distillation): GISM against a plain-Python selection, each loss against
plain loops, the distiller on hand-made records whose answer is worked out by hand, the distiller
inside a DistillationModel with tiny RetinaNets (gradients, edge cases), errors, the configs and
2 iterations of tools/train.py on the demo config."""
import math
import os
import re
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config

import kdtoolbox
from conftest import ROOT, distill_model_cfg, make_det_batch, retinanet_cfg
from kdtoolbox.engine import DistillContext, Records, RecordSpec
from kdtoolbox_plugins.detection.gid import (GID, gi_candidates, gi_feature_loss, gi_relation_loss,
                                             response_cls_loss, response_mask, response_reg_loss,
                                             select_instances)

DEMO_CFG = 'configs/demo/gid_retinanet_shapes.py'
MAIN_CFG = 'configs/gid_retinanet.py'


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def ref_gism(t_logits, s_logits, t_boxes, s_boxes, img_shape, nms_pre, nms_iou, k, min_size):
    """GISM for one image with lists and loops: score, box choice, top-k, clip, size filter,
    greedy NMS, the k best."""
    cands = []
    for tl, sl, tb, sb in zip(t_logits, s_logits, t_boxes, s_boxes):
        pt, ps = max(sig(v) for v in tl), max(sig(v) for v in sl)
        cands.append((abs(pt - ps), list(tb) if pt > ps else list(sb)))
    cands = sorted(cands, key=lambda c: -c[0])[:nms_pre]
    h, w = img_shape
    kept = []
    for score, (x1, y1, x2, y2) in cands:
        box = [min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)]
        if box[2] - box[0] <= min_size or box[3] - box[1] <= min_size:
            continue
        if all(iou(box, other) <= nms_iou for other in kept):
            kept.append(box)
        if len(kept) == k:
            break
    return kept


def ref_rkd(s, t):
    """RKD distance over rows (lists), mean distance over i != j, SmoothL1 beta 1, / R(R-1)."""
    r = len(s)
    if r < 3:
        return 0.0

    def dists(x):
        d = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(x[i], x[j]))) for j in range(r)] for i in range(r)]
        mu = sum(d[i][j] for i in range(r) for j in range(r) if i != j) / (r * (r - 1))
        return [[v / mu for v in row] for row in d]
    ds, dt = dists(s), dists(t)
    total = 0.0
    for i in range(r):
        for j in range(r):
            if i != j:
                e = abs(ds[i][j] - dt[i][j])
                total += 0.5 * e * e if e < 1 else e - 0.5
    return total / (r * (r - 1))


def smooth_l1(e, beta):
    e = abs(e)
    return 0.5 * e * e / beta if e < beta else e - 0.5 * beta


def bce_soft(x, t_logit):
    y, p = sig(t_logit), sig(x)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def records(owner, **values):
    """Records as a recorder produces them: name -> list of calls (a list value = several calls)."""
    calls = {k: (v if isinstance(v, list) else [v]) for k, v in values.items()}
    return Records(owner, calls, {k: RecordSpec(module=k) for k in values})


def build(cfg):
    return kdtoolbox.MODELS.build(cfg)


# --------------------------------------------------------------------------- GISM
# six anchors of one 100 x 100 image, two classes; the answer worked out by hand:
# a0 teacher wins (0.953 vs 0.119: 0.833), box T0; a1 student wins (0.018 vs 0.881: 0.863), box S1;
# a2 teacher wins (0.924 vs 0.047: 0.877), box T2 (IoU(T0, T2) = 0.82: a0 is suppressed);
# a3 teacher wins (0.731 vs 0.5: 0.231), box T3 clipped to (80, 0, 100, 40);
# a4 student wins (0.5 vs 0.993: 0.493) but S4 is 8 px wide: dropped (<= 10);
# a5 a tie (score 0): the student's box S5.
T_LOGITS = [[3., -1.], [-4., -4.], [2.5, 0.], [1., 1.], [0., 0.], [1., 0.]]
S_LOGITS = [[-3., -2.], [2., 0.], [-3., -3.], [0., 0.], [5., 0.], [1., 0.]]
T_BOXES = [[10, 10, 50, 50], [0, 0, 99, 99], [12, 12, 52, 52], [80, -20, 130, 40], [0, 0, 99, 99], [0, 0, 99, 99]]
S_BOXES = [[0, 0, 5, 5], [60, 60, 90, 95], [0, 0, 99, 99], [0, 0, 99, 99], [30, 70, 38, 95], [0, 60, 20, 80]]


def gism(**kwargs):
    args = dict(nms_pre=3000, nms_iou=0.3, num_instances=10, min_box_size=10.0)
    args.update(kwargs)
    t, s = torch.tensor([T_LOGITS]), torch.tensor([S_LOGITS])
    scores, boxes = gi_candidates(t, s, torch.tensor([T_BOXES], dtype=torch.float32),
                                  torch.tensor([S_BOXES], dtype=torch.float32))
    out = select_instances(scores[0], boxes[0], (100, 100), **args)
    ref = ref_gism(T_LOGITS, S_LOGITS, T_BOXES, S_BOXES, (100, 100), args['nms_pre'], args['nms_iou'],
                   args['num_instances'], args['min_box_size'])
    assert out.tolist() == ref
    return out.tolist()


def test_gism_by_hand():
    assert gism() == [[12, 12, 52, 52], [60, 60, 90, 95], [80, 0, 100, 40], [0, 60, 20, 80]]
    assert gism(num_instances=2) == [[12, 12, 52, 52], [60, 60, 90, 95]]
    assert gism(nms_pre=3) == [[12, 12, 52, 52], [60, 60, 90, 95]]             # a0 .. a2 only
    assert gism(nms_iou=0.9) == [[12, 12, 52, 52], [60, 60, 90, 95], [10, 10, 50, 50], [80, 0, 100, 40],
                                 [0, 60, 20, 80]]
    assert gism(min_box_size=5.0)[2] == [30, 70, 38, 95]                      # 8 px wide: kept now
    assert gism(min_box_size=100.0) == []                                       # everything filtered


def test_gism_random_against_the_plain_reference():
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        n = 200
        t, s = torch.randn(1, n, 3, generator=g) * 3, torch.randn(1, n, 3, generator=g) * 3
        xy = torch.rand(n, 2, generator=g) * 90
        wh = torch.rand(n, 2, generator=g) * 50 + 2
        tb = torch.cat([xy, xy + wh], 1).unsqueeze(0)
        sb = (tb + torch.randn(1, n, 4, generator=g) * 5)
        sb = torch.cat([torch.minimum(sb[..., :2], sb[..., 2:]), torch.maximum(sb[..., :2], sb[..., 2:])], -1)
        scores, boxes = gi_candidates(t, s, tb, sb)
        out = select_instances(scores[0], boxes[0], (96, 80), nms_pre=150, nms_iou=0.3, num_instances=10,
                               min_box_size=10)
        ref = ref_gism(t[0].tolist(), s[0].tolist(), tb[0].tolist(), sb[0].tolist(), (96, 80), 150, 0.3, 10, 10)
        assert len(out) == len(ref) and len(ref) > 3
        assert torch.allclose(out, torch.tensor(ref), atol=1e-5)


# --------------------------------------------------------------------------- losses
def test_feature_loss_by_loops():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 2, 4, 4, generator=g, requires_grad=True)
    t = torch.randn(3, 2, 4, 4, generator=g)
    ref = sum((float(t[r, c, y, x]) - float(s[r, c, y, x])) ** 2
              for r in range(3) for c in range(2) for y in range(4) for x in range(4)) / (3 * 4 * 4)
    assert gi_feature_loss(s, t).item() == pytest.approx(ref, rel=1e-5)
    empty = gi_feature_loss(s[:0], t[:0])
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match='crops'):
        gi_feature_loss(s, t[:, :1])


def test_relation_loss_by_loops_and_edge_cases():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, 2, 3, 3, generator=g, requires_grad=True)
    t = torch.randn(5, 4, 3, 3, generator=g)  # other width: only distances are compared
    ref = ref_rkd(s.detach().flatten(1).tolist(), t.flatten(1).tolist())
    loss = gi_relation_loss(s, t)
    assert loss.item() == pytest.approx(ref, rel=1e-4) and ref > 0
    assert gi_relation_loss(s, 7.0 * t).item() == pytest.approx(ref, rel=1e-4)  # scale invariant
    loss.backward()
    assert s.grad.abs().sum() > 0
    for r in (0, 1, 2):  # fewer than 3 instances: 0, still in the graph
        zero = gi_relation_loss(s[:r], t[:r])
        assert zero.item() == 0.0 and zero.requires_grad


def test_response_losses_by_loops():
    g = torch.Generator().manual_seed(2)
    s_cls, t_cls = torch.randn(2, 6, 3, generator=g, requires_grad=True), torch.randn(2, 6, 3, generator=g)
    s_reg, t_reg = torch.randn(2, 6, 4, generator=g, requires_grad=True), torch.randn(2, 6, 4, generator=g) * 0.1
    mask = torch.tensor([[True, False, False, True, False, False], [False, False, True, False, False, False]])
    idx = [(b, a) for b in range(2) for a in range(6) if mask[b, a]]
    ref_cls = sum(bce_soft(float(s_cls[b, a, c]), float(t_cls[b, a, c])) for b, a in idx for c in range(3)) / 3
    ref_reg = sum(smooth_l1(float(s_reg[b, a, c]) - float(t_reg[b, a, c]), 0.1) for b, a in idx for c in range(4)) / 3
    assert response_cls_loss(s_cls, t_cls, mask).item() == pytest.approx(ref_cls, rel=1e-5)
    assert response_reg_loss(s_reg, t_reg, mask, 0.1).item() == pytest.approx(ref_reg, rel=1e-5)
    none = torch.zeros_like(mask)
    for loss in (response_cls_loss(s_cls, t_cls, none), response_reg_loss(s_reg, t_reg, none)):
        assert loss.item() == 0.0 and loss.requires_grad


def test_response_mask_is_the_assigners_positives():
    """RetinaNet's MaxIoUAssigner (0.5 / 0.4, min_pos_iou 0): IoU >= 0.5 with a GI, plus the best
    anchor of each GI (low-quality matches, like Detectron2's RetinaNet matcher)."""
    from mmdet.registry import TASK_UTILS
    assigner = TASK_UTILS.build(dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0))
    anchors = torch.tensor([[0, 0, 20, 20], [5, 5, 25, 25], [40, 40, 60, 60], [0, 0, 40, 40],
                            [50, 0, 70, 10], [100, 100, 120, 120]], dtype=torch.float32)
    gis = [torch.tensor([[0., 0., 20., 22.], [45., 40., 75., 70.]]), torch.zeros(0, 4)]
    mask = response_mask(assigner, anchors, gis)
    # by hand: a0 IoU 0.91 with GI 0; a1 0.47 (no); a2 0.44 with GI 1 but its best anchor: yes; others no
    assert mask.tolist() == [[True, False, True, False, False, False], [False] * 6]
    for img, boxes in enumerate(gis):
        for a, anchor in enumerate(anchors.tolist()):
            ious = [iou(anchor, b) for b in boxes.tolist()]
            best = [max(iou(x, b) for x in anchors.tolist()) for b in boxes.tolist()]
            expected = any(v >= 0.5 for v in ious) or any(v == m for v, m in zip(ious, best))
            assert bool(mask[img, a]) == expected


# --------------------------------------------------------------------------- hand-made records
def fake_model(strides=(8, 16), num_classes=2):
    """An object with a ``bbox_head`` that has what GID uses: one 4*stride square anchor per cell."""
    from mmdet.registry import TASK_UTILS
    head = SimpleNamespace(
        prior_generator=TASK_UTILS.build(dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                              ratios=[1.0], strides=list(strides))),
        bbox_coder=TASK_UTILS.build(dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.] * 4)),
        assigner=TASK_UTILS.build(dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)),
        cls_out_channels=num_classes, use_sigmoid_cls=True)
    return SimpleNamespace(bbox_head=head)


def samples_of(shapes, batch_shape):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = []
    for shape in shapes:
        s = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=batch_shape,
                                        batch_input_shape=batch_shape, scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
        out.append(s)
    return out


def identity_(adapter):
    with torch.no_grad():
        w = adapter.conv.weight
        w.zero_()
        for c in range(w.shape[0]):
            w[c, c, w.shape[2] // 2, w.shape[3] // 2] = 1.0
        adapter.conv.bias.zero_()


def test_distiller_on_hand_made_records():
    """A 64 x 64 image, levels P3 (8 x 8) and P4 (4 x 4), one 32 / 64 px anchor per cell, 2 classes.
    All logits -6 except: the teacher's P3 cell (3, 3) (+6, zero deltas: box (8, 8, 40, 40)) and the
    student's P4 cell (2, 3) (+5, zero deltas: (16, 0, 80, 64), clipped to (16, 0, 64, 64); IoU 0.23
    with the first). With K = 2 those are the GIs. Crops of constant maps are constant, so with an
    identity adapter the feature loss is sum_c (t_c - s_c)^2 over the two instances / 2."""
    torch.manual_seed(0)
    distiller = GID(student_channels=2, teacher_channels=2, num_instances=2,
                    roi_extractor=dict(featmap_strides=[8, 16], finest_scale=24),
                    loss_weight_feature=1.0, loss_weight_relation=1.0, loss_weight_cls=1.0, loss_weight_reg=1.0)
    identity_(distiller.adapter)
    g = torch.Generator().manual_seed(4)
    t_cls = [torch.full((1, 2, 8, 8), -6.0), torch.full((1, 2, 4, 4), -6.0)]
    s_cls = [torch.full((1, 2, 8, 8), -6.0), torch.full((1, 2, 4, 4), -6.0)]
    t_cls[0][0, 1, 3, 3] = 6.0
    s_cls[1][0, 0, 2, 3] = 5.0
    s_cls = [(c + 0.3 * torch.randn(c.shape, generator=g) * (c < 0)).requires_grad_() for c in s_cls]
    t_reg = [0.2 * torch.randn(1, 4, 8, 8, generator=g), 0.2 * torch.randn(1, 4, 4, 4, generator=g)]
    t_reg[0][0, :, 3, 3] = 0.0
    s_reg = [0.2 * torch.randn(1, 4, 8, 8, generator=g), 0.2 * torch.randn(1, 4, 4, 4, generator=g)]
    s_reg[1][0, :, 2, 3] = 0.0
    s_reg = [r.requires_grad_() for r in s_reg]
    s_val, t_val = [[1.0, 2.0], [3.0, -1.0]], [[0.5, 0.5], [2.0, 2.0]]
    s_feats = tuple(torch.tensor(v).view(1, 2, 1, 1).expand(1, 2, n, n).clone().requires_grad_()
                    for v, n in zip(s_val, (8, 4)))
    t_feats = tuple(torch.tensor(v).view(1, 2, 1, 1).expand(1, 2, n, n).clone() for v, n in zip(t_val, (8, 4)))
    seen = {}
    general_instances = distiller.general_instances
    distiller.general_instances = lambda *a: seen.setdefault('gi', general_instances(*a))
    context = DistillContext(data_samples=samples_of([(64, 64)], (64, 64)), student=fake_model(),
                             teacher=fake_model())
    losses = distiller(records('student', feats=s_feats, cls=s_cls, reg=s_reg),
                       records('teacher', feats=t_feats, cls=t_cls, reg=t_reg), context)
    assert seen['gi'][0].tolist() == [[8, 8, 40, 40], [16, 0, 64, 64]]
    assert losses['gid.num_instances'].item() == 2
    # sqrt(32 * 32) / 24 -> P3; sqrt(48 * 64) / 24 -> P4
    ref_feat = (sum((t - s) ** 2 for t, s in zip(t_val[0], s_val[0]))
                + sum((t - s) ** 2 for t, s in zip(t_val[1], s_val[1]))) / 2
    assert losses['gid.loss_feature'].item() == pytest.approx(ref_feat, rel=1e-5)     # 6.25
    assert losses['gid.loss_relation'].item() == 0.0                                   # 2 instances
    # response: anchors listed by hand in mmdet's order, the assigner's rule written out
    anchors = [[8 * x - 16, 8 * y - 16, 8 * x + 16, 8 * y + 16] for y in range(8) for x in range(8)]
    anchors += [[16 * x - 32, 16 * y - 32, 16 * x + 32, 16 * y + 32] for y in range(4) for x in range(4)]
    gis = [[8, 8, 40, 40], [16, 0, 64, 64]]
    best = [max(iou(a, b) for a in anchors) for b in gis]
    masked = [i for i, a in enumerate(anchors)
              if any(iou(a, b) >= 0.5 or iou(a, b) == m for b, m in zip(gis, best))]
    assert 27 in masked and 64 + 11 in masked  # the two anchors the GIs come from

    def flat(levels, ch):
        return [v for lv in levels for v in lv[0].detach().permute(1, 2, 0).reshape(-1, ch).tolist()]
    sc, tc, sr, tr = flat(s_cls, 2), flat(t_cls, 2), flat(s_reg, 4), flat(t_reg, 4)
    ref_cls = sum(bce_soft(sc[i][c], tc[i][c]) for i in masked for c in range(2)) / len(masked)
    ref_reg = sum(smooth_l1(sr[i][c] - tr[i][c], 0.1) for i in masked for c in range(4)) / len(masked)
    assert losses['gid.loss_cls'].item() == pytest.approx(ref_cls, rel=1e-5)
    assert losses['gid.loss_reg'].item() == pytest.approx(ref_reg, rel=1e-5) and ref_reg > 0
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert all(f.grad.abs().sum() > 0 for f in s_feats)
    assert s_cls[0].grad.abs().sum() > 0 and s_reg[1].grad.abs().sum() > 0
    assert distiller.adapter.conv.weight.grad.abs().sum() > 0


def test_adapter_on_rois_gives_the_same_loss_for_an_identity_adapter():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    model = fake_model()
    s_cls = [torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 4, 4, generator=g)]
    t_cls = [torch.randn(2, 2, 8, 8, generator=g) * 3, torch.randn(2, 2, 4, 4, generator=g) * 3]
    regs = [torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 4, 4)]
    s_feats = (torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g))
    t_feats = (torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g))
    out = {}
    for where in ('features', 'rois'):
        d = GID(student_channels=3, teacher_channels=3, adapt_on=where, min_box_size=4,
                roi_extractor=dict(featmap_strides=[8, 16]))
        identity_(d.adapter)
        out[where] = d(records('student', feats=s_feats, cls=s_cls, reg=regs),
                       records('teacher', feats=t_feats, cls=t_cls, reg=regs),
                       DistillContext(data_samples=samples_of([(64, 64), (64, 48)], (64, 64)),
                                      student=model, teacher=model))
    assert out['features']['gid.num_instances'].item() >= 3
    for key in ('gid.loss_feature', 'gid.loss_relation', 'gid.loss_cls'):
        assert out['features'][key].item() == pytest.approx(out['rois'][key].item(), rel=1e-5)
    assert out['features']['gid.loss_relation'].item() > 0


# --------------------------------------------------------------------------- DistillationModel
def gid_cfg(**kwargs):
    return dict(type='GID', student_channels=64, teacher_channels=64, **kwargs)


def small_model(num_classes=3, teacher=None, student=None, **kwargs):
    """Tiny RetinaNet R18 student and (by default, for speed) R18 teacher with other weights."""
    return build(distill_model_cfg(gid_cfg(**kwargs), student=student or retinanet_cfg(18, num_classes),
                                   teacher=teacher or retinanet_cfg(18, num_classes)))


def test_registered_defaults_and_recorders():
    assert kdtoolbox.DISTILLERS.get('GID') is GID
    d = GID()
    assert d.weights == dict(feature=5e-4, relation=40.0, cls=0.1, reg=1.0) and d.reg_beta == 0.1
    assert (d.nms_pre, d.nms_iou, d.num_instances, d.min_box_size) == (3000, 0.3, 10, 10.0)
    assert d.adapter.conv.kernel_size == (3, 3) and d.roi_extractor.output_size == (10, 10)
    assert d.roi_extractor.featmap_strides == [8, 16, 32, 64, 128] and d.roi_extractor.finest_scale == 112
    expected = {'feats': 'neck', 'cls': 'bbox_head.retina_cls', 'reg': 'bbox_head.retina_reg'}
    assert d.student_recorders == expected and d.teacher_recorders == expected


def capture(model):
    seen = {}
    general_instances = model.distiller.general_instances

    def spy(*args):
        seen['gi'] = general_instances(*args)
        return seen['gi']
    model.distiller.general_instances = spy
    return seen


def test_model_gids_match_an_independent_gism_and_gradients():
    """The GIs of a real step are those of the plain reference run on the two models' own outputs
    (student in train mode: the same BN statistics as in its loss pass); gradients reach the student
    (neck, backbone, head convs) and the adapter, never the teacher."""
    torch.manual_seed(0)
    model = small_model(nms_pre=300)
    seen = capture(model)
    inputs, samples = make_det_batch(n=2, size=64, boxes=[[10., 20., 40., 50.]])
    model.train()
    losses = model.loss(inputs, samples)
    keys = {f'distill.gid.loss_{k}' for k in ('feature', 'relation', 'cls', 'reg')}
    assert keys <= set(losses) and 'distill.gid.num_instances' in losses
    with torch.no_grad():
        t_out = model.teacher(inputs, mode='tensor')
        s_out = model.student(inputs, mode='tensor')
    for img in range(2):
        def per_anchor(out, head):
            cls = torch.cat([c[img].permute(1, 2, 0).reshape(-1, 3) for c in out[0]])
            reg = torch.cat([r[img].permute(1, 2, 0).reshape(-1, 4) for r in out[1]])
            anchors = torch.cat(head.prior_generator.grid_priors([c.shape[-2:] for c in out[0]], device='cpu'))
            return cls.tolist(), head.bbox_coder.decode(anchors, reg).tolist()
        t_cls, t_boxes = per_anchor(t_out, model.teacher.bbox_head)
        s_cls, s_boxes = per_anchor(s_out, model.student.bbox_head)
        ref = ref_gism(t_cls, s_cls, t_boxes, s_boxes, (64, 64), 300, 0.3, 10, 10)
        assert len(ref) == len(seen['gi'][img]) > 0
        assert torch.allclose(seen['gi'][img], torch.tensor(ref), atol=1e-3)
    assert losses['distill.gid.num_instances'].item() == sum(len(b) for b in seen['gi'])
    distill = sum(losses[k] for k in keys)
    assert torch.isfinite(distill)
    distill.backward()
    student = model.student
    for p in (student.neck.fpn_convs[0].conv.weight, student.backbone.conv1.weight,
              student.bbox_head.retina_cls.weight, student.bbox_head.retina_reg.weight,
              model.distiller.adapter.conv.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_all_instances_filtered_gives_zero_losses_that_keep_the_graph():
    model = small_model(min_box_size=1000.0)
    inputs, samples = make_det_batch(n=2, size=64)
    losses = model.loss(inputs, samples)
    assert losses['distill.gid.num_instances'].item() == 0
    for k in ('feature', 'relation', 'cls', 'reg'):
        assert losses[f'distill.gid.loss_{k}'].item() == 0.0
    sum(losses[f'distill.gid.loss_{k}'] for k in ('feature', 'relation', 'cls', 'reg')).backward()
    assert model.distiller.adapter.conv.weight.grad is not None


def test_fewer_than_three_instances_no_gt_one_class_and_mixed_image_sizes():
    # one instance per image, two images: R = 2 -> no relation loss, the rest distils
    model = small_model(num_instances=1)
    inputs, samples = make_det_batch(n=2, size=64)
    losses = model.loss(inputs, samples)
    assert losses['distill.gid.num_instances'].item() == 2
    assert losses['distill.gid.loss_relation'].item() == 0.0 and losses['distill.gid.loss_feature'].item() > 0
    # images without GT boxes (GISM does not use GT), one class, images of different sizes
    model = small_model(num_classes=1)
    seen = capture(model)
    samples = samples_of([(64, 64), (64, 40), (32, 64)], (64, 64))
    losses = model.loss(torch.randn(3, 3, 64, 64), samples)
    assert all(torch.isfinite(v) for k, v in losses.items() if k.startswith('distill.'))
    assert losses['distill.gid.num_instances'].item() > 3 and losses['distill.gid.loss_relation'].item() > 0
    for boxes, (h, w) in zip(seen['gi'], [(64, 64), (64, 40), (32, 64)]):
        assert len(boxes) > 0
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) > 10).all()


def test_errors_name_the_setting_at_fault():
    with pytest.raises(ValueError, match='adapt_on'):
        GID(adapt_on='maps')
    with pytest.raises(KeyError, match='roi_extractor'):
        GID(roi_extractor=dict(output_size=7))
    with pytest.raises(ValueError, match='num_instances'):
        GID(num_instances=0)
    with pytest.raises(ValueError, match='nms_iou'):
        GID(nms_iou=0.0)
    inputs, samples = make_det_batch(n=1, size=64)
    with pytest.raises(Exception, match='bbox_head.cls_conv'):
        small_model(cls_conv='cls_conv')
    # a teacher with other anchors (one ratio: 3 anchors per cell instead of 9)
    teacher = retinanet_cfg(18)
    teacher['bbox_head']['anchor_generator']['ratios'] = [1.0]
    model = small_model(teacher=teacher)
    with pytest.raises(ValueError, match='same anchors'):
        model.loss(inputs, samples)
    # a softmax head
    student = retinanet_cfg(18)
    student['bbox_head']['loss_cls'] = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    model = small_model(student=student)
    with pytest.raises(ValueError, match='softmax'):
        model.loss(inputs, samples)
    # no assigner on the student head (no train_cfg) and none configured
    with pytest.raises(AttributeError, match='assigner'):
        GID().assigner(SimpleNamespace())
    # an explicit assigner replaces the student's
    d = GID(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.4, min_pos_iou=0))
    head = fake_model().bbox_head
    assert d.assigner(head) is not head.assigner and d.assigner(head).pos_iou_thr == 0.7


# --------------------------------------------------------------------------- configs
def test_configs_declare_the_official_settings():
    cfg = Config.fromfile(os.path.join(ROOT, MAIN_CFG))
    d = cfg.model.distiller
    assert cfg.model.type == 'kdtoolbox.DistillationModel' and d.type == 'GID'
    assert (d.loss_weight_feature, d.loss_weight_relation, d.loss_weight_cls, d.loss_weight_reg) == (5e-4, 40, 0.1, 1.0)
    assert (d.reg_beta, d.nms_iou, d.nms_pre, d.num_instances, d.min_box_size) == (0.1, 0.3, 3000, 10, 10)
    assert cfg.model.teacher == 'mmdet::retinanet/retinanet_r101_fpn_1x_coco.py'
    assert cfg.model.student.backbone.depth == 50 and cfg.train_cfg.max_epochs == 24
    demo = Config.fromfile(os.path.join(ROOT, DEMO_CFG))
    assert demo.model.distiller.type == 'GID' and demo.model.student.backbone.depth == 18
    assert demo.model.teacher.endswith('retinanet_r50_shapes_teacher.py')


@pytest.mark.slow
def test_main_config_builds_and_trains_one_step():
    """The R101 -> R50 pair of the paper (random weights, nothing downloaded) on a 64 px image."""
    from mmengine.hub import get_config
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(os.path.join(ROOT, MAIN_CFG))
    cfg.model.teacher_checkpoint = None
    cfg.model.teacher = get_config(cfg.model.teacher).model
    cfg.model.teacher['_scope_'] = 'mmdet'
    for net in (cfg.model.student, cfg.model.teacher):
        net.backbone.init_cfg = None
    model = build(cfg.model)
    model.init_weights()
    assert model.teacher.backbone.depth == 101 and model.student.backbone.depth == 50
    assert model.student.bbox_head.num_classes == 80
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    inputs, samples = make_det_batch(n=1, size=64, boxes=[[8., 8., 40., 56.]])
    data = dict(inputs=[(inputs[0] * 50 + 120).clamp(0, 255).to(torch.uint8)], data_samples=samples)
    before = model.distiller.adapter.conv.weight.detach().clone()
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    for k in ('feature', 'relation', 'cls', 'reg'):
        assert math.isfinite(float(torch.as_tensor(log_vars[f'distill.gid.loss_{k}']).detach()))
    assert not torch.equal(before, model.distiller.adapter.conv.weight)  # the adapter is trained


@pytest.mark.slow
def test_demo_config_trains_two_iterations(tmp_path):
    from test_train_e2e import data_options, run
    out = run(['tools/train.py', DEMO_CFG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               'model.teacher_checkpoint=None', 'model.student.test_cfg.score_thr=0.0', 'train_cfg.max_epochs=1',
               *data_options(tmp_path / 'shapes')])
    for k in ('feature', 'relation', 'cls', 'reg'):
        assert re.search(rf'distill\.gid\.loss_{k}: [0-9.e-]+', out), out[-3000:]
    assert re.search(r'distill\.gid\.num_instances: [0-9.]+', out), out[-3000:]
    assert 'coco/bbox_mAP' in out
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('distiller.adapter.') for k in saved['state_dict'])
    assert not any(k.startswith('teacher.') for k in saved['state_dict'])
