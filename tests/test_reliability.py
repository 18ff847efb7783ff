"""Training that survives faults: non-finite losses, a kill during a checkpoint save, exact resume."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
from mmengine.optim import OptimWrapper

from conftest import PYTHON, ROOT, distill_model_cfg, fitnet_cfg, make_det_batch
from kdtoolbox.engine.guards import NonFiniteLossError
from kdtoolbox.engine.safe_checkpoint import SafeCheckpointHook, atomic_write, make_resumable
from kdtoolbox.registry import MODELS

DEMO_CFG = 'configs/demo/fitnet_retinanet_shapes.py'


# --- non-finite losses ---------------------------------------------------------------------------
def _model_and_batch(policy):
    model = MODELS.build(distill_model_cfg(fitnet_cfg(), nonfinite_loss=policy))
    inputs, samples = make_det_batch(n=1, size=64, boxes=[[8., 8., 40., 56.]])
    return model, dict(inputs=[(inputs[0] * 40 + 120).clamp(0, 255).to(torch.uint8)], data_samples=samples)


def _poison(model, term='fpn2'):
    """Make one distillation term NaN: its adapter's weights become NaN."""
    with torch.no_grad():
        model.distiller.adapters[int(term[-1])].conv.weight.fill_(float('nan'))


def test_nonfinite_loss_raises_naming_the_loss_and_iteration_and_keeps_the_weights():
    model, data = _model_and_batch('raise')
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    model.train_step(data, optim)  # a finite step works
    _poison(model)
    before = {k: v.detach().clone() for k, v in model.student.named_parameters()}
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('test-nonfinite')  # the runner's counters, as mmengine keeps them
    hub.update_info('iter', 6)
    hub.update_info('epoch', 1)
    with pytest.raises(NonFiniteLossError, match=r'at iteration 7 \(epoch 2\): distill\.fpn2\.loss_hint = nan'):
        model.train_step(data, optim)
    after = dict(model.student.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nonfinite_loss_skip_policy_skips_only_that_update():
    model, data = _model_and_batch('skip')
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    model.train_step(data, optim)  # momentum buffers exist: a zero-grad step would still move weights
    saved_weight = model.distiller.adapters[2].conv.weight.detach().clone()
    _poison(model)
    before = {k: v.detach().clone() for k, v in model.student.named_parameters()}
    log_vars = model.train_step(data, optim)
    assert log_vars['nonfinite_skipped'].item() == 1
    after = dict(model.student.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None or not p.grad.abs().sum() for p in model.student.parameters())
    with torch.no_grad():
        model.distiller.adapters[2].conv.weight.copy_(saved_weight)
    log_vars = model.train_step(data, optim)
    assert 'nonfinite_skipped' not in log_vars
    assert any(not torch.equal(before[k], v) for k, v in model.student.named_parameters())


def test_invalid_policy_is_named():
    with pytest.raises(ValueError, match='nonfinite_loss'):
        MODELS.build(distill_model_cfg(fitnet_cfg(), nonfinite_loss='ignore'))


# --- atomic checkpoint writes --------------------------------------------------------------------
def test_atomic_write_leaves_the_old_file_when_the_writer_is_killed(tmp_path):
    target = tmp_path / 'epoch_1.pth'
    atomic_write(b'old complete checkpoint', str(target))
    script = (f'import sys; sys.path.insert(0, {ROOT!r})\n'
              'from kdtoolbox.engine.safe_checkpoint import atomic_write\n'
              f'atomic_write(b"x" * (1 << 31), {str(target)!r})\n')
    proc = subprocess.Popen([PYTHON, '-c', script])
    try:
        for _ in range(60000):  # wait until the temporary file has content, then kill
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith('.tmp')]
            if tmps and tmps[0].stat().st_size > 0:
                break
            if proc.poll() is not None:
                pytest.fail('the writer ended before it could be killed')
            import time
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert target.read_bytes() == b'old complete checkpoint'


