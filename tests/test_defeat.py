"""DeFeat: the decoupled neck loss and the decoupled RoI classification KL, against plain-loop
computations, through DistillationModel with tiny RetinaNet / Faster R-CNN models, the configs, and
2 iterations of tools/train.py on the demo config."""
import math
import os
import re

import pytest
import torch

import conftest
from conftest import ROOT, distill_model_cfg, make_det_batch
from kdtoolbox.engine import DistillContext, Records, RecordSpec

DEMO_CFG = 'configs/demo/defeat_retinanet_shapes.py'


def faster_rcnn_cfg(depth: int = 18, num_classes: int = 3, channels: int = 32) -> dict:
    """The shared tiny Faster R-CNN (tests/conftest.py)."""
    return conftest.faster_rcnn_cfg(depth, channels, num_classes)


def det_samples(boxes_list, img_shapes, batch_shape):
    """DetDataSamples with the given boxes per image, image shapes and padded batch shape."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    samples = []
    for i, (boxes, shape) in enumerate(zip(boxes_list, img_shapes)):
        s = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=batch_shape,
                                        batch_input_shape=batch_shape, scale_factor=(1.0, 1.0), img_id=i))
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        s.gt_instances = InstanceData(bboxes=b, labels=torch.arange(len(b)) % 3)
        samples.append(s)
    return samples


def records(owner, **values):
    return Records(owner, {k: [v] for k, v in values.items()}, {k: RecordSpec(k) for k in values})


def identity_adapters(distiller):
    with torch.no_grad():
        for adapter in distiller.adapters:
            w = adapter.conv.weight
            w.zero_()
            k = w.shape[-1] // 2
            for c in range(min(w.shape[0], w.shape[1])):
                w[c, c, k, k] = 1.0
            adapter.conv.bias.zero_()


def build(cfg):
    from kdtoolbox.registry import MODELS
    return MODELS.build(cfg)


def ref_decoupled(student, teacher, masks):
    """DeFeat's neck loss with plain loops: per level sum over masked elements / max(1, 2 * count)."""
    fg_total = bg_total = 0.0
    for s, t, m in zip(student, teacher, masks):
        n, c, h, w = s.shape
        fg = bg = 0.0
        n_fg = n_bg = 0
        for i in range(n):
            for k in range(c):
                for y in range(h):
                    for x in range(w):
                        d = (float(s[i, k, y, x]) - float(t[i, k, y, x])) ** 2
                        if m[i, y, x] > 0:
                            fg += d
                            n_fg += 1
                        else:
                            bg += d
                            n_bg += 1
        fg_total += fg / max(1.0, 2.0 * n_fg)
        bg_total += bg / max(1.0, 2.0 * n_bg)
    return fg_total / len(masks), bg_total / len(masks)


def ref_kl(s, t, mask, temp):
    """T^2 * mean over masked rows of sum_c q_c (log q_c - log p_c), softmaxes written out."""
    rows = [i for i in range(len(mask)) if mask[i]]
    if not rows:
        return 0.0
    total = 0.0
    for i in rows:
        zs = [float(v) / temp for v in s[i]]
        zt = [float(v) / temp for v in t[i]]
        ls = math.log(sum(math.exp(v) for v in zs))
        lt = math.log(sum(math.exp(v) for v in zt))
        for a, b in zip(zs, zt):
            q = math.exp(b - lt)
            total += q * ((b - lt) - (a - ls))
    return total / len(rows) * temp ** 2


# ------------------------------------------------------------------ formulas
def test_decoupled_loss_matches_plain_loops():
    from kdtoolbox_plugins.detection.defeat import decoupled_feature_loss
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 2, 3, generator=g)]
    t = [torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 2, 3, generator=g)]
    m = [(torch.rand(2, 4, 5, generator=g) > 0.6).float(), (torch.rand(2, 2, 3, generator=g) > 0.5).float()]
    fg, bg = decoupled_feature_loss(s, t, m)
    ref_fg, ref_bg = ref_decoupled(s, t, m)
    assert fg.item() == pytest.approx(ref_fg, rel=1e-5)
    assert bg.item() == pytest.approx(ref_bg, rel=1e-5)
    # no foreground anywhere: fg is 0 (normaliser max(1, 0)), bg is the full-map loss
    zero = [torch.zeros_like(x) for x in m]
    fg, bg = decoupled_feature_loss(s, t, zero)
    assert fg.item() == 0.0
    full = sum(((a - b) ** 2).sum() / (2 * a.numel()) for a, b in zip(s, t)) / 2
    assert bg.item() == pytest.approx(full.item(), rel=1e-6)
    # all foreground (a box covering every image): bg is 0
    fg, bg = decoupled_feature_loss(s, t, [torch.ones_like(x) for x in m])
    assert bg.item() == 0.0 and fg.item() == pytest.approx(full.item(), rel=1e-6)


