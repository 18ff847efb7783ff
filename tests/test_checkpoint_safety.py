"""mmengine Runner checkpoints load under torch's weights_only default; nothing else does.

See kdtoolbox/engine/checkpoint.py for the problem and the allow-list policy.
"""
import copy
import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseDataPreprocessor, BaseModel
from mmengine.runner import Runner

CHECKPOINT_PY = Path(__file__).resolve().parents[1] / 'kdtoolbox' / 'engine' / 'checkpoint.py'


def _import_checkpoint_module():
    """The normal import when kdtoolbox imports; else the module file alone."""
    try:
        from kdtoolbox.engine import checkpoint
        return checkpoint
    except Exception:  # rest of kdtoolbox broken/in progress: test this module in isolation
        spec = importlib.util.spec_from_file_location('_kdtoolbox_engine_checkpoint', CHECKPOINT_PY)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


ckpt = _import_checkpoint_module()


# --------------------------------------------------------------------------------------------
# A tiny Runner
# --------------------------------------------------------------------------------------------
class ToyModel(BaseModel):

    def __init__(self):
        # An instance, not a registry lookup: under a default scope such as 'mmdet' (set by
        # conftest) a lookup would import all of mmdet.models just to find this class.
        super().__init__(data_preprocessor=BaseDataPreprocessor())
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            labels = torch.stack(labels) if isinstance(labels, list) else labels
            return dict(loss=((out - labels) ** 2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(1, 2, 3), (4, 5, 6)])

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 2, generator=g)
        self.y = torch.randn(8, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def _make_runner(work_dir, max_iters=2, **kwargs):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        # A distinct name per Runner: MessageHub/logger/visualizer instances are global per
        # name, and two Runners created in the same second would otherwise share one hub.
        experiment_name=f'ckpt_safety_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
            dict(type='MultiStepLR', milestones=[1], by_epoch=False),  # milestones: a Counter
        ],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        log_level='WARNING',
        **kwargs)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('train')
    runner = _make_runner(work_dir)
    runner.train()
    path = work_dir / 'iter_2.pth'
    assert path.is_file()
    return runner, path


# --------------------------------------------------------------------------------------------
# Runner checkpoints load and resume
# --------------------------------------------------------------------------------------------
# What a Runner checkpoint names beyond torch's defaults, read statically from the pickle
# (nothing is executed). Asserted in a fresh interpreter below.
RUNNER_CHECKPOINT_GLOBALS = {
    'mmengine.logging.history_buffer.HistoryBuffer',  # message_hub log_scalars
    'builtins.getattr',  # HistoryBuffer.{min,max,current,mean} under pickle protocol 2
    'numpy.core.multiarray._reconstruct', 'numpy.ndarray',  # HistoryBuffer arrays
    'numpy.core.multiarray.scalar',  # numpy scalars in runtime_info (eta)
    'numpy.dtype',
}


def test_allow_list_covers_every_global_in_the_checkpoint(trained):
    _, path = trained
    ckpt.allow_mmengine_checkpoints()
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    loaded = torch.load(path)  # default weights_only=True
    hub = loaded['message_hub']
    assert isinstance(hub['log_scalars']['train/loss'], HistoryBuffer)
    assert isinstance(hub['runtime_info']['eta'], np.generic)
    assert isinstance(loaded['meta']['cfg'], str)
    assert loaded['meta']['dataset_meta']['classes'] == ('a', 'b')


def test_resume_restores_iteration_weights_and_message_hub(trained, tmp_path):
    runner, path = trained
    ckpt.allow_mmengine_checkpoints()

    loaded = torch.load(path)  # default weights_only=True
    assert loaded['meta']['iter'] == 2

    resumed = _make_runner(tmp_path / 'resume', max_iters=2, resume=True, load_from=str(path))
    assert resumed.iter == 0
    resumed.train()  # loads + resumes; iter == max_iters, so no further step is taken

    assert resumed.iter == 2
    old_sd, new_sd = runner.model.state_dict(), resumed.model.state_dict()
    assert old_sd.keys() == new_sd.keys()
    for key in old_sd:
        assert torch.equal(old_sd[key], new_sd[key]), key
        assert torch.equal(loaded['state_dict'][key], new_sd[key]), key

    # optimizer momentum and scheduler state came back too
    old_opt = runner.optim_wrapper.optimizer.state_dict()['state']
    new_opt = resumed.optim_wrapper.optimizer.state_dict()['state']
    for idx in old_opt:
        assert torch.equal(old_opt[idx]['momentum_buffer'], new_opt[idx]['momentum_buffer'])
    assert [s.last_step for s in resumed.param_schedulers] == \
        [s.last_step for s in runner.param_schedulers]

    # message hub: scalar histories (HistoryBuffer + numpy arrays) and numpy runtime info
    old_hub, new_hub = runner.message_hub, resumed.message_hub
    assert old_hub is not new_hub
    for key in ('train/loss', 'train/lr'):
        old_buf, new_buf = old_hub.get_scalar(key), new_hub.get_scalar(key)
        assert isinstance(new_buf, HistoryBuffer)
        np.testing.assert_array_equal(new_buf.data[0], old_buf.data[0])
        np.testing.assert_array_equal(new_buf.data[1], old_buf.data[1])
        assert new_buf.statistics('mean') == old_buf.statistics('mean')  # resolved via getattr shim
        assert new_buf.current() == old_buf.current()
    eta = new_hub.get_info('eta')
    assert isinstance(eta, np.floating) and eta == old_hub.get_info('eta')


