"""Mimic (RoI feature mimic): the loss against a plain loop over RoIs, edge cases, where the
proposals come from in real mmdet Faster R-CNNs, gradients, configs and a 2-iteration training run."""
import math
import os
import re
import subprocess

import pytest
import torch
from mmcv.ops import roi_align
from mmengine.registry import MODELS

import kdtoolbox
from kdtoolbox.engine import DistillContext
from kdtoolbox.engine.recorder import RecordError, Records, RecordSpec
from kdtoolbox.ops.roi_features import boxes_to_rois

import conftest
from conftest import PYTHON, ROOT, make_det_batch, retinanet_cfg

STRIDES = (4, 8, 16, 32)


# --- helpers ----------------------------------------------------------------------------------
def faster_rcnn_cfg(depth: int = 18, channels: int = 32, num_classes: int = 3) -> dict:
    """The shared tiny Faster R-CNN (tests/conftest.py) with fewer proposals."""
    return conftest.faster_rcnn_cfg(depth, channels, num_classes, proposals_train=(200, 40),
                                    proposals_test=(100, 25))


def build_model(distiller: dict, student=None, teacher=None, **kwargs):
    torch.manual_seed(0)
    cfg = dict(type='kdtoolbox.DistillationModel', student=student or faster_rcnn_cfg(18, 32),
               teacher=teacher or faster_rcnn_cfg(18, 48), distiller=distiller, **kwargs)
    return MODELS.build(cfg)


def build_mimic(**kwargs):
    return kdtoolbox.DISTILLERS.build(dict(type='Mimic', **kwargs))


def records(owner, **values):
    """Records as a recorder produces them: name -> list of calls."""
    return Records(owner, {k: [v] for k, v in values.items()}, {k: RecordSpec(module=k) for k in values})


