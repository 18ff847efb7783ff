"""The preflight check (kdtoolbox/engine/preflight.py) and, through tools/train.py, every bad-input
case of the issue "Bad input gets a clear error and loses nothing": one message naming the key,
module or file, exit code 1, nothing written but the log."""
import random
import re
import subprocess

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import PYTHON, ROOT, distill_model_cfg, fitnet_cfg, make_det_batch, retinanet_cfg
from kdtoolbox.engine.distiller import FeaturePair
from kdtoolbox.engine.preflight import (PreflightError, add_preflight_hook, preserved_buffers,
                                        preserved_random_state, run_preflight)
from kdtoolbox.registry import MODELS


def raw_batch(n=2, size=64):
    """What a detection train dataloader yields: uint8 images and data samples with GT boxes."""
    inputs, samples = make_det_batch(n=n, size=size, boxes=[[8., 8., 40., 56.]])
    return dict(inputs=[(x * 40 + 120).clamp(0, 255).to(torch.uint8) for x in inputs], data_samples=samples)


def configurable(student_module='neck.fpn_convs.0.conv', teacher_module='neck.fpn_convs.0.conv',
                 adapters=None, adapter='p3'):
    return dict(type='ConfigurableDistiller', student_recorders=dict(p3=student_module),
                teacher_recorders=dict(p3=teacher_module),
                adapters=adapters if adapters is not None else
                dict(p3=dict(type='ConvAdapter', in_channels=64, out_channels=64)),
                losses=dict(p3=dict(type='FeatureMSELoss', inputs=dict(
                    student=dict(record='student.p3', adapter=adapter) if adapter else 'student.p3',
                    teacher='teacher.p3'))))


def build(distiller, **kwargs):
    model = MODELS.build(distill_model_cfg(distiller, **kwargs))
    model.train()
    return model


# --- in process ------------------------------------------------------------------------------------
def test_a_good_config_passes_and_reports_what_it_checked():
    model = build(fitnet_cfg())
    summary = run_preflight(model, raw_batch())
    assert summary == dict(student_records=1, teacher_records=1, pairs=5)  # 'features'[0..4]
    assert not model.student_recorder.records()._values and not model.teacher_runner.recorder.records()._values


def test_a_recorder_that_never_fires_is_named_with_its_module():
    # a teacher in 'tensor' mode never computes its loss: its loss_cls module never runs
    model = build(configurable(teacher_module='bbox_head.loss_cls', adapter=None))
    with pytest.raises(PreflightError, match=r"(?s)a recorder never fired.*teacher recorder 'p3': module "
                                             r"'bbox_head.loss_cls' did not run.*model.teacher_mode='loss'"):
        run_preflight(model, raw_batch())
    # the student's data preprocessor runs before its loss(), outside the recorded forward
    model = build(configurable(student_module='data_preprocessor', adapter=None))
    with pytest.raises(PreflightError, match=r"student recorder 'p3': module 'data_preprocessor' did not run"):
        run_preflight(model, raw_batch())
    # unless the distiller declares the record optional (then the distiller is what fails on it)
    model.distiller.optional_records = ('student.p3',)
    with pytest.raises(PreflightError, match=r"(?s)ConfigurableDistiller failed on one training batch.*"
                                             r"did not run.*student 'p3' \(not recorded\); teacher 'p3' \(2, 64, 8, 8\)"):
        run_preflight(model, raw_batch())


def test_features_of_another_size_are_named_with_both_shapes_and_the_adapter_to_add():
    # P3 (stride 8) against P4 (stride 16): a 64x64 image gives 8x8 and 4x4 grids
    model = build(configurable(teacher_module='neck.fpn_convs.1.conv'))
    with pytest.raises(PreflightError) as exc:
        run_preflight(model, raw_batch())
    msg = str(exc.value)
    assert "distiller.losses.p3: student 'p3' (2, 64, 8, 8) -> distiller.adapters.p3 -> (2, 64, 8, 8) and " \
           "teacher 'p3' (2, 64, 4, 4) do not meet: they differ in size (8x8 vs 4x4): add dict(type='ResizeAdapter')" \
           in msg, msg
    assert 'differ in channels' not in msg
    # the fix that the message names makes it pass
    fixed = configurable(teacher_module='neck.fpn_convs.1.conv',
                         adapters=dict(p3=[dict(type='ConvAdapter', in_channels=64, out_channels=64),
                                           dict(type='ResizeAdapter')]))
    run_preflight(build(fixed), raw_batch())


