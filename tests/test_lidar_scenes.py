"""The generated LiDAR scenes: deterministic files in mmdet3d's v2 info format that mmdet3d's pipeline
reads, geometry checked against the boxes, and the AP metric (mmdet3d's indoor_eval) on known predictions."""
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from kdtoolbox.datasets.lidar_scenes import (DEFAULT_RANGE, SENSOR_HEIGHT, LidarBoxAPMetric, LidarScenesDataset,
                                             _inside_footprint, scene_rng, lidar_scenes_is_current,
                                             make_lidar_scenes, render_scene)

SMALL = dict(num_train=4, num_val=2, seed=0)


@pytest.fixture(autouse=True)
def _mmdet3d_scope():
    """The datasets build mmdet3d transforms by name, as a config with default_scope='mmdet3d' does."""
    from mmdet3d.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    return make_lidar_scenes(str(tmp_path_factory.mktemp('lidar') / 'scenes'), **SMALL)


def _pipeline():
    return [dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4),
            dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
            dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])]


def test_files_and_determinism(scenes, tmp_path):
    with open(scenes['train_info'], 'rb') as f:
        infos = pickle.load(f)
    assert infos['metainfo']['categories'] == {'car': 0, 'pedestrian': 1, 'cyclist': 2}
    assert len(infos['data_list']) == 4
    info = infos['data_list'][0]
    points = np.fromfile(osp.join(scenes['points'], info['lidar_points']['lidar_path']), dtype=np.float32)
    assert points.size % 4 == 0 and 1000 < points.size // 4 < 6000
    # the same arguments give the same bytes (another folder); scene i does not depend on the count
    other = make_lidar_scenes(str(tmp_path / 'again'), num_train=2, num_val=1, seed=0)
    for name in ('train_000000.bin', 'train_000001.bin', 'val_000000.bin'):
        with open(osp.join(scenes['points'], name), 'rb') as a, open(osp.join(other['points'], name), 'rb') as b:
            assert a.read() == b.read()
    assert lidar_scenes_is_current(scenes['root'], **SMALL)
    assert not lidar_scenes_is_current(scenes['root'], num_train=4, num_val=2, seed=1)
    mtime = os.path.getmtime(scenes['train_info'])
    make_lidar_scenes(scenes['root'], **SMALL)  # current: nothing rewritten
    assert os.path.getmtime(scenes['train_info']) == mtime


def test_scene_geometry():
    for i in range(6):
        points, boxes, labels, counts = render_scene(scene_rng(3, 'train', i))
        lo, hi = np.array(DEFAULT_RANGE[:3]), np.array(DEFAULT_RANGE[3:])
        assert np.all(points[:, :3] >= lo) and np.all(points[:, :3] < hi)
        assert len(boxes) >= 1 and set(labels.tolist()) <= {0, 1, 2}
        assert np.allclose(boxes[:, 2], -SENSOR_HEIGHT)  # bottom centres on the ground
        for box, count in zip(boxes, counts):
            # every object point is on the object's surface: inside its footprint (2 cm noise, 3 sigma)
            # and between the ground and its top
            near = _inside_footprint(points[:, :2], box, margin=0.08) & \
                (points[:, 2] > box[2] - 0.08) & (points[:, 2] < box[2] + box[5] + 0.08)
            inside_strict = _inside_footprint(points[:, :2], box, margin=-0.1) & \
                (points[:, 2] > box[2] + 0.1) & (points[:, 2] < box[2] + box[5] - 0.1)
            assert near.sum() >= min(count, 8)  # (points outside the range are cut)
            assert inside_strict.sum() == 0  # surfaces only: nothing inside the volume
        # objects do not overlap in BEV
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert np.hypot(*(boxes[a, :2] - boxes[b, :2])) > 0.5 * (np.hypot(*boxes[a, 3:5]) +
                                                                          np.hypot(*boxes[b, 3:5]))


