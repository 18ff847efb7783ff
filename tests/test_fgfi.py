"""FGFI: the anchor-IoU imitation loss against plain loops and hand-computed masks, through
DistillationModel with tiny RetinaNet / Faster R-CNN students, the configs, and 2 iterations of
tools/train.py on the demo config with the imitation warm-up."""
import os
import re
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT, distill_model_cfg, make_det_batch
from kdtoolbox.engine import DistillContext
from test_defeat import build, det_samples, faster_rcnn_cfg, identity_adapters, records

DEMO_CFG = 'configs/demo/fgfi_retinanet_shapes.py'
ONE_ANCHOR = dict(type='AnchorGenerator', strides=[16], ratios=[1.0], scales=[1.0], base_sizes=[16])


def ref_imitation(student, teacher, masks, normalize='locations', level_reduction='mean'):
    """FGFI's loss with plain loops: per level, masked squared error summed over channels and
    locations, divided by 2 x (masked locations [x channels]); levels averaged or summed."""
    total = 0.0
    for s, t, m in zip(student, teacher, masks):
        n, c, h, w = s.shape
        num, locations = 0.0, 0
        for i in range(n):
            for y in range(h):
                for x in range(w):
                    if m[i, y, x] > 0:
                        locations += 1
                        for k in range(c):
                            num += (float(s[i, k, y, x]) - float(t[i, k, y, x])) ** 2
        count = locations * (c if normalize == 'elements' else 1)
        total += num / max(1.0, 2.0 * count)
    return total / len(masks) if level_reduction == 'mean' else total


def test_imitation_loss_matches_plain_loops():
    from kdtoolbox_plugins.detection.fgfi import imitation_loss
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 2, 3, generator=g)]
    t = [torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 2, 3, generator=g)]
    m = [(torch.rand(2, 4, 5, generator=g) > 0.6).float(), (torch.rand(2, 2, 3, generator=g) > 0.5).float()]
    for normalize in ('locations', 'elements'):
        for reduction in ('mean', 'sum'):
            ours = imitation_loss(s, t, m, normalize, reduction).item()
            assert ours == pytest.approx(ref_imitation(s, t, m, normalize, reduction), rel=1e-5)
    # 'elements' is 'locations' / C
    assert imitation_loss(s, t, m, 'elements').item() == pytest.approx(imitation_loss(s, t, m).item() / 3, rel=1e-6)
    # an empty mask: 0, not the official 0/0
    zero = imitation_loss(s, t, [torch.zeros_like(x) for x in m])
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match='normalize'):
        imitation_loss(s, t, m, normalize='pixels')


def test_distiller_on_hand_made_records():
    """A 2 x 2 grid at stride 16 with one 16 px anchor per location and GT [4, 4, 20, 20]: the IoUs
    are 0.032, 0.103, 0.103, 0.391 (see test_imitation_masks); psi 0.5 keeps (1, 1), psi 0.2 adds
    (0, 1) and (1, 0). Identity conv + ReLU adapter."""
    from kdtoolbox_plugins.detection.fgfi import FGFI
    g = torch.Generator().manual_seed(2)
    s = (torch.randn(1, 2, 2, 2, generator=g),)
    t = (torch.randn(1, 2, 2, 2, generator=g),)
    ctx = DistillContext(data_samples=det_samples([[[4, 4, 20, 20]]], [(32, 32)], (32, 32)))
    a = s[0].clamp(min=0)  # the adapter: identity conv, then ReLU
    for psi, cells in ((0.5, [(1, 1)]), (0.2, [(0, 1), (1, 0), (1, 1)])):
        d = FGFI(student_channels=2, teacher_channels=2, num_levels=1, psi=psi, anchor_generator=ONE_ANCHOR,
                 fpn_assign=False)
        identity_adapters(d)
        loss = d(records('student', features=s), records('teacher', features=t), ctx)
        assert set(loss) == {'neck.loss_imitation'}
        expected = sum(float((a[0, c, y, x] - t[0][0, c, y, x]) ** 2) for c in range(2) for y, x in cells)
        assert loss['neck.loss_imitation'].item() == pytest.approx(0.01 * expected / (2 * len(cells)), rel=1e-5)