def samples_with(boxes_per_image, size=256, img_shapes=None):
    """Data samples of a ``size`` x ``size`` padded batch with the given GT boxes per image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    out = []
    for i, boxes in enumerate(boxes_per_image):
        shape = img_shapes[i] if img_shapes else (size, size)
        s = DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=(size, size),
                                        batch_input_shape=(size, size), scale_factor=(1.0, 1.0)))
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        s.gt_instances = InstanceData(bboxes=b, labels=torch.zeros(len(b), dtype=torch.long))
        out.append(s)
    return out


def neck_feats(channels, size=256, batch=2, seed=0, grad=False):
    """Five random levels P2-P6 of a ``size`` x ``size`` batch, as a Faster R-CNN neck returns."""
    g = torch.Generator().manual_seed(seed)
    feats = tuple(torch.randn(batch, channels, size // s, size // s, generator=g) for s in (4, 8, 16, 32, 64))
    return tuple(f.requires_grad_() for f in feats) if grad else feats


def run_gt(mimic, s_feats, t_feats, samples):
    context = DistillContext.from_batch(torch.zeros(len(samples), 3, 256, 256), samples)
    return mimic(records('student', feats=s_feats), records('teacher', feats=t_feats), context)


def loop_loss(s_feats, t_feats, boxes_per_image, conv, loss_weight=1.0):
    """The paper's formula, one RoI at a time: level by the FPN rule written out, a 7x7 aligned
    RoIAlign of that level (mmcv's op, called directly), the 1x1 conv, ||u - r(v)||^2 / m_i,
    summed and divided by 2N. Boxes must already be clipped and valid."""
    total, n = 0.0, 0
    for img, boxes in enumerate(boxes_per_image):
        for x1, y1, x2, y2 in boxes:
            scale = math.sqrt((x2 - x1) * (y2 - y1))
            level = min(max(math.floor(math.log2(scale / 56)), 0), 3)
            roi = torch.tensor([[float(img), x1, y1, x2, y2]])
            v = roi_align(s_feats[level], roi, (7, 7), 1.0 / STRIDES[level], 0, 'avg', True)
            u = roi_align(t_feats[level], roi, (7, 7), 1.0 / STRIDES[level], 0, 'avg', True)
            r_v = torch.nn.functional.conv2d(v, conv.weight, conv.bias)
            total = total + ((u - r_v) ** 2).sum() / u.numel()
            n += 1
    return loss_weight * total / (2 * n)


BOXES = [
    [[10., 20., 60., 90.],          # sqrt(50*70) = 59 -> P2
     [0., 0., 256., 256.],          # the whole image: 256 -> P4
     [30., 40., 200., 180.]],       # sqrt(170*140) = 154 -> P3
    [[5., 5., 20., 30.],            # 19 -> P2
     [100., 60., 240., 250.]],      # 163 -> P3
]


# --- the formula --------------------------------------------------------------------------------
def test_loss_matches_a_loop_over_rois():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4, loss_weight=2.5)
    s_feats, t_feats = neck_feats(3, seed=1), neck_feats(4, seed=2)
    out = run_gt(mimic, s_feats, t_feats, samples_with(BOXES))
    expected = loop_loss(s_feats, t_feats, BOXES, mimic.adapter.conv, loss_weight=2.5)
    torch.testing.assert_close(out['roi.loss_mimic'], expected)
    assert out['roi.num_rois'].item() == 5
    assert set(out) == {'roi.loss_mimic', 'roi.num_rois'}


def test_identical_features_and_identity_adapter_give_zero():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=3, adapter=dict(type='IdentityAdapter'))
    feats = neck_feats(3, seed=4)
    assert run_gt(mimic, feats, feats, samples_with(BOXES))['roi.loss_mimic'].item() == 0.0


def test_an_image_without_boxes_and_a_batch_without_boxes():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4)
    s_feats, t_feats = neck_feats(3, seed=1, grad=True), neck_feats(4, seed=2)
    out = run_gt(mimic, s_feats, t_feats, samples_with([BOXES[0], []]))
    torch.testing.assert_close(out['roi.loss_mimic'], loop_loss(s_feats, t_feats, [BOXES[0], []], mimic.adapter.conv))
    assert out['roi.num_rois'].item() == 3

    out = run_gt(mimic, s_feats, t_feats, samples_with([[], []]))
    assert out['roi.loss_mimic'].item() == 0.0 and out['roi.num_rois'].item() == 0
    out['roi.loss_mimic'].backward()  # still a graph over the student's levels and the adapter
    assert all(f.grad is not None and f.grad.abs().sum() == 0 for f in s_feats[:4])
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in mimic.adapter.parameters())


def test_a_box_partly_outside_is_clipped_to_its_image():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4)
    s_feats, t_feats = neck_feats(3, seed=1), neck_feats(4, seed=2)
    out = run_gt(mimic, s_feats, t_feats, samples_with([[[-20., 100., 80., 300.]], [[200., -50., 400., 60.]]]))
    clipped = [[[0., 100., 80., 256.]], [[200., 0., 256., 60.]]]
    torch.testing.assert_close(out['roi.loss_mimic'], loop_loss(s_feats, t_feats, clipped, mimic.adapter.conv))


def test_degenerate_boxes_are_dropped():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4)
    s_feats, t_feats = neck_feats(3, seed=1), neck_feats(4, seed=2)
    degenerate = [[30., 30., 30., 80.], [50., 40., 60., 40.], [70., 70., 40., 90.], [300., 10., 400., 50.]]
    out = run_gt(mimic, s_feats, t_feats, samples_with([BOXES[0] + degenerate, degenerate]))
    torch.testing.assert_close(out['roi.loss_mimic'], loop_loss(s_feats, t_feats, [BOXES[0], []], mimic.adapter.conv))
    assert out['roi.num_rois'].item() == 3
    only = run_gt(mimic, s_feats, t_feats, samples_with([degenerate, degenerate]))
    assert only['roi.loss_mimic'].item() == 0.0


def test_images_of_different_sizes_in_one_padded_batch():
    """Image 0 is 256 x 192 (h x w), image 1 192 x 256, both padded to 256 x 256: each box is
    clipped to its own image, the crops come from the padded maps."""
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4)
    s_feats, t_feats = neck_feats(3, seed=1), neck_feats(4, seed=2)
    boxes = [[[150., 10., 250., 120.], [0., 0., 256., 256.]], [[10., 150., 120., 250.], [20., 30., 60., 70.]]]
    out = run_gt(mimic, s_feats, t_feats, samples_with(boxes, img_shapes=[(256, 192), (192, 256)]))
    clipped = [[[150., 10., 192., 120.], [0., 0., 192., 256.]], [[10., 150., 120., 192.], [20., 30., 60., 70.]]]
    torch.testing.assert_close(out['roi.loss_mimic'], loop_loss(s_feats, t_feats, clipped, mimic.adapter.conv))


def test_max_rois_per_img_and_min_roi_size():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4, max_rois_per_img=1, min_roi_size=16)
    s_feats, t_feats = neck_feats(3, seed=1), neck_feats(4, seed=2)
    out = run_gt(mimic, s_feats, t_feats, samples_with(BOXES))
    kept = [[BOXES[0][0]], [BOXES[1][1]]]  # image 1's first box is 15 px wide: dropped before the cap
    torch.testing.assert_close(out['roi.loss_mimic'], loop_loss(s_feats, t_feats, kept, mimic.adapter.conv))


def test_gradients_reach_the_student_and_the_adapter_never_the_teacher():
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=4)
    s_feats, t_feats = neck_feats(3, seed=1, grad=True), neck_feats(4, seed=2, grad=True)
    run_gt(mimic, s_feats, t_feats, samples_with(BOXES))['roi.loss_mimic'].backward()
    for level in range(3):  # the boxes use P2-P4
        assert s_feats[level].grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mimic.adapter.parameters())
    assert all(f.grad is None for f in t_feats)


def test_custom_adapter_and_roi_extractor():
    mimic = build_mimic(proposals='gt', adapter=dict(type='ConvAdapter', in_channels=3, out_channels=4, kernel_size=3),
                        roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=5, sampling_ratio=2)))
    out = run_gt(mimic, neck_feats(3, seed=1, grad=True), neck_feats(4, seed=2), samples_with(BOXES))
    assert mimic.adapter.conv.kernel_size == (3, 3) and mimic.roi_extractor.output_size == (5, 5)
    assert torch.isfinite(out['roi.loss_mimic']) and out['roi.loss_mimic'] > 0


def test_configuration_errors_are_named():
    with pytest.raises(ValueError, match='proposals'):
        build_mimic(proposals='rpn')
    with pytest.raises(KeyError, match='finest'):
        build_mimic(roi_extractor=dict(finest=56))
    mimic = build_mimic(proposals='gt', student_channels=3, teacher_channels=5)
    with pytest.raises(ValueError, match='differ'):
        run_gt(mimic, neck_feats(3), neck_feats(4), samples_with(BOXES))
    with pytest.raises(ValueError, match='4 levels'):
        run_gt(mimic, neck_feats(3)[:3], neck_feats(5), samples_with(BOXES))
    # a one-stage student has no RPN: proposals='student' fails when the model is built
    with pytest.raises(RecordError, match='rpn_head'):
        build_model(dict(type='Mimic', proposals='student'), student=retinanet_cfg(18), teacher=retinanet_cfg(18))


def test_registered_by_the_detection_plugin():
    from kdtoolbox.plugins import load_plugins
    from kdtoolbox_plugins.detection.mimic import Mimic
    load_plugins()
    assert kdtoolbox.DISTILLERS.get('Mimic') is Mimic


# --- real Faster R-CNNs: where the proposals come from ----------------------------------------
def capture_rois(model):
    """Wrap the distiller's ``rois`` to keep what it used."""
    seen = []
    original = model.distiller.rois

    def wrapped(*args, **kwargs):
        rois = original(*args, **kwargs)
        seen.append(rois)
        return rois
    model.distiller.rois = wrapped
    return seen


def test_student_proposals_are_those_the_students_roi_head_receives():
    inputs, samples = make_det_batch(2, 128)
    model = build_model(dict(type='Mimic', proposals='student', student_channels=32, teacher_channels=48))
    assert model.teacher_runner.stop_modules == ['neck']  # the teacher only runs to its neck
    received = []
    roi_head_loss = model.student.roi_head.loss
    model.student.roi_head.loss = lambda x, rpn_results, ds: (
        received.append([r.bboxes.clone() for r in rpn_results]), roi_head_loss(x, rpn_results, ds))[1]
    seen = capture_rois(model)
    model.train()
    losses = model.loss(inputs, samples)
    assert len(received) == 1 and len(seen) == 1
    # rpn_results are the RPN proposals (priors are set later, by roi_head.loss)
    expected = boxes_to_rois(received[0], [(128, 128)] * 2)
    assert expected.shape[0] > 0
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    assert losses['distill.roi.num_rois'].item() == expected.shape[0]
    assert torch.isfinite(losses['distill.roi.loss_mimic']) and losses['distill.roi.loss_mimic'] > 0
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'} <= set(losses)


def test_teacher_proposals_are_the_teachers_test_time_rpn_proposals():
    inputs, samples = make_det_batch(2, 128)
    model = build_model(dict(type='Mimic', proposals='teacher', student_channels=32, teacher_channels=48))
    assert model.teacher_runner.stop_modules == ['neck', 'rpn_head']
    calls = []
    model.teacher.roi_head.bbox_roi_extractor.register_forward_pre_hook(lambda m, i: calls.append(1))
    seen = capture_rois(model)
    model.train()
    losses = model.loss(inputs, samples)
    assert calls == []  # the teacher stopped after its RPN head: its RoI head never ran
    with torch.no_grad():
        predicted = model.teacher.rpn_head.predict(model.teacher.extract_feat(inputs), samples, rescale=False)
    expected = boxes_to_rois([p.bboxes for p in predicted], [(128, 128)] * 2)
    assert 0 < expected.shape[0] <= 2 * 25  # the teacher's test_cfg.rpn.max_per_img
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)
    assert torch.isfinite(losses['distill.roi.loss_mimic'])


