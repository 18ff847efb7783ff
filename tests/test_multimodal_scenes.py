"""The generated multi-modal scenes: deterministic, written once, images that show the boxes where the
calibration projects them, points on the boxes, mmdet3d's loading pipeline, and BEVAugMatrix against
mmdet3d's own BEV augmentation."""
import copy
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from kdtoolbox.datasets.lidar_scenes import LIDAR_CLASSES
from kdtoolbox.datasets.multimodal_scenes import CLASS_COLOURS, BEVAugMatrix, make_multimodal_scenes

ARGS = dict(num_train=3, num_val=1, seed=0, max_objects=6)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_multimodal_scenes(str(tmp_path_factory.mktemp('mm') / 'data'), **ARGS)


def _files(root):
    out = {}
    for base, _, names in os.walk(root):
        for n in names:
            with open(osp.join(base, n), 'rb') as f:
                out[osp.relpath(osp.join(base, n), root)] = f.read()
    return out


def test_same_arguments_same_bytes_and_written_once(data, tmp_path):
    other = make_multimodal_scenes(str(tmp_path / 'again'), **ARGS)
    a, b = _files(data['root']), _files(other['root'])
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    assert len([k for k in a if k.endswith('.png')]) == 2 * 4
    before = os.stat(data['train_info']).st_mtime_ns
    make_multimodal_scenes(data['root'], **ARGS)
    assert os.stat(data['train_info']).st_mtime_ns == before


def test_images_show_the_nearest_box_in_its_class_colour(data):
    import cv2
    infos = pickle.load(open(data['train_info'], 'rb'))['data_list']
    checked = 0
    for info in infos:
        boxes = np.array([i['bbox_3d'] for i in info['instances']]).reshape(-1, 7)
        labels = [i['bbox_label_3d'] for i in info['instances']]
        for cam in info['images'].values():
            img = cv2.imread(osp.join(data['root'], 'images', cam['img_path']))
            lidar2img = np.array(cam['cam2img']) @ np.array(cam['lidar2cam'])
            visible = []
            for k, b in enumerate(boxes):
                centre = np.array([b[0], b[1], b[2] + b[5] / 2, 1.])
                p = lidar2img @ centre
                if p[2] > 1 and 0 <= p[0] / p[2] < img.shape[1] and 0 <= p[1] / p[2] < img.shape[0]:
                    visible.append((np.hypot(b[0], b[1]), k, int(p[0] / p[2]), int(p[1] / p[2])))
            if not visible:
                continue
            _, k, u, v = min(visible)  # the nearest object: nothing hides its centre
            expected = int(np.argmax(CLASS_COLOURS[LIDAR_CLASSES[labels[k]]]))
            assert int(np.argmax(img[v, u])) == expected, (info['token'], k)
            checked += 1
    assert checked >= 3


def test_points_lie_on_the_boxes(data):
    infos = pickle.load(open(data['train_info'], 'rb'))['data_list']
    for info in infos:
        pts = np.fromfile(osp.join(data['root'], 'points', info['lidar_points']['lidar_path']),
                          dtype=np.float32).reshape(-1, 4)
        assert np.all(pts[:, 0] >= 0) and np.all(np.abs(pts[:, 1]) <= 12.8)
        for inst in info['instances']:
            x, y, z, length, width, height, yaw = inst['bbox_3d']
            local = (pts[:, :2] - [x, y]) @ np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
            inside = (np.abs(local[:, 0]) <= length / 2 + 0.1) & (np.abs(local[:, 1]) <= width / 2 + 0.1) \
                & (pts[:, 2] >= z - 0.1) & (pts[:, 2] <= z + height + 0.1)
            assert inside.sum() >= 8


def _pipeline(extra):
    from mmengine.registry import init_default_scope
    from mmdet3d.registry import TRANSFORMS
    init_default_scope('mmdet3d')
    return [TRANSFORMS.build(t) for t in [
        dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4),
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True)] + extra]


def _sample(data, split='train'):
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope
    from kdtoolbox.plugins import load_plugins
    load_plugins()  # the bev plugin registers the dataset
    init_default_scope('mmdet3d')
    ds = DATASETS.build(dict(type='kdtoolbox.MultiModalScenesDataset', data_root=data['root'],
                             ann_file=osp.basename(data[f'{split}_info']), pipeline=[],
                             metainfo=dict(classes=list(LIDAR_CLASSES)), **ARGS))
    return ds, ds.get_data_info(0)


def test_dataset_loads_images_and_calibration_through_mmdet3d(data):
    ds, info = _sample(data)
    assert set(info['images']) == {'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT'}
    results = copy.deepcopy(info)
    for t in _pipeline([dict(type='kdtoolbox.BEVAugMatrix'),
                        dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=2)]):
        results = t(results)
    assert len(results['img']) == 2 and results['img'][0].shape == (96, 192, 3)
    assert np.asarray(results['lidar2cam']).shape == (2, 4, 4) and np.asarray(results['cam2img']).shape == (2, 4, 4)
    assert np.allclose(results['lidar_aug_matrix'], np.eye(4))  # no augmentation ran
    assert results['gt_bboxes_3d'].tensor.shape[1] == 9  # with the zero velocity CenterHead regresses


@pytest.mark.parametrize('seed,hf,vf', [(0, 0., 0.), (1, 1., 0.), (2, 0., 1.), (3, 1., 1.)])
def test_bev_aug_matrix_reproduces_mmdet3d_augmentation(data, seed, hf, vf):
    ds, info = _sample(data)
    np.random.seed(seed)
    original = None
    results = copy.deepcopy(info)
    for t in _pipeline([]):
        results = t(results)
    original = results['points'].tensor.clone()
    boxes = results['gt_bboxes_3d'].tensor.clone()
    from mmdet3d.registry import TRANSFORMS
    for cfg in [dict(type='GlobalRotScaleTrans', rot_range=[-0.8, 0.8], scale_ratio_range=[0.9, 1.1],
                     translation_std=[0.5, 0.5, 0.1]),
                dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=hf, flip_ratio_bev_vertical=vf)]:
        results = TRANSFORMS.build(cfg)(results)
    results = BEVAugMatrix()(results)
    assert results['transformation_3d_flow'] == ['R', 'S', 'T'] + ['HF'] * int(hf) + ['VF'] * int(vf)
    m = torch.as_tensor(results['lidar_aug_matrix'], dtype=torch.float64)
    mapped = (torch.cat([original[:, :3], torch.ones(len(original), 1)], 1).double() @ m.T)[:, :3]
    assert torch.allclose(mapped.float(), results['points'].tensor[:, :3], atol=1e-4)
    centres = (torch.cat([boxes[:, :3], torch.ones(len(boxes), 1)], 1).double() @ m.T)[:, :3]
    assert torch.allclose(centres.float(), results['gt_bboxes_3d'].tensor[:, :3], atol=1e-4)