def test_fpn_assignment_is_configurable():
    from kdtoolbox_plugins.detection.fgfi import FGFI
    gen = dict(type='AnchorGenerator', strides=[4, 8], ratios=[1.0], scales=[2.0], base_sizes=[4, 8])
    feats = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)]
    ctx = DistillContext(data_samples=det_samples([[[4, 4, 12, 12]]], [(32, 32)], (32, 32)))
    one = FGFI(1, 1, num_levels=2, anchor_generator=gen, fpn_assign=True, finest_scale=8.0)
    every = FGFI(1, 1, num_levels=2, anchor_generator=gen, fpn_assign=False, finest_scale=8.0)
    one, every = one.imitation_masks(feats, ctx), every.imitation_masks(feats, ctx)
    assert one[0].sum() > 0 and one[1].sum() == 0          # the 9 px box lives on level 0 only
    assert torch.equal(one[0], every[0]) and every[1].sum() > 0


def test_defaults_adapters_registration_and_errors():
    from kdtoolbox.registry import DISTILLERS
    from kdtoolbox_plugins.detection.fgfi import FGFI
    assert DISTILLERS.get('FGFI') is FGFI
    d = FGFI()
    defaults = (d.psi, d.loss_weight, d.normalize, d.fpn_assign, d.level_reduction)
    assert defaults == (0.5, 0.01, 'locations', True, 'mean')
    for adapter in d.adapters:
        assert adapter.conv.kernel_size == (3, 3) and isinstance(adapter.relu, torch.nn.ReLU)
        assert 0 < adapter.conv.weight.abs().max() <= 2e-4 and torch.count_nonzero(adapter.conv.bias) == 0
    with pytest.raises(ValueError, match='psi'):
        FGFI(psi=1.5)
    with pytest.raises(ValueError, match='level_reduction'):
        FGFI(level_reduction='max')
    # an anchor-free student (a point generator) needs an explicit anchor generator
    from mmdet.models.task_modules.prior_generators import MlvlPointGenerator
    fcos_like = SimpleNamespace(bbox_head=SimpleNamespace(prior_generator=MlvlPointGenerator([8, 16])))
    with pytest.raises(TypeError, match='anchor_generator'):
        d.anchor_generator(DistillContext(student=fcos_like))


def fgfi_cfg(**kwargs):
    return dict(type='FGFI', student_channels=64, teacher_channels=64, num_levels=5, **kwargs)


def test_retinanet_gradients_reach_student_and_adapters_not_teacher(det_batch):
    model = build(distill_model_cfg(fgfi_cfg(loss_weight=1.0)))
    inputs, samples = det_batch
    losses = model.loss(inputs, samples)
    loss = losses['distill.neck.loss_imitation']
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(a.conv.weight.grad.abs().sum() > 0 for a in model.distiller.adapters[:1])
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    # the student's own RetinaHead anchors (9 per location) were used
    ctx = DistillContext(student=model.student)
    assert model.distiller.anchor_generator(ctx) is model.student.bbox_head.prior_generator


def test_two_stage_student_uses_its_rpn_anchors():
    model = build(dict(type='kdtoolbox.DistillationModel', student=faster_rcnn_cfg(18, channels=32),
                       teacher=faster_rcnn_cfg(18, channels=32),
                       distiller=dict(type='FGFI', student_channels=32, teacher_channels=32, num_levels=5)))
    assert model.distiller.anchor_generator(DistillContext(student=model.student)) is \
        model.student.rpn_head.prior_generator
    inputs, samples = make_det_batch(n=2, size=96, boxes=[[10., 20., 60., 90.]])
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses['distill.neck.loss_imitation'])


