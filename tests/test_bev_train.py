"""The LiDAR demo configs (configs/bev/demo/) train two iterations through tools/train.py on the generated
scenes and validate with the AP metric; the baseline students and the paper configs (configs/bev/)
build."""
import copy
import os.path as osp
import re

import pytest
from mmengine.config import Config

from conftest import ROOT

DEMO = osp.join(ROOT, 'configs', 'bev', 'demo')
# config -> the distillation losses its log must show (empty: a model trained alone)
TRAINED = {
    'centerpoint_voxel_scenes_teacher.py': [],
    'sparsekd_voxel_half_scenes.py': ['distill.sparsekd.loss_hm', 'distill.sparsekd.loss_reg'],
    'sparsekd_pillar064_scenes.py': ['distill.sparsekd.loss_hm'],
    'sparse_imitation_voxel_half_scenes.py': [f'distill.sparse_imitation.loss_stage{i}' for i in range(4)],
}
BUILT_ONLY = ['centerpoint_voxel_half_scenes.py', 'centerpoint_pillar064_scenes.py']
PAPER = ['sparsekd_cp_voxel_s_nus.py', 'sparsekd_cp_voxel_xs_nus.py', 'sparsekd_cp_voxel_xxs_nus.py',
         'sparsekd_cp_pillar04_nus.py', 'sparsekd_cp_pillar064_nus.py']


def _overrides(data_root: str, cfg: Config) -> list:
    """Every loader on ``data_root`` (4 + 4 scenes), batches of 2 (two iterations), validation after."""
    opts = ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.logger.interval=1', 'val_dataloader.batch_size=2', 'test_dataloader.batch_size=2']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}/', f'{loader}.dataset.num_train=4',
                 f'{loader}.dataset.num_val=4']
    if 'teacher_checkpoint' in cfg.model:
        opts.append('model.teacher_checkpoint=None')  # the teacher's own training is another config
    return opts


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    from kdtoolbox.datasets.lidar_scenes import make_lidar_scenes
    cfg = Config.fromfile(osp.join(DEMO, 'centerpoint_voxel_scenes_teacher.py'))
    args = dict(cfg.scene_args, num_train=4, num_val=4)
    return make_lidar_scenes(str(tmp_path_factory.mktemp('bev') / 'scenes'), **args)['root']


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(TRAINED))
def test_demo_config_trains_two_iterations(name, scenes, tmp_path):
    from test_train_e2e import run
    path = osp.join(DEMO, name)
    cfg = Config.fromfile(path)
    out = run(['tools/train.py', path, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               *_overrides(scenes, cfg)])
    second = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out)
    assert second, out[-3000:]
    assert re.search(r' task0.loss_heatmap: [0-9.]+', second.group(0)), second.group(0)
    for key in TRAINED[name]:
        value = re.search(re.escape(key) + r': (-?[0-9.]+|nan|inf)', second.group(0))
        assert value and value.group(1) not in ('nan', 'inf'), (key, second.group(0))
    val = re.search(r'Epoch\(val\) \[1\]\[\d+/\d+\]\s+\w+_AP_0.25.*', out)
    assert val and re.search(r'mAP_0.50: [0-9.]+', val.group(0)), out[-3000:]
    if 'tgi=True' in open(path).read().replace(' ', ''):
        assert 'TGI (first)' in out


@pytest.mark.parametrize('name', BUILT_ONLY)
def test_baseline_students_build(name):
    from kdtoolbox.engine.builder import build_model
    from mmdet3d.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    model = build_model(osp.join(DEMO, name), 'student')
    assert type(model).__name__ == 'CenterPoint'


@pytest.mark.parametrize('name', PAPER)
def test_paper_configs_build(name):
    """The nuScenes pairs build (random teacher, no data): every component name is registered."""
    from mmdet3d.utils import register_all_modules
    from kdtoolbox.registry import MODELS
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'bev', name))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['teacher_checkpoint'] = None
    model = MODELS.build(model_cfg)
    assert type(model.distiller).__name__ == 'SparseKD'
    assert cfg.default_scope == 'mmdet3d'


def test_teacher_checkpoint_of_a_sparse_conv_model_loads_unchanged(tmp_path):
    """A CenterPoint voxel teacher saved by mmengine (as a training run saves it) loads into the
    distillation teacher with every tensor unchanged. mmdet3d's spconv 2 layers permute kernels
    whose state-dict version is absent (the spconv 1 layout); a state dict rebuilt without the
    checkpoint's ``_metadata`` had its 5-D kernels permuted into the wrong shape."""
    import torch
    from mmengine.runner.checkpoint import save_checkpoint

    from kdtoolbox.engine.builder import build_model
    from kdtoolbox.engine.teacher import build_teacher

    config = osp.join(DEMO, 'centerpoint_voxel_scenes_teacher.py')  # (a file: its default scope)
    torch.manual_seed(0)
    model = build_model(config, 'teacher')
    path = str(tmp_path / 'teacher.pth')
    save_checkpoint(model.state_dict(), path)  # the runner's save goes through the same function
    kernels = [k for k, v in model.state_dict().items() if v.dim() == 5]
    assert kernels  # the sparse encoder's 3-D kernels are in it
    torch.manual_seed(1)  # another random init: loading must overwrite every tensor
    teacher = build_teacher(config, path)
    loaded, saved = teacher.state_dict(), model.state_dict()
    assert loaded.keys() == saved.keys()
    for key in saved:
        assert torch.equal(loaded[key], saved[key]), key