def test_an_adapter_that_cannot_take_the_student_feature_is_named():
    model = build(configurable(adapters=dict(p3=dict(type='ConvAdapter', in_channels=128, out_channels=64))))
    with pytest.raises(PreflightError, match=r"(?s)student 'p3' \(2, 64, 8, 8\) vs teacher 'p3' \(2, 64, 8, 8\): "
                                             r"the student adapter distiller.adapters.p3 cannot take the student "
                                             r"feature .*set its input channels to 64"):
        run_preflight(model, raw_batch())


def test_channels_that_differ_without_an_adapter_name_a_channel_adapter():
    student = retinanet_cfg(18)
    student['neck']['out_channels'] = student['bbox_head']['in_channels'] = student['bbox_head']['feat_channels'] = 32
    model = build(configurable(adapter=None), student=student)
    with pytest.raises(PreflightError, match=r"they differ in channels \(32 vs 64\): add a channel adapter \(e.g. "
                                             r"dict\(type='ConvAdapter', in_channels=32, out_channels=64\)"):
        run_preflight(model, raw_batch())


def test_a_distiller_that_fails_for_another_reason_is_reported_with_the_record_shapes():
    model = build(dict(fitnet_cfg(), num_levels=6))  # the FPN has 5 levels
    with pytest.raises(PreflightError, match=r"(?s)FitNet failed on one training batch before the first iteration: "
                                             r"ValueError: FitNet: expected 6 levels, the student gave 5.*student "
                                             r"'features' \[\(2, 64, 8, 8\), \(2, 64, 4, 4\), \(2, 64, 2, 2\), "
                                             r"\(2, 64, 1, 1\), \(2, 64, 1, 1\)\]"):
        run_preflight(model, raw_batch())


def test_detection_distillers_name_their_channel_keys():
    # a 32-channel student FPN against the 64-channel teacher, with the distillers' channels left at 64
    student = retinanet_cfg(18)
    student['neck']['out_channels'] = student['bbox_head']['in_channels'] = student['bbox_head']['feat_channels'] = 32
    model = build(dict(type='FitNet', student_channels=64, teacher_channels=64, num_levels=5), student=student)
    with pytest.raises(PreflightError) as exc:
        run_preflight(model, raw_batch())
    msg = str(exc.value)
    assert "distiller (FitNet, fpn0): student 'features[0]' (2, 32, 8, 8) vs teacher 'features[0]' (2, 64, 8, 8): " \
           "the student adapter distiller.student_channels / teacher_channels (level 0: ConvAdapter 64 -> 64) " \
           "cannot take the student feature" in msg, msg
    assert 'set its input channels to 32' in msg and 'fpn4' in msg
    # PFI builds no adapter for equal channels: the pair names the channels to set
    model = build(dict(type='RankMimicPFI', student_channels=64, teacher_channels=64), student=student)
    with pytest.raises(PreflightError, match=r"distiller \(RankMimicPFI, PFI level 0\): student "
                                             r"'neck.fpn_convs.0.conv' \(2, 32, 8, 8\) and teacher "
                                             r"'neck.fpn_convs.0.conv' \(2, 64, 8, 8\) do not meet: they differ in "
                                             r"channels \(32 vs 64\).*student_channels=32 / teacher_channels=64"):
        run_preflight(model, raw_batch())
    # the fixes that the messages name make both pass, with one pair per level
    for cfg in (dict(type='FitNet', student_channels=32, teacher_channels=64, num_levels=5),
                dict(type='RankMimicPFI', student_channels=32, teacher_channels=64)):
        assert run_preflight(build(cfg, student=student), raw_batch())['pairs'] == 5