def test_edge_case_batch_sizes_and_boxes():
    """An image without boxes, a box covering the whole image, one partly outside, a degenerate
    one, and images of different sizes padded into one batch."""
    model = build(distill_model_cfg(fgfi_cfg()))
    batch = (128, 128)
    boxes = [[], [[0, 0, 128, 128]], [[-20, 90, 40, 150], [50, 50, 50, 70]], [[4, 4, 60, 40]]]
    shapes = [(128, 128), (128, 128), (128, 96), (64, 64)]
    samples = det_samples(boxes, shapes, batch)
    losses = model.loss(torch.randn(4, 3, *batch), samples)
    assert torch.isfinite(losses['distill.neck.loss_imitation'])
    feats = [torch.zeros(4, 1, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    masks = model.distiller.imitation_masks(feats, DistillContext(data_samples=samples, student=model.student))
    assert all(m[0].sum() == 0 for m in masks)                     # no boxes
    assert sum(m[1].sum() for m in masks) > 0                      # the whole-image box imitates somewhere
    assert sum(m[2].sum() for m in masks) > 0                      # the box partly outside does too
    assert masks[0][3][10:, :].sum() == 0 and masks[0][3][:, 10:].sum() == 0  # near the 64 x 64 image
    # only a degenerate box (no anchor overlaps it) or no box at all: exactly 0
    for only in ([[50, 50, 50, 70]], []):
        losses = model.loss(torch.randn(1, 3, *batch), det_samples([only], [batch], batch))
        assert losses['distill.neck.loss_imitation'].item() == 0.0


def test_configs_declare_the_official_settings():
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/fgfi_faster_rcnn.py'))
    d = cfg.model.distiller
    assert cfg.model.type == 'kdtoolbox.DistillationModel' and d.type == 'FGFI'
    assert (d.psi, d.loss_weight, d.normalize, d.adapter_relu, d.fpn_assign) == (0.5, 0.01, 'locations', True, True)
    assert cfg.custom_hooks == [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=400)]
    demo = Config.fromfile(os.path.join(ROOT, DEMO_CFG))
    assert demo.model.distiller.type == 'FGFI' and demo.custom_hooks[0].warmup_iters > 0


@pytest.mark.slow
def test_main_config_builds_and_runs_a_step():
    """The full R101 -> R50 Faster R-CNN of the main config (random weights, no download), 64 px."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/fgfi_faster_rcnn.py'))
    cfg.model.teacher.backbone.init_cfg = None  # no ImageNet download
    cfg.model.teacher_checkpoint = None
    cfg.model.student.backbone.init_cfg = None
    model = build(cfg.model)
    inputs, samples = make_det_batch(n=1, size=64, boxes=[[8., 8., 40., 56.]])
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses['distill.neck.loss_imitation'])


@pytest.mark.slow
def test_demo_config_trains_two_iterations_with_warmup(tmp_path):
    """Warm-up of 1 iteration: the first logs distill_scale 0 and no imitation loss (the teacher
    is skipped), the second the imitation loss."""
    from test_train_e2e import data_options, run
    out = run(['tools/train.py', DEMO_CFG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               'model.teacher_checkpoint=None', 'model.student.test_cfg.score_thr=0.0', 'train_cfg.max_epochs=1',
               'custom_hooks.0.warmup_iters=1', *data_options(tmp_path / 'shapes')])
    first = [line for line in out.splitlines() if 'Epoch(train)' in line and '[1/2]' in line]
    second = [line for line in out.splitlines() if 'Epoch(train)' in line and '[2/2]' in line]
    assert first and second, out[-3000:]
    assert 'distill_scale: 0.0000' in first[0] and 'loss_imitation' not in first[0], first[0]
    assert re.search(r'distill\.neck\.loss_imitation: [0-9.]+', second[0]), second[0]
    assert 'distill_scale: 1.0000' in second[0], second[0]
    assert 'coco/bbox_mAP' in out
