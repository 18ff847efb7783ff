"""The camera BEV student: the LSS view transformer's geometry (a point projected into a camera and
lifted back lands in the expected BEV cell, with and without BEV augmentation), its splatting, and the
CameraBEVDet detector (loss, predict, tensor modes) built from the demo config."""
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import ROOT
from kdtoolbox.datasets.multimodal_scenes import camera_matrices
from kdtoolbox.ops.bev import BEVGrid
from kdtoolbox_plugins.bev.camera_lss import LSSViewTransformer

GRID = BEVGrid.from_voxel((0., -12.8, -3., 25.6, 12.8, 1.), (0.4, 0.4, 4.))
IMG_HW = (96, 192)
FEAT_HW = (12, 24)  # stride 8
CAMS = {'left': 35.0, 'right': -35.0}


def _metas(lidar_aug=None):
    calib = [camera_matrices(yaw, IMG_HW) for yaw in CAMS.values()]
    meta = {'cam2img': [c[0] for c in calib], 'lidar2cam': [c[1] for c in calib]}
    if lidar_aug is not None:
        meta['lidar_aug_matrix'] = lidar_aug
    return [meta]


def _point_at(view: int, i: int, j: int, depth: float) -> np.ndarray:
    """The LiDAR point seen at the centre of feature pixel (i, j) at ``depth``, written out with the
    pinhole formula (camera at the origin, axes right / down / forward)."""
    f = (IMG_HW[1] / 2) / math.tan(math.radians(45))
    u, v = (j + 0.5) * IMG_HW[1] / FEAT_HW[1], (i + 0.5) * IMG_HW[0] / FEAT_HW[0]
    x_c, y_c = depth * (u - IMG_HW[1] / 2) / f, depth * (v - IMG_HW[0] / 2) / f
    yaw = math.radians(list(CAMS.values())[view])
    forward, right = np.array([math.cos(yaw), math.sin(yaw), 0.]), np.array([math.sin(yaw), -math.cos(yaw), 0.])
    return depth * forward + x_c * right + y_c * np.array([0., 0., -1.])


def _aug(angle=0.3, scale=1.05, flip=True):
    c, s = math.cos(angle), math.sin(angle)
    m = np.diag([scale, scale, scale, 1.])
    m[:2, :2] = scale * np.array([[c, -s], [s, c]])
    if flip:
        m = np.diag([1., -1., 1., 1.]) @ m
    return m.astype(np.float32)


def _cell(p, grid=GRID):
    return int(math.floor((p[1] - grid.point_cloud_range[1]) / grid.cell_size[1])), \
        int(math.floor((p[0] - grid.point_cloud_range[0]) / grid.cell_size[0]))