def test_default_pairs_are_same_named_records_level_by_level():
    s = [torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 2, 2)]
    t = [torch.zeros(1, 16, 4, 4), torch.zeros(1, 16, 1, 1), torch.zeros(1, 3)]
    pairs = FeaturePair.from_values('f', 'f', s, t)
    assert [(p.student_name, p.teacher_name) for p in pairs] == [("'f'[0]", "'f'[0]"), ("'f'[1]", "'f'[1]")]
    assert 'differ in channels (8 vs 16)' in pairs[0].problem() and 'size' not in pairs[0].problem()
    assert 'differ in size (2x2 vs 1x1)' in pairs[1].problem()
    assert FeaturePair.from_values('f', 'f', torch.zeros(2, 5), torch.zeros(7, 5))[0].problem() is None  # batch aside
    assert FeaturePair.from_values('f', 'f', 'text', torch.zeros(1)) == []


def test_state_is_left_as_found():
    model = build(fitnet_cfg())
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    with preserved_random_state(), preserved_buffers(model):
        run_preflight(model, raw_batch())
        random.random(), np.random.rand(), torch.rand(5)
        changed = [k for k, v in model.named_buffers() if not torch.equal(v, buffers[k])]
    assert any('running_mean' in k for k in changed)  # the student's BatchNorms did move...
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    for k, v in model.named_buffers():  # ...and were put back
        assert torch.equal(v, buffers[k]), k


def test_the_distiller_runs_on_a_scratch_copy():
    # MasKD switches on its mask customisation (a flag it keeps) at custom_mask_warmup
    model = build(dict(type='MasKD', student_channels=64, teacher_channels=64, custom_mask_warmup=0))
    before = {k: v.clone() for k, v in model.distiller.state_dict().items()}
    run_preflight(model, raw_batch())
    assert model.distiller._customising is False
    assert all(torch.equal(v, before[k]) for k, v in model.distiller.state_dict().items())
    model(*make_det_batch(n=1, size=64), mode='loss')  # the real first step is the one that switches it
    assert model.distiller._customising is True


def test_the_hook_is_added_to_distillation_configs_only_and_once():
    cfg = Config(dict(model=dict(type='kdtoolbox.DistillationModel'), custom_hooks=[dict(type='X')]))
    add_preflight_hook(cfg)
    add_preflight_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['X', 'kdtoolbox.PreflightHook']
    plain = Config(dict(model=dict(type='RetinaNet')))
    add_preflight_hook(plain)
    assert 'custom_hooks' not in plain


# --- through tools/train.py: one message, exit code 1, nothing written but the log ---------------------
DEMO = 'configs/demo/fitnet_retinanet_shapes.py'
CONFIGURABLE = 'tests/fixtures/configs/configurable_shapes.py'
GID = 'configs/demo/gid_retinanet_shapes.py'


def _garbage(tmp_path):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(b'not a checkpoint')
    return path


def _wrong_keys(tmp_path):
    path = tmp_path / 'wrong.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1), 'extra.weight': torch.zeros(1)}}, path)
    return path


