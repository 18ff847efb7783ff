"""Mixed precision: bf16 autocast on CPU (what --amp uses there), the teacher's precision setting,
fp32 records and losses for the distiller, and --amp through tools/train.py."""
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS

from conftest import distill_model_cfg, fitnet_cfg, make_det_batch

bf16_cpu = pytest.mark.skipif(not hasattr(torch, 'autocast'), reason='torch without CPU autocast')


def tensor_dtypes(value) -> set:
    """dtypes of every tensor in a (nested) record value."""
    if isinstance(value, torch.Tensor):
        return {value.dtype}
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(tensor_dtypes(v) for v in value)) if value else set()
    return set()


def build_spying(**kwargs):
    """A FitNet DistillationModel (R18 student, R34 teacher) whose distiller notes what it receives:
    the raw record dtypes (as the models produced them), the dtypes it reads, and whether autocast
    was on inside it."""
    model = MODELS.build(distill_model_cfg(fitnet_cfg(), **kwargs))
    seen = {}
    forward = model.distiller.forward

    def spy(student, teacher, context):
        identity = lambda v: v  # noqa: E731
        seen['student_raw'] = tensor_dtypes([student.with_transform(identity)[k] for k in student])
        seen['teacher_raw'] = tensor_dtypes([teacher.with_transform(identity)[k] for k in teacher])
        seen['student'] = tensor_dtypes([student[k] for k in student])
        seen['teacher'] = tensor_dtypes([teacher[k] for k in teacher])
        seen['autocast'] = torch.is_autocast_enabled('cpu')
        return forward(student, teacher, context)

    model.distiller.forward = spy
    return model, seen


@bf16_cpu
def test_bf16_autocast_student_and_teacher_in_bf16_distiller_in_fp32():
    inputs, samples = make_det_batch(n=2, size=96)
    model, seen = build_spying()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(inputs, samples, mode='loss')
    assert seen['student_raw'] == {torch.bfloat16}  # the student's convs ran in bf16
    assert seen['teacher_raw'] == {torch.bfloat16}  # teacher_autocast=None follows the student
    assert seen['student'] == seen['teacher'] == {torch.float32}
    assert seen['autocast'] is False
    distill = {k: v for k, v in losses.items() if k.startswith('distill.')}
    assert distill and all(v.dtype == torch.float32 and torch.isfinite(v) and v > 0 for v in distill.values())


@bf16_cpu
def test_teacher_autocast_false_keeps_the_teacher_in_fp32_under_amp():
    inputs, samples = make_det_batch(n=1, size=96)
    model, seen = build_spying(teacher_autocast=False)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(inputs, samples, mode='loss')
    assert seen['teacher_raw'] == {torch.float32}
    assert seen['student_raw'] == {torch.bfloat16}


@bf16_cpu
def test_teacher_autocast_dtype_runs_the_teacher_in_bf16_for_an_fp32_student():
    inputs, samples = make_det_batch(n=1, size=96)
    model, seen = build_spying(teacher_autocast='bfloat16')
    model(inputs, samples, mode='loss')
    assert seen['teacher_raw'] == {torch.bfloat16}
    assert seen['student_raw'] == {torch.float32}
    assert seen['teacher'] == {torch.float32}
    model, seen = build_spying(teacher_autocast=True)  # the device's default: bf16 on CPU
    model(inputs, samples, mode='loss')
    assert seen['teacher_raw'] == {torch.bfloat16}


def test_bad_teacher_autocast_is_named():
    with pytest.raises(ValueError, match='teacher_autocast'):
        MODELS.build(distill_model_cfg(fitnet_cfg(), teacher_autocast='fp8'))


def optim_cfg():
    return Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01),
                                          clip_grad=dict(max_norm=35))))


def test_configure_amp_cpu_is_bf16_autocast_without_loss_scale():
    from kdtoolbox.engine.amp import AutocastOptimWrapper, configure_amp
    cfg = optim_cfg()
    cfg.optim_wrapper.loss_scale = 'dynamic'
    assert 'bfloat16' in configure_amp(cfg, cuda=False)
    assert cfg.optim_wrapper.type == 'kdtoolbox.AutocastOptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    model = torch.nn.Linear(4, 2)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, AutocastOptimWrapper)
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.bfloat16
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().pow(2).sum())
    assert not torch.equal(before, model.weight)
    assert not torch.is_autocast_enabled('cpu')