def test_load_from_without_resume(trained):
    from mmengine.runner import load_checkpoint

    runner, path = trained
    ckpt.allow_mmengine_checkpoints()
    model = ToyModel()
    load_checkpoint(model, str(path), map_location='cpu')
    for key, value in runner.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_allow_is_idempotent():
    first = ckpt.allow_mmengine_checkpoints()
    n = len(torch.serialization.get_safe_globals())
    for _ in range(3):
        assert ckpt.allow_mmengine_checkpoints() == first
    assert len(torch.serialization.get_safe_globals()) == n
    # builtins.getattr is mapped to the restricted shim, never to the real getattr
    allowed = [g[0] if isinstance(g, tuple) else g for g in torch.serialization.get_safe_globals()]
    assert getattr not in allowed


# --------------------------------------------------------------------------------------------
# Without the allow-list the same file does not load (fresh interpreter: torch + mmengine only)
# --------------------------------------------------------------------------------------------
def test_fresh_interpreter_refuses_without_allow_list(trained):
    _, path = trained
    script = textwrap.dedent(f'''
        import importlib.util, pickle, sys
        import torch, mmengine.logging
        assert 'kdtoolbox' not in sys.modules
        assert not any('kdtoolbox' in str(g) for g in torch.serialization.get_safe_globals())
        print('UNSAFE', sorted(torch.serialization.get_unsafe_globals_in_checkpoint({str(path)!r})))
        try:
            torch.load({str(path)!r})
        except pickle.UnpicklingError as e:
            print('REFUSED', str(e).split('WeightsUnpickler error:')[-1].strip().splitlines()[0])
        else:
            print('LOADED_WITHOUT_ALLOW')
        spec = importlib.util.spec_from_file_location('ckpt_mod', {str(CHECKPOINT_PY)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.allow_mmengine_checkpoints()
        print('ITER', torch.load({str(path)!r})['meta']['iter'])
    ''')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f'UNSAFE {sorted(RUNNER_CHECKPOINT_GLOBALS)}', proc.stdout
    assert lines[1].startswith('REFUSED'), proc.stdout
    assert 'Unsupported global' in lines[1] or 'Can only build' in lines[1], lines[1]
    assert 'ITER 2' in lines, proc.stdout


# --------------------------------------------------------------------------------------------
# Arbitrary pickles are still refused after allow_mmengine_checkpoints()
# --------------------------------------------------------------------------------------------
class _OsSystem:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'echo pwned > {self.marker}',)


class _Exec:  # builtins.exec: a module torch does not block by name

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({str(self.marker)!r}, "w").write("pwned")',)


class _UserThing:

    def __init__(self):
        self.payload = [1, 2, 3]


class _HistoryBufferInit:  # abuse of the getattr name: anything but the 4 statistics methods

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def _save_and_load(obj, path):
    torch.save({'state_dict': {'w': torch.ones(1)}, 'evil': obj}, path)
    return torch.load(path)  # default weights_only=True


@pytest.mark.parametrize('evil_cls', [_OsSystem, _Exec])
def test_code_execution_pickles_are_refused(evil_cls, tmp_path):
    ckpt.allow_mmengine_checkpoints()
    marker = tmp_path / 'pwned.txt'
    with pytest.raises(pickle.UnpicklingError):
        _save_and_load(evil_cls(marker), tmp_path / 'evil.pth')
    assert not marker.exists()


def test_arbitrary_user_class_is_refused(tmp_path):
    ckpt.allow_mmengine_checkpoints()
    with pytest.raises(pickle.UnpicklingError):
        _save_and_load(_UserThing(), tmp_path / 'user.pth')


def test_getattr_shim_only_resolves_history_buffer_statistics(tmp_path):
    ckpt.allow_mmengine_checkpoints()
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        _save_and_load(_HistoryBufferInit(), tmp_path / 'getattr.pth')


def test_numpy_object_arrays_are_refused(tmp_path):
    ckpt.allow_mmengine_checkpoints()
    with pytest.raises(pickle.UnpicklingError):
        _save_and_load(np.array(['x', 1], dtype=object), tmp_path / 'objarr.pth')


def test_numpy_numbers_used_in_runtime_info_load(tmp_path):
    ckpt.allow_mmengine_checkpoints()
    values = {'f64': np.float64(0.5), 'f32': np.float32(0.25), 'i64': np.int64(3),
              'bool': np.bool_(True), 'arr': np.arange(4, dtype=np.int32),
              'hb': HistoryBuffer([1.0, 2.0], [1, 1])}
    back = copy.deepcopy(_save_and_load(values, tmp_path / 'np.pth')['evil'])
    for key in ('f64', 'f32', 'i64', 'bool'):
        assert type(back[key]) is type(values[key]) and back[key] == values[key]
    np.testing.assert_array_equal(back['arr'], values['arr'])
    assert back['hb'].mean() == 1.5