def test_proposal_cfg_overrides_the_rpn_post_processing():
    inputs, samples = make_det_batch(2, 128)
    model = build_model(dict(type='Mimic', proposals='student', student_channels=32, teacher_channels=48,
                             proposal_cfg=dict(nms_pre=100, max_per_img=3, nms=dict(type='nms', iou_threshold=0.7),
                                               min_bbox_size=0)))
    model.train()
    assert model.loss(inputs, samples)['distill.roi.num_rois'].item() == 6


def test_distillation_model_gradients_student_and_adapter_not_teacher():
    inputs, samples = make_det_batch(2, 128)
    model = build_model(dict(type='Mimic', proposals='student', student_channels=32, teacher_channels=48))
    model.train()
    losses = model.loss(inputs, samples)
    losses['distill.roi.loss_mimic'].backward()
    student = dict(model.student.named_parameters())
    assert student['neck.fpn_convs.0.conv.weight'].grad.abs().sum() > 0
    assert student['backbone.conv1.weight'].grad.abs().sum() > 0
    # the proposals are detached: the RPN and RoI heads get nothing from the mimic loss
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in student.items()
               if n.startswith(('rpn_head.', 'roi_head.')))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.distiller.adapter.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert any(k.startswith('distiller.adapter.') for k in model.state_dict())
    assert not any(k.startswith('distiller.roi_extractor') for k in model.state_dict())