def test_masked_kl_by_hand():
    from kdtoolbox_plugins.detection.defeat import masked_kl
    s = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]], requires_grad=True)
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([True, False, True])
    for temp in (1.0, 2.0):
        assert masked_kl(s, t, mask, temp).item() == pytest.approx(ref_kl(s.detach(), t, mask, temp), rel=1e-5)
    # identical logits: 0; an empty mask: 0 but still part of the graph
    assert masked_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-7)
    empty = masked_kl(s, t, torch.zeros(3, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


def test_distiller_on_hand_made_records():
    """Two levels (strides 4 and 8) of a 32 x 32 batch, identity adapters: the loss uses the
    hand-drawn masks of test_imitation_masks and the official weights 3 (fg) and 12 (bg)."""
    from kdtoolbox_plugins.detection.defeat import DeFeat
    distiller = DeFeat(student_channels=2, teacher_channels=2, num_levels=2, strides=[4, 8], finest_scale=8.0)
    identity_adapters(distiller)
    g = torch.Generator().manual_seed(1)
    s = (torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 4, 4, generator=g))
    t = (torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 4, 4, generator=g))
    samples = det_samples([[[2, 3, 13, 9], [16, 8, 31, 31], [20, 20, 20, 20]]], [(32, 32)], (32, 32))
    losses = distiller(records('student', features=s), records('teacher', features=t),
                       DistillContext(data_samples=samples, batch_input_shape=(32, 32)))
    m0 = torch.zeros(1, 8, 8)
    m0[0, 0:2, 0:3] = 1
    m0[0, 5, 5] = 1
    m1 = torch.zeros(1, 4, 4)
    m1[0, 1:3, 2] = 1
    ref_fg, ref_bg = ref_decoupled(s, t, [m0, m1])
    assert set(losses) == {'neck.loss_fg', 'neck.loss_bg'}
    assert losses['neck.loss_fg'].item() == pytest.approx(3.0 * ref_fg, rel=1e-5)
    assert losses['neck.loss_bg'].item() == pytest.approx(12.0 * ref_bg, rel=1e-5)


def test_defaults_adapters_and_registration():
    from kdtoolbox.registry import DISTILLERS
    from kdtoolbox_plugins.detection.defeat import DeFeat
    assert DISTILLERS.get('DeFeat') is DeFeat
    d = DeFeat()
    assert (d.hint_neck_w, d.hint_neck_back_w, d.head_cls_w, d.head_cls_back_w, d.head_cls_T) == (3, 12, 2, 2, 1)
    assert len(d.adapters) == 5 and not d.roi_cls and set(d.student_recorders) == {'features'}
    for adapter in d.adapters:
        assert adapter.conv.kernel_size == (3, 3)
        assert adapter.conv.weight.abs().max() <= 2e-4 and adapter.conv.weight.abs().max() > 0
        assert torch.count_nonzero(adapter.conv.bias) == 0
    d = DeFeat(roi_cls=True)
    assert d.student_recorders['rois'] == dict(module='roi_head.bbox_roi_extractor', io='input')
    assert d.student_recorders['cls'] == dict(module='roi_head.bbox_head.loss_cls', io='input')
    with pytest.raises(ValueError, match='channel'):
        DeFeat(student_channels=[64, 64], num_levels=5)
    with pytest.raises(ValueError, match='strides'):
        DeFeat(strides=[8, 16], num_levels=5)


# ------------------------------------------------------------------ through DistillationModel
def defeat_cfg(**kwargs):
    return dict(type='DeFeat', student_channels=64, teacher_channels=64, num_levels=5, **kwargs)


def test_retinanet_gradients_reach_student_and_adapters_not_teacher(det_batch):
    model = build(distill_model_cfg(defeat_cfg()))
    inputs, samples = det_batch
    losses = model.loss(inputs, samples)
    assert {'distill.neck.loss_fg', 'distill.neck.loss_bg'} <= set(losses)
    distill = losses['distill.neck.loss_fg'] + losses['distill.neck.loss_bg']
    assert torch.isfinite(distill) and distill > 0
    distill.backward()
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(a.conv.weight.grad.abs().sum() > 0 for a in model.distiller.adapters)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    # strides came from the student's anchor generator (8 ... 128)
    assert model.distiller._strides(DistillContext(student=model.student))[0] == (8, 8)


