"""The plugin system, with example plugin packages really installed by pip (no mocks).

The packages in ``tests/fixtures/plugins/`` are installed once per session with
``pip install --no-deps --no-build-isolation --no-index --target DIR`` into two directories:
``all`` (the good plugin and the four broken ones) and ``good`` (the good plugin alone).
In-process tests put a directory on ``sys.path`` and re-scan the entry points with
``reset_plugins()``; subprocess tests (the ``kdtoolbox`` console script) get it through
``PYTHONPATH``. Importing kdtoolbox (torch, mmengine) costs seconds of CPU, so the subprocesses
are started together right after the install and run while the in-process tests do; the tests
that check their output come last in this file.
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kdtoolbox
from kdtoolbox import plugins as kdplugins
from kdtoolbox.plugins import PluginLoadError, PluginWarning, load_plugins, reset_plugins

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / 'fixtures' / 'plugins'
EXAMPLE = REPO / 'examples' / 'kdtoolbox-example-plugin'  # the README's "Write a plugin" package

GOOD = 'kdtb_good'  # entry-point names, as declared in the fixtures' pyproject.toml
# entry-point name -> (distribution name, version, what its failure must say)
BROKEN = {
    'kdtb_broken_import': ('kdtb-broken-import', '0.0.1',
                           ['ModuleNotFoundError', "No module named 'kdtb_missing_dependency'"]),
    'kdtb_bad_signature': ('kdtb-bad-signature', '0.0.2', ['PluginValidationError', 'extra']),
    'a_kdtb_duplicate': ('kdtb-duplicate', '0.0.3', ["'FitNet'", 'already registered', "'detection'"]),
    'kdtb_raises': ('kdtb-raises', '0.0.4',
                    ['RuntimeError', 'kdtb-raises fails inside kdtoolbox_register on purpose']),
}
# what the broken plugins would have registered (staged before they failed, or never defined)
NEVER_REGISTERED = ['BrokenDistiller', 'BadSignatureDistiller', 'DuplicateNewDistiller', 'RaisesDistiller']
FIXTURE_MODULES = ('kdtb_example_good', 'kdtb_broken_import', 'kdtb_bad_signature', 'kdtb_duplicate',
                   'kdtb_raises')


def _console_script() -> Path | None:
    for candidate in (Path(sys.executable).with_name('kdtoolbox'), REPO / '.venv' / 'bin' / 'kdtoolbox'):
        if candidate.exists():
            return candidate
    return None


class _Background:
    """A subprocess started now (plugins visible through ``PYTHONPATH``), its result read later."""

    def __init__(self, args: list[str], pythonpath: Path, log: Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith('KDTOOLBOX_')}
        env['PYTHONPATH'] = str(pythonpath)
        self.args, self._out, self._err = args, log.with_suffix('.out'), log.with_suffix('.err')
        with open(self._out, 'w') as out, open(self._err, 'w') as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=REPO)

    def result(self, timeout: float = 300) -> subprocess.CompletedProcess:
        self.proc.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.args, self.proc.returncode, self._out.read_text(),
                                           self._err.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pip_install(target: Path, packages: list, scratch: Path) -> None:
    """Install packages (fixture names, or package folders) into ``target`` with real pip. It builds
    from copies in ``scratch``, so that the in-tree build (no isolation) leaves no build/ or
    *.egg-info in the repository."""
    sources = []
    for package in packages:
        source = Path(package) if isinstance(package, Path) else FIXTURES / package
        shutil.copytree(source, scratch / source.name)
        sources.append(str(scratch / source.name))
    cmd = [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
           '--disable-pip-version-check', '--no-cache-dir', '--quiet', '--target', str(target), *sources]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}'


@pytest.fixture(scope='session')
def installed(tmp_path_factory):
    """Two ``--target`` directories: ``all`` (good + broken plugins, from one pip run) and ``good``
    (pip's output for the good plugin alone, copied: a second pip run costs seconds)."""
    root = tmp_path_factory.mktemp('kdtb_plugins')
    dirs = SimpleNamespace(all=root / 'all', good=root / 'good')
    _pip_install(dirs.all, ['kdtb-example-good', 'kdtb-broken-import', 'kdtb-bad-signature',
                            'kdtb-duplicate', 'kdtb-raises'], root / 'src')
    installed_names = sorted(p.name for p in dirs.all.iterdir())
    good_files = ['kdtb_example_good', 'kdtb_example_good-0.3.1.dist-info']
    assert set(good_files) <= set(installed_names), installed_names
    for name in ('kdtb_broken_import-0.0.1.dist-info', 'kdtb_bad_signature-0.0.2.dist-info',
                 'kdtb_duplicate-0.0.3.dist-info', 'kdtb_raises-0.0.4.dist-info'):
        assert name in installed_names, installed_names
    for name in good_files:
        shutil.copytree(dirs.all / name, dirs.good / name)
    script = _console_script()
    runs = {}
    if script is not None:
        runs.update(list_all=([str(script), 'plugins', 'list'], dirs.all),
                    doctor_all=([str(script), 'plugins', 'doctor'], dirs.all),
                    doctor_good=([str(script), 'plugins', 'doctor'], dirs.good))
    dirs.runs = {name: _Background(args, path, root / name) for name, (args, path) in runs.items()}
    try:
        yield dirs
    finally:
        for run in dirs.runs.values():
            run.stop()


def _cli(installed, name: str) -> subprocess.CompletedProcess:
    if name not in installed.runs:
        pytest.skip('the kdtoolbox console script is not installed (pip install -e .)')
    return installed.runs[name].result()


def _visible(target: Path, monkeypatch):
    """Make the plugins installed in ``target`` visible to this process; undo it afterwards."""
    monkeypatch.delenv(kdplugins.DISABLE_ENV, raising=False)
    monkeypatch.delenv(kdplugins.STRICT_ENV, raising=False)
    saved = list(sys.path)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    reset_plugins()
    try:
        yield target
    finally:
        sys.path[:] = saved
        for name in [m for m in sys.modules if m.split('.')[0] in FIXTURE_MODULES]:
            del sys.modules[name]
        importlib.invalidate_caches()
        reset_plugins()


@pytest.fixture
def all_plugins(installed, monkeypatch):
    yield from _visible(installed.all, monkeypatch)


@pytest.fixture
def good_plugin(installed, monkeypatch):
    yield from _visible(installed.good, monkeypatch)


def _load_recording_warnings(**kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        plugins = load_plugins(**kwargs)
    return plugins, [w for w in caught if issubclass(w.category, PluginWarning)]


def _parse_table(text: str) -> dict[str, dict]:
    """``kdtoolbox plugins list`` output -> {name: {status, package, version, module, components}}."""
    table, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.startswith('no plugins found'):
            continue
        if not line.startswith(' '):
            fields = line.split()
            current = table[fields[0]] = dict(status=fields[1], package=fields[2], rest=fields[3:],
                                              components=[], error=None)
            continue
        kind, _, name = line.strip().partition(' ')
        if kind == 'error:':
            current['error'] = name.strip()
        else:
            current['components'].append((kind, name.strip()))
    return table


def _plugin_warnings_by_name(caught) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for w in caught:
        text = str(w.message)
        name = text.split('kdtoolbox plugin ', 1)[-1].split(' (', 1)[0]
        out.setdefault(name, []).append(text)
    return out


def _fixture_class(module: str, name: str):
    return getattr(sys.modules[module], name)


# --- tiny mmdet detectors for the end-to-end tests ------------------------------------------------

def _retinanet(channels: int) -> dict:
    """A RetinaNet with a ResNet-18 backbone, an FPN of ``channels`` channels (3 levels, strides
    8/16/32) and a 1-conv head, for 3 classes; no pretrained weights."""
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch',
                      init_cfg=None),
        neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=channels, start_level=0,
                  num_outs=3),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=channels, stacked_convs=1, feat_channels=channels,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=10))