def test_gt_boxes_for_a_one_stage_student():
    """RetinaNet (FPN P3-P7, strides 8-128) with GT boxes as RoIs on P3-P6."""
    inputs, samples = make_det_batch(2, 128)
    model = build_model(dict(type='Mimic', proposals='gt', student_channels=64, teacher_channels=64,
                             roi_extractor=dict(featmap_strides=[8, 16, 32, 64])),
                        student=retinanet_cfg(18), teacher=retinanet_cfg(18))
    assert model.teacher_runner.stop_modules == ['neck']
    model.train()
    losses = model.loss(inputs, samples)
    assert losses['distill.roi.num_rois'].item() == 4
    losses['distill.roi.loss_mimic'].backward()
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0


# --- configs and training ---------------------------------------------------------------------
DEMO_CFG = 'configs/demo/mimic_faster_rcnn_shapes.py'
MAIN_CFG = 'configs/mimic_faster_rcnn_r101_r50_fpn_1x_coco.py'


@pytest.mark.slow
def test_main_config_builds_and_trains_one_step_on_a_small_input():
    """The paper's pair (R101 -> R50 Faster R-CNN, 80 classes) builds and runs one training step on
    a 2 x 3 x 128 x 128 batch (nothing downloaded: teacher_checkpoint=None, no ImageNet init)."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, MAIN_CFG))
    assert cfg.model.teacher_checkpoint.endswith('.pth')
    cfg.model.teacher_checkpoint = None
    cfg.model.teacher.backbone.init_cfg = None  # without a checkpoint the teacher is initialised: no ImageNet download
    model = MODELS.build(cfg.model)
    assert type(model.student).__name__ == 'FasterRCNN' and model.student.backbone.depth == 50
    assert model.teacher.backbone.depth == 101
    assert model.student.roi_head.bbox_head.num_classes == 80
    inputs, samples = make_det_batch(2, 128)
    model.train()
    losses = model.loss(inputs, samples)
    assert torch.isfinite(losses['distill.roi.loss_mimic'])
    total, log_vars = model.parse_losses(losses)  # what the runner's train_step sums
    assert 'distill.roi.loss_mimic' in log_vars and 'distill.roi.num_rois' in log_vars
    total.backward()
    assert model.distiller.adapter.conv.weight.grad is not None


def data_options(root):
    from test_train_e2e import data_options as shapes_options
    return shapes_options(root)


@pytest.mark.slow
def test_train_two_iterations_on_the_demo_config(tmp_path):
    args = [PYTHON, 'tools/train.py', DEMO_CFG, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
            'model.teacher_checkpoint=None', 'model.student.test_cfg.rcnn.score_thr=0.0',
            'train_cfg.max_epochs=1', *data_options(tmp_path / 'shapes')]
    proc = subprocess.run(args, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED='1'), capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(r'distill\.roi\.loss_mimic: [0-9.]+', out), out[-3000:]
    assert re.search(r'distill\.roi\.num_rois: [0-9.]+', out), out[-3000:]
    assert 'coco/bbox_mAP' in out
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert not any(k.startswith('teacher.') for k in saved['state_dict'])
    assert any(k.startswith('distiller.adapter.') for k in saved['state_dict'])