CASES = {
    'unknown distiller': (DEMO, lambda tmp: ['model.distiller.type=FitNt'],
                          r"(?s)distiller.type='FitNt': no distiller of that name.*Did you mean 'FitNet'"),
    'unknown loss': (CONFIGURABLE, lambda tmp: ['model.distiller.losses.p3.type=FeatureMSELos'],
                     r"(?s)distiller.losses.p3.type='FeatureMSELos': no loss of that name.*'FeatureMSELoss'"),
    'unknown adapter': (CONFIGURABLE, lambda tmp: ['model.distiller.adapters.p3.type=ConvAdaptr'],
                        r"(?s)distiller.adapters.p3.type='ConvAdaptr': no adapter of that name.*'ConvAdapter'"),
    'no such module': (CONFIGURABLE, lambda tmp: ['model.distiller.student_recorders.p3=neck.fpn_conv.0.conv'],
                       r"student has no module 'neck.fpn_conv.0.conv'. Did you mean 'neck.fpn_convs.0.conv'"),
    'recorder never fires': (CONFIGURABLE, lambda tmp: ['model.distiller.teacher_recorders.p3=bbox_head.loss_cls'],
                             r"PreflightError: a recorder never fired on one training batch:\n  teacher recorder "
                             r"'p3': module 'bbox_head.loss_cls' did not run"),
    'shapes do not meet': (CONFIGURABLE, lambda tmp: ['model.distiller.teacher_recorders.p3=neck.fpn_convs.1.conv'],
                           r"PreflightError: ConfigurableDistiller: teacher and student features do not meet:\n  "
                           r"distiller.losses.p3: student 'p3' \(4, 256, 32, 32\) -> distiller.adapters.p3 -> "
                           r"\(4, 256, 32, 32\) and teacher 'p3' \(4, 256, 16, 16\) do not meet: they differ in size"),
    'missing teacher checkpoint': (DEMO, lambda tmp: ['model.teacher_checkpoint=/nonexistent/teacher.pth'],
                                   r"teacher_checkpoint: no checkpoint at '/nonexistent/teacher.pth'"),
    'unreadable teacher checkpoint': (DEMO, lambda tmp: [f'model.teacher_checkpoint={_garbage(tmp)}'],
                                      r"teacher_checkpoint '.*garbage.pth' cannot be read"),
    'teacher checkpoint keys': (DEMO, lambda tmp: [f'model.teacher_checkpoint={_wrong_keys(tmp)}'],
                                r"teacher_checkpoint '.*wrong.pth' does not fit the teacher config: \d+ missing keys "
                                r"\(backbone.bn1.weight, .*more\)\); 1 unexpected keys \(extra.weight\); 1 keys of another "
                                r"shape \(checkpoint vs config\) \(backbone.conv1.weight \(1,\) vs \(64, 3, 7, 7\)\)"),
    'class counts differ': (GID, lambda tmp: ['model.teacher_checkpoint=None', 'model.student.bbox_head.num_classes=4'],
                            r'GID compares class scores, but the student has 4 classes and the teacher 3'),
}


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_train_py_reports_bad_input_in_one_message_and_writes_nothing_but_the_log(tmp_path, case):
    config, options, message = CASES[case]
    work = tmp_path / 'work'
    data = tmp_path / 'shapes'  # the generated data set (4 images) goes here, not into the work dir
    opts = options(tmp_path)
    if not any(o.startswith('model.teacher_checkpoint=') for o in opts):
        opts.append('model.teacher_checkpoint=None')
    proc = subprocess.run([PYTHON, 'tools/train.py', config, '--work-dir', str(work), '--cfg-options', *opts,
                           f'train_dataloader.dataset.data_root={data}/', 'train_dataloader.dataset.num_train=4',
                           'train_dataloader.dataset.num_val=2', f'val_dataloader.dataset.data_root={data}/',
                           'val_dataloader.dataset.num_train=4', 'val_dataloader.dataset.num_val=2',
                           f'val_evaluator.ann_file={data}/annotations/val.json'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert re.search(message, proc.stderr), proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and proc.stderr.count('kdtoolbox train: ') == 1, proc.stderr[-3000:]
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob('*') if p.is_file())
    # the log, and the copies of the config that mmengine's runner writes when it starts (errors
    # found by the preflight check come after that): no checkpoint, no last_checkpoint, no scalars
    config_copies = ('vis_data/config.py', config.rsplit('/', 1)[-1])
    assert all(p.endswith('.log') or p.endswith(config_copies) for p in written), written
    assert any('Traceback' in (work / p).read_text() for p in written if p.endswith('.log'))
