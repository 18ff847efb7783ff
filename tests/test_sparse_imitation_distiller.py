"""SparseVoxelImitation: the per-stage loss against a hand computation on hand-made sparse tensors (rows
shuffled, sites present in one tensor only, a coarser student grid, empty voxel sets), and on a real
mmdet3d CenterPoint pair (SparseEncoder stages recorded by hooks, gradients reach the student)."""
import copy
import os.path as osp

import pytest
import torch

from conftest import ROOT
from kdtoolbox.ops.sparse_imitation import SparseFeatures


@pytest.fixture(autouse=True)
def _mmdet3d_scope():
    from mmdet3d.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


def distiller(stages=(0, ), s_ch=2, t_ch=2, **kwargs):
    from kdtoolbox_plugins.bev.sparse_imitation import SparseVoxelImitation
    d = SparseVoxelImitation(student_channels=[s_ch] * len(stages), teacher_channels=[t_ch] * len(stages),
                             stages=stages, **kwargs)
    for adapter in d.adapters:  # identity adapters: the loss is then the plain feature MSE
        with torch.no_grad():
            adapter.linear.weight.copy_(torch.eye(t_ch, s_ch))
            adapter.linear.bias.zero_()
    return d


def records(d, owner, tensors):
    from kdtoolbox.engine.recorder import Records, RecordSpec
    specs = {k: RecordSpec.parse(v, k) for k, v in d.student_recorders.items()}
    return Records(owner, {f'stage{i}': [t] for i, t in tensors.items()}, specs)


def sf(features, indices, shape=(2, 4, 4), batch=1):
    return SparseFeatures(torch.tensor(features, dtype=torch.float32), torch.tensor(indices, dtype=torch.int32),
                          shape, batch)


def test_equal_grids_match_by_site_not_by_row():
    d = distiller()
    assert d.student_recorders == {'stage0': 'pts_middle_encoder.encoder_layers.encoder_layer1'}
    student = sf([[1., 2.], [3., 4.], [5., 6.]], [[0, 0, 0, 0], [0, 1, 2, 3], [0, 0, 1, 1]])
    student.features.requires_grad_(True)
    # the teacher holds sites (0,1,2,3) and (0,0,0,0) in the other order, and one the student lacks
    teacher = sf([[0., 0.], [1., 1.], [9., 9.]], [[0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 3, 3]])
    out = d(records(d, 'student', {0: student}), records(d, 'teacher', {0: teacher}), None)
    # matched: (1,2) vs (1,1) -> 0 + 1; (3,4) vs (0,0) -> 9 + 16; mean over 2 sites x 2 channels
    assert out['sparse_imitation.loss_stage0'].item() == pytest.approx(26 / 4)
    out['sparse_imitation.loss_stage0'].backward()
    assert student.features.grad[2].abs().sum() == 0 and student.features.grad[1].abs().sum() > 0


def test_coarser_student_gets_the_teacher_mean_and_weights_apply():
    d = distiller(loss_weight=2.0)
    student = sf([[1., 1.]], [[0, 0, 0, 0]], shape=(1, 2, 2))
    # four teacher sites inside student cell (0, 0, 0) of a grid twice as fine: mean (2, 4)
    teacher = sf([[0., 0.], [4., 8.], [2., 4.], [2., 4.]], [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]],
                 shape=(2, 4, 4))
    out = d(records(d, 'student', {0: student}), records(d, 'teacher', {0: teacher}), None)
    assert out['sparse_imitation.loss_stage0'].item() == pytest.approx(2.0 * ((1 - 2) ** 2 + (1 - 4) ** 2) / 2)


def test_empty_voxel_sets_give_a_differentiable_zero():
    d = distiller()
    student = SparseFeatures(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 4, dtype=torch.int32), (2, 4, 4), 1)
    teacher = sf([[1., 1.]], [[0, 0, 0, 0]])
    out = d(records(d, 'student', {0: student}), records(d, 'teacher', {0: teacher}), None)
    assert out['sparse_imitation.loss_stage0'].item() == 0.0
    out['sparse_imitation.loss_stage0'].backward()
    assert d.adapters[0].linear.weight.grad is not None


def test_bad_configuration_is_named():
    from kdtoolbox_plugins.bev.sparse_imitation import SparseVoxelImitation
    with pytest.raises(ValueError, match='2 stages but 1 student channel counts'):
        SparseVoxelImitation(student_channels=[2], teacher_channels=[2, 2], stages=(0, 1))
    d = distiller(t_ch=2)
    student = sf([[1., 2.]], [[0, 0, 0, 0]])
    teacher = sf([[1., 2., 3.]], [[0, 0, 0, 0]])
    with pytest.raises(ValueError, match='teacher_channels'):
        d(records(d, 'student', {0: student}), records(d, 'teacher', {0: teacher}), None)


def test_real_centerpoint_pair_records_sparse_stages(tmp_path):
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from kdtoolbox.datasets.lidar_scenes import LidarScenesDataset
    from kdtoolbox.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bev/demo/sparse_imitation_voxel_half_scenes.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['teacher_checkpoint'] = None
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.pop('type')
    ds_cfg.update(data_root=str(tmp_path / 'scenes'), num_train=2, num_val=1)
    batch = pseudo_collate([LidarScenesDataset(**ds_cfg)[i] for i in range(2)])
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    for i in range(4):
        value = losses[f'distill.sparse_imitation.loss_stage{i}']
        assert torch.isfinite(value) and value.item() > 0
    sum(losses[f'distill.sparse_imitation.loss_stage{i}'] for i in range(4)).backward()
    grad = model.student.pts_middle_encoder.conv_input[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