S_CH, T_CH = 32, 64  # student / teacher FPN channels


def _build_distillation_model(distiller: dict):
    """What a config does: ``model = dict(type='kdtoolbox.DistillationModel', ...)`` under the
    default scope ``mmdet``, built through mmengine's root MODELS registry."""
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(type='kdtoolbox.DistillationModel', student=_retinanet(S_CH),
                                 teacher=_retinanet(T_CH), distiller=distiller))


def _batch(model):
    """One 128x128 image with two boxes, through the student's DetDataPreprocessor."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=gen)
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 20.0, 60.0, 90.0], [64.0, 32.0, 120.0, 100.0]]),
                                       labels=torch.tensor([0, 2]))
    data = model.data_preprocessor({'inputs': [img], 'data_samples': [sample]}, training=True)
    inputs, samples = data['inputs'], data['data_samples']
    assert inputs.shape == (1, 3, 128, 128)
    assert {'img_shape', 'pad_shape', 'batch_input_shape'} <= set(samples[0].metainfo)
    return inputs, samples


def _loss_with_neck_outputs(model, inputs, samples):
    """``model(..., mode='loss')`` while capturing, with hooks of our own, what the student's and the
    teacher's necks returned (prepended, so they run before kdtoolbox's teacher-truncation hook)."""
    seen = {}
    handles = [
        model.student.neck.register_forward_hook(lambda m, i, o: seen.setdefault('student', o), prepend=True),
        model.teacher.neck.register_forward_hook(lambda m, i, o: seen.setdefault('teacher', o), prepend=True),
        model.teacher.bbox_head.register_forward_hook(lambda m, i, o: seen.setdefault('teacher_head', True)),
    ]
    try:
        losses = model(inputs, samples, mode='loss')
    finally:
        for h in handles:
            h.remove()
    return losses, seen


# --- the built-in plugin ---------------------------------------------------------------------------

def test_builtin_detection_plugin_registers_fitnet(monkeypatch):
    monkeypatch.delenv(kdplugins.DISABLE_ENV, raising=False)
    monkeypatch.delenv(kdplugins.STRICT_ENV, raising=False)
    reset_plugins()
    try:
        plugins, _ = _load_recording_warnings()
        info = plugins['detection']
        assert info.status == 'loaded', info.error
        assert info.module == 'kdtoolbox_plugins.detection.plugin'
        assert (info.package, info.version) == ('kdtoolbox', kdtoolbox.__version__)
        assert ('distiller', 'FitNet') in info.components
        fitnet = kdtoolbox.DISTILLERS.get('FitNet')
        assert fitnet is not None and fitnet.__module__ == 'kdtoolbox_plugins.detection.fitnet'
        assert load_plugins(strict=True)['detection'] is info  # idempotent, and nothing built in fails
    finally:
        reset_plugins()


# --- broken plugins are isolated ---------------------------------------------------------------

def test_each_broken_plugin_reported_once_and_left_out(all_plugins):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        plugins = load_plugins()
        load_plugins()  # cached: no second report
        assert kdtoolbox.DISTILLERS.get('FitNet') is not None  # registry lookups neither
        kdtoolbox.LOSSES.get('ExampleCosineLoss')
    reported = _plugin_warnings_by_name([w for w in caught if issubclass(w.category, PluginWarning)])
    assert set(reported) == set(BROKEN), reported
    for name, (package, version, causes) in BROKEN.items():
        assert len(reported[name]) == 1, reported[name]
        text = reported[name][0]
        assert f'{package} {version}' in text and 'left out' in text, text
        for cause in causes:
            assert cause in text, (cause, text)
        info = plugins[name]
        assert info.status == 'failed' and info.components == [] and info.details, info
        assert '\n' not in info.error, info.error  # one line (the traceback is in details)
    for name in NEVER_REGISTERED:
        assert kdtoolbox.DISTILLERS.get(name) is None, name

    # the good plugin and the built-in one are unaffected
    good = plugins[GOOD]
    assert (good.status, good.package, good.version) == ('loaded', 'kdtb-example-good', '0.3.1')
    assert good.components == [('distiller', 'ExampleL1Distiller'), ('loss', 'ExampleCosineLoss')]
    assert kdtoolbox.DISTILLERS.get('ExampleL1Distiller') is _fixture_class('kdtb_example_good',
                                                                            'ExampleL1Distiller')
    assert kdtoolbox.LOSSES.get('ExampleCosineLoss') is _fixture_class('kdtb_example_good', 'ExampleCosineLoss')
    assert plugins['detection'].status == 'loaded'
    # FitNet stays the built-in one although the duplicate's entry point sorts before 'detection'
    assert kdtoolbox.DISTILLERS.get('FitNet').__module__ == 'kdtoolbox_plugins.detection.fitnet'
    assert ('distiller', 'FitNet') in plugins['detection'].components


def test_reset_plugins_unregisters_and_rescans(all_plugins):
    _load_recording_warnings()
    assert 'ExampleL1Distiller' in kdtoolbox.DISTILLERS.module_dict
    reset_plugins()
    assert 'ExampleL1Distiller' not in kdtoolbox.DISTILLERS.module_dict
    assert 'FitNet' not in kdtoolbox.DISTILLERS.module_dict
    plugins, caught = _load_recording_warnings()  # a re-scan reports the failures again
    assert plugins[GOOD].status == 'loaded' and 'ExampleL1Distiller' in kdtoolbox.DISTILLERS.module_dict
    assert set(_plugin_warnings_by_name(caught)) == set(BROKEN)


def test_disable_env_skips_a_plugin(all_plugins, monkeypatch):
    monkeypatch.setenv(kdplugins.DISABLE_ENV, f'{GOOD}, kdtb_raises')
    reset_plugins()
    plugins, caught = _load_recording_warnings()
    for name in (GOOD, 'kdtb_raises'):
        assert plugins[name].status == 'disabled' and plugins[name].components == [], plugins[name]
    assert 'kdtb_example_good' not in sys.modules  # not even imported
    assert kdtoolbox.DISTILLERS.get('ExampleL1Distiller') is None
    assert kdtoolbox.LOSSES.get('ExampleCosineLoss') is None
    assert set(_plugin_warnings_by_name(caught)) == set(BROKEN) - {'kdtb_raises'}
    assert plugins['detection'].status == 'loaded'



def test_strict_mode_raises_naming_every_broken_plugin(all_plugins, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(PluginLoadError) as exc:
            load_plugins(strict=True)
    msg = str(exc.value)
    for name, (package, version, causes) in BROKEN.items():
        assert f'{name} ({package} {version}' in msg and causes[0] in msg, msg
    assert f'{GOOD} (' not in msg and 'detection (' not in msg
    assert not [w for w in caught if issubclass(w.category, PluginWarning)]  # raised, not warned
    assert kdtoolbox.DISTILLERS.get('ExampleL1Distiller') is not None  # the rest were loaded

    # the same through the environment, and through a registry lookup (what building a config does)
    reset_plugins()
    monkeypatch.setenv(kdplugins.STRICT_ENV, '1')
    with pytest.raises(PluginLoadError) as exc:
        load_plugins()
    assert all(name in str(exc.value) for name in BROKEN)
    with pytest.raises(PluginLoadError):
        kdtoolbox.DISTILLERS.build(dict(type='FitNet'), where='distiller')


def test_strict_mode_passes_with_only_good_plugins(good_plugin, monkeypatch):
    monkeypatch.setenv(kdplugins.STRICT_ENV, '1')
    plugins = load_plugins()
    assert plugins[GOOD].status == 'loaded' and plugins['detection'].status == 'loaded'


# --- configs naming components ---------------------------------------------------------------------

def test_unknown_name_lists_failed_plugins_and_close_names(all_plugins):
    _load_recording_warnings()
    with pytest.raises(KeyError) as exc:
        kdtoolbox.DISTILLERS.build(dict(type='BrokenDistiller'), where='distiller')
    msg = str(exc.value)
    assert "distiller.type='BrokenDistiller'" in msg and 'is registered' in msg, msg
    for name, (package, version, causes) in BROKEN.items():
        assert f'{name} ({package} {version}' in msg and causes[0] in msg, msg

    with pytest.raises(KeyError) as exc:
        kdtoolbox.DISTILLERS.build(dict(type='FitNett'), where='distiller')
    assert "Did you mean 'FitNet'" in str(exc.value), str(exc.value)
    with pytest.raises(KeyError) as exc:
        kdtoolbox.LOSSES.build(dict(type='ExampleCosinLoss'), where='distiller.losses.cos')
    assert "distiller.losses.cos.type='ExampleCosinLoss'" in str(exc.value)
    assert "'ExampleCosineLoss'" in str(exc.value), str(exc.value)


def test_unknown_distiller_in_a_full_config(all_plugins):
    _load_recording_warnings()
    with pytest.raises(KeyError) as exc:
        _build_distillation_model(dict(type='RaisesDistiller'))
    msg = str(exc.value)
    assert "distiller.type='RaisesDistiller'" in msg and 'kdtb_raises (kdtb-raises 0.0.4' in msg, msg


def test_plugin_distiller_by_name_trains_a_retinanet_pair(good_plugin):
    model = _build_distillation_model(dict(type='ExampleL1Distiller', student_channels=S_CH,
                                           teacher_channels=T_CH, loss_weight=2.0))
    assert type(model.distiller) is _fixture_class('kdtb_example_good', 'ExampleL1Distiller')
    model.train()
    inputs, samples = _batch(model)
    losses, seen = _loss_with_neck_outputs(model, inputs, samples)

    assert {'loss_cls', 'loss_bbox', 'distill.p0.loss_l1'} <= set(losses), sorted(losses)
    assert 'teacher_head' not in seen  # the teacher stopped after its neck
    s0, t0 = seen['student'][0], seen['teacher'][0]
    assert s0.shape == (1, S_CH, 16, 16) and t0.shape == (1, T_CH, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(t0, model.teacher.extract_feat(inputs)[0])  # teacher: eval, deterministic
    conv = model.distiller.conv
    expected = 2.0 * (F.conv2d(s0, conv.weight, conv.bias) - t0).abs().mean()
    torch.testing.assert_close(losses['distill.p0.loss_l1'], expected)
    assert losses['distill.p0.loss_l1'].item() > 0

    total, log_vars = model.parse_losses(losses)
    assert 'distill.p0.loss_l1' in log_vars
    model.zero_grad()
    total.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0  # the plugin's conv learns
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    keys = model.state_dict().keys()
    assert 'distiller.conv.weight' in keys and not any(k.startswith('teacher.') for k in keys)


def test_plugin_loss_in_configurable_distiller(good_plugin):
    model = _build_distillation_model(dict(
        type='ConfigurableDistiller',
        student_recorders=dict(fpn='neck'), teacher_recorders=dict(fpn='neck'),
        adapters=dict(p0=dict(type='ConvAdapter', in_channels=S_CH, out_channels=T_CH)),
        losses=dict(cos=dict(type='ExampleCosineLoss', loss_weight=0.5,
                             inputs=dict(student=dict(record='student.fpn', index=0, adapter='p0'),
                                         teacher=dict(record='teacher.fpn', index=0))))))
    assert type(model.distiller.losses['cos']) is _fixture_class('kdtb_example_good', 'ExampleCosineLoss')
    model.train()
    inputs, samples = _batch(model)
    losses, seen = _loss_with_neck_outputs(model, inputs, samples)
    assert {'loss_cls', 'loss_bbox', 'distill.cos.loss'} <= set(losses), sorted(losses)
    adapted = model.distiller.adapters['p0'](seen['student'][0])
    expected = 0.5 * (1 - F.cosine_similarity(adapted.flatten(1), seen['teacher'][0].flatten(1), dim=1)).mean()
    torch.testing.assert_close(losses['distill.cos.loss'], expected)
    losses['distill.cos.loss'].backward()
    assert model.distiller.adapters['p0'].conv.weight.grad.abs().sum() > 0


def test_missing_teacher_module_fails_at_build(good_plugin):
    with pytest.raises(Exception) as exc:  # teacher_recorders={'feats': 'neck.nope'}
        _build_distillation_model(dict(type='ExampleL1Distiller', student_channels=S_CH,
                                       teacher_channels=T_CH, teacher_module='neck.nope'))
    msg = str(exc.value)
    assert "'neck.nope'" in msg and 'teacher' in msg, f'{type(exc.value).__name__}: {msg}'


# --- subprocesses (started by the `installed` fixture) ------------------------------------------

def test_cli_plugins_list_shows_builtin_and_pip_installed_plugins(installed):
    proc = _cli(installed, 'list_all')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = _parse_table(proc.stdout)
    det = table['detection']
    assert (det['status'], det['package'], det['rest'][0]) == ('loaded', 'kdtoolbox', kdtoolbox.__version__)
    assert ('distiller', 'FitNet') in det['components']
    good = table[GOOD]
    assert (good['status'], good['package'], good['rest'][0]) == ('loaded', 'kdtb-example-good', '0.3.1')
    assert good['rest'][1] == 'kdtb_example_good.plugin'
    assert good['components'] == [('distiller', 'ExampleL1Distiller'), ('loss', 'ExampleCosineLoss')]
    for name, (package, version, causes) in BROKEN.items():
        row = table[name]
        assert (row['status'], row['package'], row['rest'][0]) == ('failed', package, version), row
        assert row['components'] == [], row  # nothing of a failed plugin is registered
        assert causes[0] in row['error'], row
        assert proc.stderr.count(f'kdtoolbox plugin {name} (') == 1, proc.stderr  # warned once
    assert set(table) >= {'detection', GOOD, *BROKEN}


def test_cli_doctor_reports_every_failure_with_its_cause(installed):
    proc = _cli(installed, 'doctor_all')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert f'{len(BROKEN)} failed' in out.splitlines()[0], out
    for name, (package, version, causes) in BROKEN.items():
        assert f'{name} ({package} {version}, module ' in out, out
        for cause in causes:
            assert cause in out, (cause, out)
    assert 'Traceback' in out  # details for each failure
    assert f'{GOOD} (' not in out


def test_cli_doctor_exits_0_with_only_good_plugins(installed):
    proc = _cli(installed, 'doctor_good')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ', 0 failed, 0 disabled' in proc.stdout.splitlines()[0], proc.stdout



# --- the README's example plugin (examples/kdtoolbox-example-plugin) ---------------------------------

@pytest.fixture(scope='module')
def example_plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp('example_plugin')
    _pip_install(root / 'site', [EXAMPLE], root / 'src')
    assert (root / 'site' / 'kdtoolbox_example_plugin' / 'plugin.py').exists()
    assert (root / 'site' / 'kdtoolbox_example_plugin-0.1.0.dist-info').is_dir()
    return root / 'site'


def test_the_readme_shows_the_example_plugin_file_for_file():
    readme = (REPO / 'README.md').read_text()
    for name in ('pyproject.toml', 'kdtoolbox_example_plugin/distiller.py', 'kdtoolbox_example_plugin/plugin.py'):
        text = (EXAMPLE / name).read_text().strip()
        assert text in readme, f'README.md does not show examples/kdtoolbox-example-plugin/{name} as it is'


@pytest.fixture
def example_visible(example_plugin, monkeypatch):
    yield from _visible(example_plugin, monkeypatch)
    for name in [m for m in sys.modules if m.split('.')[0] == 'kdtoolbox_example_plugin']:
        del sys.modules[name]


def test_the_example_plugin_installed_by_pip_registers_its_distiller(example_visible):
    info = load_plugins()['example']
    assert (info.status, info.package, info.version) == ('loaded', 'kdtoolbox-example-plugin', '0.1.0'), info
    assert info.components == [('distiller', 'NeckL1')]
    model = _build_distillation_model(dict(type='NeckL1', student_channels=S_CH, teacher_channels=T_CH))
    model.train()
    inputs, samples = _batch(model)
    losses, seen = _loss_with_neck_outputs(model, inputs, samples)
    conv = model.distiller.adapter
    expected = (F.conv2d(seen['student'][0], conv.weight, conv.bias) - seen['teacher'][0]).abs().mean()
    torch.testing.assert_close(losses['distill.p0.loss_l1'], expected)
    assert losses['distill.p0.loss_l1'].item() > 0


@pytest.mark.slow
def test_the_example_plugin_trains_by_name_through_tools_train(example_plugin, tmp_path):
    from test_train_e2e import data_options
    env = {k: v for k, v in os.environ.items() if not k.startswith('KDTOOLBOX_')}
    env['PYTHONPATH'] = str(example_plugin)
    work = tmp_path / 'work'
    proc = subprocess.run([sys.executable, 'tools/train.py', 'tests/fixtures/configs/example_plugin_shapes.py',
                           '--work-dir', str(work), '--cfg-options', 'model.teacher_checkpoint=None',
                           'train_cfg.max_epochs=1', *data_options(tmp_path / 'shapes')],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\].*distill\.p0\.loss_l1: [0-9.]+', out), out[-4000:]
    saved = torch.load(work / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2 and 'distiller.adapter.weight' in saved['state_dict']