@pytest.mark.parametrize('aug', [None, 'rot_scale_flip'])
def test_projection_round_trip_lands_in_the_expected_cell(aug):
    vt = LSSViewTransformer(8, 4, GRID, depth_bins=(1.0, 36.0, 1.0))
    lidar_aug = _aug() if aug else None
    geom = vt.geometry(_metas(lidar_aug), 2, FEAT_HW, IMG_HW, 'cpu')
    assert geom.shape == (1, 2, 35, 12, 24, 3)
    m = lidar_aug if lidar_aug is not None else np.eye(4)
    for view, k, i, j in [(0, 9, 7, 5), (1, 14, 8, 20), (0, 3, 11, 12), (1, 20, 6, 1)]:
        depth = 1.0 + k + 0.5
        p = _point_at(view, i, j, depth)
        # the forward projection (lidar2img) puts p at the pixel centre and depth we lifted from
        cam2img, lidar2cam = camera_matrices(list(CAMS.values())[view], IMG_HW)
        uvd = cam2img @ (lidar2cam @ np.r_[p, 1.])[:3]
        assert np.allclose(uvd[:2] / uvd[2], [(j + 0.5) * 8, (i + 0.5) * 8], atol=1e-4)
        assert uvd[2] == pytest.approx(depth)
        expected = (m @ np.r_[p, 1.])[:3]
        assert np.allclose(geom[0, view, k, i, j].numpy(), expected, atol=1e-3)
        # splatting a one-hot frustum point fills exactly the expected cell
        volume = torch.zeros(1, 2, 35, 12, 24, 4)
        volume[0, view, k, i, j] = torch.tensor([1., 2., 3., 4.])
        bev = vt.splat(volume, geom)
        row, col = _cell(expected)
        if 0 <= row < GRID.shape[0] and 0 <= col < GRID.shape[1] and -3 <= expected[2] < 1:
            assert torch.equal(bev[0, :, row, col], torch.tensor([1., 2., 3., 4.]))
            assert bev.abs().sum() == 10
        else:
            assert bev.abs().sum() == 0


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_geometry_is_float32_under_autocast(dtype):
    """--amp runs the student under autocast (bf16 on CPU, fp16 on CUDA): the frustum geometry
    must still be computed in fp32, or pixel coordinates of a few hundred lose whole pixels and the
    lifted points land in other BEV cells."""
    vt = LSSViewTransformer(8, 4, GRID, depth_bins=(1.0, 36.0, 1.0))
    ref = vt.geometry(_metas(_aug()), 2, FEAT_HW, IMG_HW, 'cpu')
    with torch.autocast('cpu', dtype=dtype):
        geom = vt.geometry(_metas(_aug()), 2, FEAT_HW, IMG_HW, 'cpu')
        assert torch.is_autocast_enabled('cpu')  # switched off inside geometry() only
    assert geom.dtype == torch.float32
    assert torch.equal(geom, ref)


def test_splat_sums_points_of_a_cell_and_drops_points_off_the_grid():
    vt = LSSViewTransformer(8, 2, GRID)
    geom = torch.tensor([[5.25, 0.1, 0.], [5.35, 0.3, -1.], [5.2, 0.2, 2.], [-1., 0., 0.], [5.5, -0.3, 0.]])
    geom = geom.reshape(1, 1, 5, 1, 1, 3)
    volume = torch.tensor([[1., 0.], [2., 0.], [4., 0.], [8., 0.], [0., 1.]]).reshape(1, 1, 5, 1, 1, 2)
    bev = vt.splat(volume, geom)
    assert bev[0, 0, 32, 13] == 3  # (5.25, 0.1) and (5.35, 0.3): the same 0.4 m cell; z = 2 and x < 0 dropped
    assert bev[0, 1, 31, 13] == 1
    assert bev.sum() == 4


def test_missing_calibration_is_named():
    vt = LSSViewTransformer(8, 2, GRID)
    with pytest.raises(KeyError, match='lidar2cam'):
        vt.geometry([{'cam2img': [np.eye(3)]}], 1, FEAT_HW, IMG_HW, 'cpu')


@pytest.fixture(scope='module')
def student_and_batch(tmp_path_factory):
    """The demo student and one real training batch of the generated data (2 samples)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import DATASETS, MODELS
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bev/demo/camera_bevdet_r18_multimodal.py'))
    data = dict(cfg.train_dataloader.dataset)
    data.update(data_root=str(tmp_path_factory.mktemp('mm') / 'data'), num_train=2, num_val=1)
    dataset = DATASETS.build(data)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    return model, batch


def test_camera_bevdet_trains_predicts_and_records_its_bev(student_and_batch):
    torch.manual_seed(0)
    model, batch = student_and_batch
    assert batch['inputs']['imgs'].shape == (2, 2, 3, 96, 192)
    bev = {}
    handle = model.view_transform.register_forward_hook(lambda m, i, o: bev.setdefault('x', o))
    model.train()
    losses = model(batch['inputs'], batch['data_samples'], mode='loss')
    handle.remove()
    assert bev['x'].shape == (2, 64, 64, 64)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.img_backbone.conv1.weight.grad.abs().sum() > 0  # gradients reach the images' backbone
    assert model.view_transform.depthnet.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        preds = model(batch['inputs'], batch['data_samples'], mode='predict')
        outs = model(batch['inputs'], batch['data_samples'], mode='tensor')
    assert len(preds) == 2 and hasattr(preds[0], 'pred_instances_3d')
    assert outs[0][0]['heatmap'].shape == (2, 3, 64, 64)