def test_edge_case_batch_sizes_and_boxes():
    """An image without boxes, a box covering the whole image, one partly outside, a degenerate
    one, and images of different sizes padded into one batch."""
    model = build(distill_model_cfg(defeat_cfg()))
    batch = (128, 128)
    boxes = [[], [[0, 0, 128, 128]], [[-20, 90, 40, 150], [50, 50, 50, 70]], [[4, 4, 60, 40]]]
    shapes = [(128, 128), (128, 128), (128, 96), (64, 64)]
    samples = det_samples(boxes, shapes, batch)
    inputs = torch.randn(4, 3, *batch)
    losses = model.loss(inputs, samples)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k.startswith('distill.'))
    feats = [torch.zeros(4, 1, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    masks = model.distiller.neck_masks(feats, DistillContext(data_samples=samples, student=model.student))
    assert all(m[0].sum() == 0 for m in masks)                  # no boxes: nothing
    # the whole-image box: sqrt(129 * 129) / 56 -> level 1 (P4), the full 8 x 8 grid
    assert masks[1][1].sum() == 64 and sum(m[1].sum() for m in masks) == 64
    assert masks[0][2][11:16, 0:5].sum() > 0 and masks[0][2][:, 12:].sum() == 0  # clipped at the border
    assert masks[0][2][6, 6] == 1                               # the degenerate box: one cell
    assert masks[0][3][8:, :].sum() == 0 and masks[0][3][:, 8:].sum() == 0  # the 64 x 64 image
    # a batch without any box: fg exactly 0, bg still distils
    losses = model.loss(inputs[:2], det_samples([[], []], shapes[:2], batch))
    assert losses['distill.neck.loss_fg'].item() == 0.0 and losses['distill.neck.loss_bg'].item() > 0


# ------------------------------------------------------------------ RoI KL (two-stage)
def two_stage_model(**kwargs):
    cfg = dict(type='kdtoolbox.DistillationModel', student=faster_rcnn_cfg(18, channels=32),
               teacher=faster_rcnn_cfg(18, channels=48),
               distiller=dict(type='DeFeat', student_channels=32, teacher_channels=48, roi_cls=True, **kwargs))
    return build(cfg)


def capture(model):
    """Keep what the distiller receives (the recorders are cleared after each step)."""
    seen = {}
    forward = model.distiller.forward

    def spy(student, teacher, context):
        seen['rois'] = student.get_call('rois', 0)[1].detach().clone()
        cls = student.get_call('cls', 0)
        seen['s_logits'], seen['labels'] = cls[0].detach().clone(), cls[1].clone()
        seen['t_feats'] = [f.clone() for f in teacher['features']]
        return forward(student, teacher, context)
    model.distiller.forward = spy
    return seen


def test_roi_kl_teacher_classifies_the_student_rois():
    torch.manual_seed(0)
    model = two_stage_model(head_cls_T=2.0)
    seen = capture(model)
    inputs, samples = make_det_batch(n=2, size=96, boxes=[[10., 20., 60., 90.], [50., 30., 90., 80.]])
    losses = model.loss(inputs, samples)
    keys = {'distill.neck.loss_fg', 'distill.neck.loss_bg', 'distill.roi_cls.loss_kl_fg', 'distill.roi_cls.loss_kl_bg'}
    assert keys <= set(losses)
    rois, labels, s_logits = seen['rois'], seen['labels'], seen['s_logits']
    # the student classified exactly the recorded RoIs: 32 sampled per image, labels 0..3
    assert rois.shape[1] == 5 and s_logits.shape == (rois.shape[0], 4) and labels.shape == (rois.shape[0],)
    assert int((labels < 3).sum()) > 0 and int((labels == 3).sum()) > 0
    # independently: the teacher's own features and its RoI head on those RoIs
    with torch.no_grad():
        feats = model.teacher.extract_feat(inputs)
        for a, b in zip(feats, seen['t_feats']):
            assert torch.allclose(a, b, atol=1e-6)
        t_logits = model.teacher.roi_head._bbox_forward(feats, rois)['cls_score']
    fg, bg = (labels < 3).tolist(), (labels == 3).tolist()
    kl_fg, kl_bg = ref_kl(s_logits, t_logits, fg, 2.0), ref_kl(s_logits, t_logits, bg, 2.0)
    assert losses['distill.roi_cls.loss_kl_fg'].item() == pytest.approx(2.0 * kl_fg, rel=1e-4)
    assert losses['distill.roi_cls.loss_kl_bg'].item() == pytest.approx(2.0 * kl_bg, rel=1e-4)
    # gradients: the student's RoI head and neck, never the teacher
    (losses['distill.roi_cls.loss_kl_fg'] + losses['distill.roi_cls.loss_kl_bg']).backward()
    assert model.student.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_roi_kl_images_without_boxes():
    torch.manual_seed(0)
    model = two_stage_model()
    seen = capture(model)
    samples = det_samples([[[10, 20, 60, 90]], []], [(96, 96), (96, 64)], (96, 96))
    losses = model.loss(torch.randn(2, 3, 96, 96), samples)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k.startswith('distill.'))
    assert int((seen['labels'] < 3).sum()) > 0
    # no GT in the batch: every sampled RoI is background, the positive KL is 0
    losses = model.loss(torch.randn(2, 3, 96, 96), det_samples([[], []], [(96, 96)] * 2, (96, 96)))
    assert (seen['labels'] == 3).all()
    assert losses['distill.roi_cls.loss_kl_fg'].item() == 0.0
    assert losses['distill.roi_cls.loss_kl_bg'].item() > 0.0
    assert losses['distill.neck.loss_fg'].item() == 0.0


# ------------------------------------------------------------------ configs
def test_configs_declare_the_official_settings():
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/defeat_faster_rcnn.py'))
    d = cfg.model.distiller
    assert cfg.model.type == 'kdtoolbox.DistillationModel' and d.type == 'DeFeat' and d.roi_cls
    assert (d.hint_neck_w, d.hint_neck_back_w, d.head_cls_w, d.head_cls_back_w, d.head_cls_T) == (3, 12, 2, 2, 1)
    assert cfg.model.student.type == 'FasterRCNN' and cfg.model.teacher.backbone.depth == 101
    demo = Config.fromfile(os.path.join(ROOT, DEMO_CFG))
    assert demo.model.distiller.type == 'DeFeat' and demo.model.student.backbone.depth == 18


@pytest.mark.slow
@pytest.mark.parametrize('name', ['defeat_faster_rcnn.py', 'defeat_retinanet.py'])
def test_main_configs_build_and_run_a_step(name):
    """The full R101 -> R50 models of the main configs (random weights, no download) on a 64 px image."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', name))
    cfg.model.teacher.backbone.init_cfg = None  # no ImageNet download
    cfg.model.teacher_checkpoint = None
    cfg.model.student.backbone.init_cfg = None
    model = build(cfg.model)
    inputs, samples = make_det_batch(n=1, size=64, boxes=[[8., 8., 40., 56.]])
    losses = model.loss(inputs, samples)
    assert 'distill.neck.loss_bg' in losses and torch.isfinite(losses['distill.neck.loss_bg'])
    if cfg.model.distiller.get('roi_cls'):
        assert 'distill.roi_cls.loss_kl_bg' in losses


@pytest.mark.slow
def test_demo_config_trains_two_iterations(tmp_path):
    from test_train_e2e import data_options, run
    out = run(['tools/train.py', DEMO_CFG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               'model.teacher_checkpoint=None', 'model.student.test_cfg.score_thr=0.0', 'train_cfg.max_epochs=1',
               *data_options(tmp_path / 'shapes')])
    assert re.search(r'distill\.neck\.loss_fg: [0-9.]+', out), out[-3000:]
    assert re.search(r'distill\.neck\.loss_bg: [0-9.]+', out), out[-3000:]
    assert 'coco/bbox_mAP' in out
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('distiller.adapters.') for k in saved['state_dict'])


def test_roi_kl_with_different_class_counts_fails_at_build_naming_both():
    cfg = dict(type='kdtoolbox.DistillationModel', student=faster_rcnn_cfg(18, channels=32, num_classes=3),
               teacher=faster_rcnn_cfg(18, channels=48, num_classes=5),
               distiller=dict(type='DeFeat', student_channels=32, teacher_channels=48, roi_cls=True))
    with pytest.raises(ValueError, match=r'DeFeat \(roi_cls=True\) compares class scores, but the student has 3 '
                                         r'classes and the teacher 5'):
        build(cfg)
    cfg['distiller']['roi_cls'] = False  # feature imitation alone does not care
    build(cfg)