def test_density_falls_with_range():
    near_far = []
    for i in range(40):
        points, boxes, labels, counts = render_scene(scene_rng(5, 'train', i))
        for box, label, count in zip(boxes, labels, counts):
            if label == 0:
                near_far.append((np.hypot(box[0], box[1]), count / (box[3] * box[5])))
    near_far = np.array(near_far)
    near = near_far[near_far[:, 0] < 8, 1].mean()
    far = near_far[near_far[:, 0] > 14, 1].mean()
    assert near > 2 * far


def test_dataset_reads_with_mmdet3d_pipeline(scenes):
    ds = LidarScenesDataset(data_root=scenes['root'], ann_file='lidar_scenes_infos_train.pkl', pipeline=_pipeline(),
                            **SMALL)
    assert len(ds) == 4 and ds.metainfo['box_type_3d'] == 'LiDAR'
    item = ds[0]
    gt = item['data_samples'].gt_instances_3d
    with open(scenes['train_info'], 'rb') as f:
        inst = pickle.load(f)['data_list'][0]['instances']
    assert gt.bboxes_3d.tensor.shape == (len(inst), 9)  # + zero velocity for CenterHead
    assert torch.allclose(gt.bboxes_3d.tensor[:, :7], torch.tensor([i['bbox_3d'] for i in inst]), atol=1e-5)
    assert torch.allclose(gt.bboxes_3d.bottom_center[:, 2], torch.full((len(inst),), -SENSOR_HEIGHT), atol=1e-5)
    assert gt.labels_3d.tolist() == [i['bbox_label_3d'] for i in inst]
    assert item['inputs']['points'].shape[1] == 4


def test_empty_scene_and_missing_root(scenes):
    ds = LidarScenesDataset(data_root=scenes['root'], ann_file='lidar_scenes_infos_val.pkl', pipeline=_pipeline(),
                            test_mode=True, **SMALL)
    ann = ds.parse_ann_info({'instances': []})
    assert ann['gt_bboxes_3d'].tensor.shape == (0, 9) and ann['gt_labels_3d'].shape == (0,)
    with pytest.raises(ValueError, match='data_root'):
        LidarScenesDataset(ann_file='x.pkl', pipeline=[])
    with pytest.raises(ValueError, match='point_cloud_range'):
        make_lidar_scenes(str(scenes['root']) + '_bad', point_cloud_range=(0, 0, 0, 5, 5, 1))


def _metric_result(gt_boxes, gt_labels, pred_boxes, pred_labels, scores):
    from mmdet3d.structures import LiDARInstance3DBoxes
    metric = LidarBoxAPMetric(iou_thr=[0.25, 0.5])
    metric.dataset_meta = {'classes': ('car', 'pedestrian', 'cyclist'), 'box_type_3d': 'LiDAR'}
    sample = {'pred_instances_3d': {'bboxes_3d': LiDARInstance3DBoxes(torch.tensor(pred_boxes), box_dim=9),
                                    'labels_3d': torch.tensor(pred_labels), 'scores_3d': torch.tensor(scores)},
              'eval_ann_info': {'gt_bboxes_3d': LiDARInstance3DBoxes(torch.tensor(gt_boxes), box_dim=9),
                                'gt_labels_3d': np.array(gt_labels)}}
    metric.process({}, [sample])
    return metric.compute_metrics(metric.results)


def test_metric_on_known_predictions():
    gt = [[5., 2., -1.73, 4., 1.8, 1.5, 0.3, 0., 0.], [-6., -3., -1.73, 0.8, 0.7, 1.7, 0., 0., 0.]]
    perfect = _metric_result(gt, [0, 1], gt, [0, 1], [0.9, 0.8])
    assert perfect['car_AP_0.50'] == pytest.approx(1.0) and perfect['pedestrian_AP_0.50'] == pytest.approx(1.0)
    # the car shifted by half its length along x: IoU = 1/3 (between 0.25 and 0.5)
    shifted = [[7., 2., -1.73, 4., 1.8, 1.5, 0., 0., 0.]]
    res = _metric_result([[5., 2., -1.73, 4., 1.8, 1.5, 0., 0., 0.]], [0], shifted, [0], [0.9])
    assert res['car_AP_0.25'] == pytest.approx(1.0) and res['car_AP_0.50'] == pytest.approx(0.0)