def test_configure_amp_cuda_is_fp16_with_dynamic_loss_scale():
    from kdtoolbox.engine.amp import configure_amp
    cfg = optim_cfg()
    assert 'float16' in configure_amp(cfg, cuda=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic' and cfg.optim_wrapper.dtype == 'float16'


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_fp16_autocast_distiller_in_fp32():
    inputs, samples = make_det_batch(n=2, size=96)
    model, seen = build_spying()
    model = model.cuda()
    for s in samples:
        s.gt_instances = s.gt_instances.to('cuda')
    with torch.autocast('cuda', dtype=torch.float16):
        losses = model(inputs.cuda(), samples, mode='loss')
    assert seen['student_raw'] == {torch.float16} and seen['student'] == {torch.float32}
    assert all(v.dtype == torch.float32 for k, v in losses.items() if k.startswith('distill.'))


@pytest.mark.slow
@bf16_cpu
def test_train_py_amp_on_cpu(tmp_path):
    from test_train_e2e import DISTILL_CFG, data_options, run
    out = run(['tools/train.py', DISTILL_CFG, '--amp', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               'model.teacher_checkpoint=None', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=100',
               *data_options(tmp_path / 'shapes')])
    assert "type='kdtoolbox.AutocastOptimWrapper'" in out or 'kdtoolbox.AutocastOptimWrapper' in out
    line = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out).group(0)
    value = float(re.search(r'distill\.fpn0\.loss_hint: ([0-9.e+-]+)', line).group(1))
    assert value > 0 and value == value
    assert float(re.search(r' loss: ([0-9.e+-]+)', line).group(1)) > 0


def test_two_stage_detector_trains_under_cpu_bf16_autocast():
    """A Faster R-CNN (RPN proposals through mmcv's nms, RoI features through mmcv's RoIAlign) takes a
    training step under AutocastOptimWrapper on CPU: mmcv's CPU kernels take fp32 only, and the
    wrapper's mmcv compat casts their inputs (kdtoolbox.ops.mmcv_compat). The loss is finite, the
    backbone gets gradients through RoIAlign's backward, and the raw kernel still refuses bf16 (so
    the compat layer is what makes it work)."""
    from mmcv.utils import ext_loader
    from conftest import faster_rcnn_cfg
    from kdtoolbox.engine.amp import AutocastOptimWrapper
    from kdtoolbox.engine.builder import build_model

    ext = ext_loader.load_ext('_ext', ['nms'])
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):
        ext.nms(boxes, torch.tensor([0.9, 0.8], dtype=torch.bfloat16), iou_threshold=0.5, offset=0)

    torch.manual_seed(0)
    model = build_model(faster_rcnn_cfg(), 'student')  # (a dict: build_model makes it a ConfigDict)
    model.train()
    wrapper = AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    inputs, samples = make_det_batch(2, 128)
    with wrapper.optim_context(model):
        losses = model.loss(inputs, samples)
        assert torch.is_autocast_cpu_enabled()
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    assert 'loss_cls' in losses and 'loss_rpn_cls' in losses  # the RoI head ran on RoIAlign features
    wrapper.backward(total)
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_mmcv_compat_casts_half_cpu_inputs_only():
    """The wrapped nms gives the fp32 answer for bf16 boxes and scores (mixed too); RoIAlign returns
    the features' dtype and fp32 inputs pass through bit-identical."""
    from mmcv.ops import nms, roi_align
    from kdtoolbox.ops.mmcv_compat import enable_cpu_autocast_for_mmcv_ops
    assert enable_cpu_autocast_for_mmcv_ops()
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [0, 2]  # box 1 overlaps box 0 (IoU 0.81)
    for b, s in ((boxes.bfloat16(), scores.bfloat16()), (boxes, scores.bfloat16())):
        assert nms(b, s, 0.5)[1].tolist() == [0, 2]
    feats = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    rois = torch.tensor([[0., 1., 1., 5., 5.]])
    ref = roi_align(feats, rois, (2, 2), 1.0, 2, 'avg', True)
    half = roi_align(feats.bfloat16(), rois, (2, 2), 1.0, 2, 'avg', True)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, rtol=1e-2, atol=0.5)  # bf16 input rounding
