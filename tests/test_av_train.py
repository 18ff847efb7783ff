"""The av configs: every demo config trains two iterations through tools/train.py on the generated
data and validates (window-averaged top-1 + training-gallery retrieval through GalleryFeatureHook);
every paper config parses and builds its model, and names only registered components."""
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT

DEMO = osp.join(ROOT, 'configs', 'av', 'demo')
PAPER_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'av', '*.py')))
# config -> the distillation losses its log must show (empty: a model trained alone)
DEMO_CONFIGS = {
    'unimodal_r2plus1d_avdemo.py': [],
    'mnfcsc_r2plus1d_avdemo.py': ['distill.mnf.loss_cls', 'distill.mnf.loss_triplet', 'distill.mnf.loss_sparsity',
                                  'distill.csc.loss_contrastive'],
    'kd_r2plus1d_avdemo.py': ['distill.kd.loss_kd'],
    'crd_r2plus1d_avdemo.py': ['distill.crd.loss_crd'],
    'rkd_r2plus1d_avdemo.py': ['distill.rkd.loss_distance', 'distill.rkd.loss_angle'],
    'xkd_r2plus1d_avdemo.py': ['distill.xkd.loss_cmkd', 'distill.xkd.loss_align'],
    'probe_embedding_avdemo.py': [],
    'frameresnet_teacher_avdemo.py': [],
    'unimodal_logmel_avdemo.py': [],
    'mnfcsc_logmel_v2a_avdemo.py': ['distill.mnf.loss_triplet', 'distill.csc.loss_contrastive'],
}


def test_every_demo_config_is_tested():
    assert sorted(DEMO_CONFIGS) == sorted(osp.basename(p) for p in glob.glob(osp.join(DEMO, '*.py')))


def _overrides(data_root: str, cfg: Config) -> list:
    """Point every loader at ``data_root``; 4 training videos in batches of 2 (two iterations), 4
    validation and gallery videos (2 windows each); validate after the epoch."""
    opts = ['train_dataloader.batch_size=2', 'train_dataloader.dataset.indices=4', 'train_cfg.max_epochs=1',
            'train_cfg.val_interval=1', 'default_hooks.logger.interval=1', 'val_dataloader.dataset.indices=8',
            'test_dataloader.dataset.indices=8']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts.append(f'{loader}.dataset.data_root={data_root}/')
    for i, hook in enumerate(cfg.get('custom_hooks', [])):
        if hook['type'] == 'GalleryFeatureHook':
            opts += [f'custom_hooks.{i}.dataloader.dataset.data_root={data_root}/',
                     f'custom_hooks.{i}.dataloader.dataset.indices=8']
    if 'teacher_checkpoint' in cfg.model:
        opts.append('model.teacher_checkpoint=None')  # the teacher's own training is another config
    return opts


@pytest.fixture(scope='module')
def av_data(tmp_path_factory):
    """The demo data, generated once for all runs (the configs would generate it themselves)."""
    from kdtoolbox_plugins.av.generate import make_av_dataset
    cfg = Config.fromfile(osp.join(DEMO, 'unimodal_r2plus1d_avdemo.py'))
    return make_av_dataset(str(tmp_path_factory.mktemp('avdemo') / 'data'), **cfg.av_generate)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(DEMO_CONFIGS))
def test_demo_config_trains_two_iterations(name, av_data, tmp_path):
    from test_train_e2e import run
    path = osp.join(DEMO, name)
    cfg = Config.fromfile(path)
    work = tmp_path / 'work'
    out = run(['tools/train.py', path, '--work-dir', str(work), '--cfg-options', *_overrides(av_data, cfg)])
    second = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out)
    assert second, out[-3000:]
    assert re.search(r' loss_cls: [0-9.]+', second.group(0)) or re.search(r' loss: [0-9.]+', second.group(0))
    for key in DEMO_CONFIGS[name]:
        value = re.search(re.escape(key) + r': (-?[0-9.]+|nan|inf)', second.group(0))
        assert value and value.group(1) not in ('nan', 'inf'), (key, second.group(0))
    val = re.search(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+av/top1.*', out)
    assert val, out[-3000:]
    assert 'av/num_videos: 4' in val.group(0)
    if any(h['type'] == 'GalleryFeatureHook' for h in cfg.get('custom_hooks', [])):
        for key in ('retrieval/R@1', 'retrieval/R@5', 'retrieval/mAP@500'):
            assert re.search(re.escape(key) + r': [0-9.]+', val.group(0)), val.group(0)
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=False)
    assert ckpt['meta']['iter'] == 2
    if DEMO_CONFIGS[name]:
        assert not any(k.startswith('teacher.') for k in ckpt['state_dict'])
        assert any(k.startswith('student.') for k in ckpt['state_dict'])
    if name.startswith('mnfcsc'):
        assert any(k.startswith('distiller.mnf.') for k in ckpt['state_dict'])


def _types(obj):
    if isinstance(obj, dict):
        if isinstance(obj.get('type'), str):
            yield obj['type']
        for v in obj.values():
            yield from _types(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _types(v)


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=lambda p: osp.basename(p))
def test_paper_config_parses_and_builds(path):
    import kdtoolbox
    from kdtoolbox.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    from mmengine.registry import DefaultScope
    kdtoolbox.load_plugins()
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'kdtoolbox'
    pipelines = [cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline]
    for t in _types(pipelines):
        assert TRANSFORMS.get(t) is not None, t
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        assert DATASETS.get(loader.dataset.type) is not None
    for m in _types(cfg.test_evaluator):
        assert METRICS.get(m) is not None, m
    for h in cfg.get('custom_hooks', []):
        assert HOOKS.get(h['type']) is not None
    model_cfg = cfg.model.copy()
    model_cfg.pop('teacher_checkpoint', None)
    with DefaultScope.overwrite_default_scope('kdtoolbox'):
        model = MODELS.build(model_cfg)
    student = getattr(model, 'student', model)
    expected = {'ucf51': 51, 'activitynet': 200, 'kinetics_sound': 31}
    dataset = next(k for k in expected if k in osp.basename(path))
    head = getattr(student, 'head', None)
    assert head is not None and head.out_features == expected[dataset] == cfg.num_classes
    assert type(model.data_preprocessor).__name__ == 'AVDataPreprocessor'