def test_make_resumable_swaps_the_hook_and_adds_the_random_state_hook():
    from mmengine.config import Config
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)),
                      custom_hooks=[dict(type='kdtoolbox.DistillLossScheduleHook')]))
    make_resumable(cfg)
    assert cfg.default_hooks.checkpoint.type == 'kdtoolbox.SafeCheckpointHook'
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 1
    assert [h['type'] for h in cfg.custom_hooks] == ['kdtoolbox.DistillLossScheduleHook', 'kdtoolbox.RandomStateHook']
    make_resumable(cfg)  # idempotent
    assert len(cfg.custom_hooks) == 2
    assert SafeCheckpointHook(interval=1).backend_args == dict(backend='kdtoolbox_atomic_local')


# --- through tools/train.py ----------------------------------------------------------------------
def _common(data_root, work):
    from test_train_e2e import data_options
    return ['--work-dir', str(work), '--cfg-options', 'model.teacher_checkpoint=None', 'randomness.seed=0',
            'train_cfg.val_interval=10', 'default_hooks.checkpoint.max_keep_ckpts=1',
            *[o for o in data_options(data_root) if not o.startswith('train_cfg.val_interval')]]


def _losses(work):
    """Per-iteration training losses from the run's scalar log."""
    logs = sorted(work.glob('*/vis_data/scalars.json'))
    out = {}
    for path in logs:
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if 'loss' in rec:
                out[rec['iter']] = rec['loss']
    return out


@pytest.mark.slow
def test_a_process_killed_while_saving_resumes_from_the_previous_checkpoint(tmp_path):
    from test_train_e2e import run
    work = tmp_path / 'work'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([f'{ROOT}/tests/fixtures/reliability',
                                                      os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([PYTHON, 'tools/train.py', 'tests/fixtures/configs/kill_during_save.py',
                           *_common(tmp_path / 'shapes', work), 'train_cfg.max_epochs=2'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (work / 'killed_during_save').exists()
    # max_keep_ckpts=1: mmengine's own hook would already have deleted epoch_1.pth here
    assert (work / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    saved = torch.load(work / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['epoch'] == 1 and not (work / 'epoch_2.pth').exists()
    out = run(['tools/train.py', DEMO_CFG, '--resume', *_common(tmp_path / 'shapes', work), 'train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 2' in out, out[-3000:]
    assert torch.load(work / 'epoch_2.pth', map_location='cpu')['meta']['iter'] == 4
    assert not (work / 'epoch_1.pth').exists()  # removed once epoch_2.pth was complete
    assert not list(work.glob('.*.tmp'))


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    from test_train_e2e import run
    data = tmp_path / 'shapes'
    straight, halves = tmp_path / 'straight', tmp_path / 'halves'
    run(['tools/train.py', DEMO_CFG, *_common(data, straight), 'train_cfg.max_epochs=2'])
    run(['tools/train.py', DEMO_CFG, *_common(data, halves), 'train_cfg.max_epochs=1'])
    out = run(['tools/train.py', DEMO_CFG, '--resume', *_common(data, halves), 'train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 2' in out
    a, b = _losses(straight), _losses(halves)
    assert sorted(a) == [1, 2, 3, 4] and sorted(b) == [1, 2, 3, 4]
    assert a == b, (a, b)
    sa = torch.load(straight / 'epoch_2.pth', map_location='cpu')['state_dict']
    sb = torch.load(halves / 'epoch_2.pth', map_location='cpu')['state_dict']
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- bad input through tools/train.py: one message, non-zero exit, nothing but the log -------------
@pytest.mark.parametrize('option, message', [
    ('model.distiller.type=FitNt', r"distiller.type='FitNt': no distiller of that name.*\nDid you mean 'FitNet'"),
    ('model.teacher_checkpoint=/nonexistent/teacher.pth', r"teacher_checkpoint: no checkpoint at '/nonexistent/teacher.pth'"),
])
def test_train_py_reports_a_config_error_in_one_message_and_writes_no_checkpoint(tmp_path, option, message):
    work = tmp_path / 'work'
    proc = subprocess.run([PYTHON, 'tools/train.py', DEMO_CFG, '--work-dir', str(work), '--cfg-options', option],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert re.search(message, proc.stderr), proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr  # one message; the traceback went to the log file
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob('*') if p.is_file())
    assert all(p.endswith('.log') or p.endswith('vis_data/config.py') for p in written), written
    assert any('Traceback' in (work / p).read_text() for p in written if p.endswith('.log'))
