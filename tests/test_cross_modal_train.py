"""The cross-modal BEV configs: the distillers refuse teacher/student grids that differ (the error names
both grids) unless told to resample, and every demo config in configs/bev/demo that this plugin owns
trains two iterations through tools/train.py on the generated multi-modal scenes and validates."""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

from conftest import ROOT

DEMO = osp.join(ROOT, 'configs', 'bev', 'demo')
# config -> the distillation losses its log must show (empty: a model trained alone)
DEMO_CONFIGS = {
    'multimodal_centerpoint_pillar_teacher.py': [],
    'camera_bevdet_r18_multimodal.py': [],
    'bevdistill_camera_multimodal.py': ['distill.bevdistill.loss_bev', 'distill.bevdistill.loss_instance',
                                       'distill.bevdistill.loss_box'],
    'unidistill_camera_multimodal.py': ['distill.unidistill.loss_feat', 'distill.unidistill.loss_relation',
                                        'distill.unidistill.loss_cls', 'distill.unidistill.loss_reg'],
    'unidistill_lidar_multimodal.py': ['distill.unidistill.loss_feat', 'distill.unidistill.loss_relation',
                                       'distill.unidistill.loss_cls', 'distill.unidistill.loss_reg'],
    'distillbev_camera_multimodal.py': ['distill.stage1.loss_fg', 'distill.stage1.loss_bg',
                                        'distill.stage2.loss_fg', 'distill.neck.loss_fg', 'distill.neck.loss_bg',
                                        'distill.neck.loss_fp', 'distill.neck.loss_spatial'],
}
OWNED = ('multimodal', 'camera_')  # the lidar plugin's demos live in the same folder


def test_every_owned_demo_config_is_tested():
    owned = [osp.basename(p) for p in glob.glob(osp.join(DEMO, '*.py')) if any(o in osp.basename(p) for o in OWNED)]
    assert sorted(DEMO_CONFIGS) == sorted(owned)


def _distill_model(distiller, teacher_pillar=0.4):
    from mmengine.registry import init_default_scope
    from kdtoolbox.registry import MODELS
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(DEMO, 'bevdistill_camera_multimodal.py'))
    model = cfg.model.to_dict()
    model.update(teacher_checkpoint=None, distiller=distiller)
    if teacher_pillar != 0.4:  # a coarser teacher: its whole grid changes (32 x 32 at 0.8 m)
        size = [teacher_pillar, teacher_pillar, 4.0]
        n = int(round(25.6 / teacher_pillar))
        t = model['teacher']
        t['data_preprocessor']['voxel_layer']['voxel_size'] = size
        t['pts_voxel_encoder']['voxel_size'] = size
        t['pts_middle_encoder']['output_shape'] = (n, n)
        t['train_cfg']['pts'].update(voxel_size=size, grid_size=[n, n, 1])
        t['test_cfg']['pts']['voxel_size'] = size[:2]
        t['pts_bbox_head']['bbox_coder']['voxel_size'] = size[:2]
    return MODELS.build(model)


@pytest.mark.parametrize('distiller', [
    dict(type='BEVDistill', student_channels=96, teacher_channels=128),
    dict(type='UniDistill'),
    dict(type='DistillBEV', taps=dict(neck=dict(student='bev_neck', teacher='pts_neck', student_channels=96,
                                                teacher_channels=128, adapter='1x1conv')))])
def test_different_grids_are_an_error_naming_both(distiller):
    with pytest.raises(ValueError) as err:
        _distill_model(distiller, teacher_pillar=0.8)
    msg = str(err.value)
    assert 'BEV grids differ' in msg and 'student' in msg and 'teacher' in msg
    assert 'H=64, W=64, cell=(0.4, 0.4)' in msg and 'H=32, W=32, cell=(0.8, 0.8)' in msg


def test_explicit_resample_allows_another_resolution_of_the_same_area():
    model = _distill_model(dict(type='UniDistill', resample=True), teacher_pillar=0.8)
    assert model.distiller.teacher_grid.shape == (32, 32) and model.distiller.student_grid.shape == (64, 64)


@pytest.fixture(scope='module')
def mm_data(tmp_path_factory):
    from kdtoolbox.datasets.multimodal_scenes import make_multimodal_scenes
    cfg = Config.fromfile(osp.join(DEMO, 'camera_bevdet_r18_multimodal.py'))
    args = {k: v for k, v in cfg.scene_args.items()}
    return make_multimodal_scenes(str(tmp_path_factory.mktemp('mm') / 'data'), **args)['root']


def _overrides(data_root: str, cfg: Config) -> list:
    """4 training scenes in batches of 2 (two iterations), 2 validation scenes, validate after the epoch."""
    opts = ['train_dataloader.dataset.indices=4', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            'default_hooks.logger.interval=1', 'val_dataloader.dataset.indices=2',
            f'train_dataloader.dataset.data_root={data_root}/', f'val_dataloader.dataset.data_root={data_root}/']
    if 'teacher_checkpoint' in cfg.model:
        opts.append('model.teacher_checkpoint=None')  # the teacher's own training is another config
    return opts


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(DEMO_CONFIGS))
def test_demo_config_trains_two_iterations(name, mm_data, tmp_path):
    from test_train_e2e import run
    path = osp.join(DEMO, name)
    cfg = Config.fromfile(path)
    out = run(['tools/train.py', path, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               *_overrides(mm_data, cfg)])
    second = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out)
    assert second, out[-3000:]
    assert re.search(r' task0\.loss_heatmap: [0-9.]+', second.group(0))
    for key in DEMO_CONFIGS[name]:
        value = re.search(re.escape(key) + r': (-?[0-9.]+|nan|inf)', second.group(0))
        assert value and value.group(1) not in ('nan', 'inf'), (key, second.group(0))
    assert re.search(r'Epoch\(val\) \[1\]\[1/1\]\s+\S+AP_0\.25', out), out[-3000:]


PAPER_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', 'bev', '*_nus.py'))
                       if osp.basename(p).startswith(('bevdistill_', 'unidistill_', 'distillbev_')))


def test_paper_configs_build_on_the_teachers_grids():
    """Each nuScenes paper config builds its student, its mmdet3d CenterPoint teacher and its distiller,
    whose grid check passes (the student is lifted onto the teacher's grid)."""
    from mmengine.registry import init_default_scope
    from kdtoolbox.registry import MODELS
    init_default_scope('mmdet3d')
    expected = {'bevdistill': ((128, 128), 0.8), 'unidistill': ((180, 180), 0.6), 'distillbev': ((128, 128), 0.8)}
    assert len(PAPER_CONFIGS) == 3
    for path in PAPER_CONFIGS:
        cfg = Config.fromfile(path)
        model_cfg = cfg.model.to_dict()
        model_cfg['teacher_checkpoint'] = None
        model = MODELS.build(model_cfg)
        shape, cell = expected[osp.basename(path).split('_')[0]]
        grid = model.distiller.student_grid
        assert grid.shape == shape and grid.cell_size[0] == pytest.approx(cell)
        assert model.student.view_transform.grid.same_as(model.distiller.student_grid)
