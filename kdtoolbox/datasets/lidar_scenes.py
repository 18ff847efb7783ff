"""A small generated LiDAR scene dataset in mmdet3d 1.4's format: the 3D demo data, no download.

:func:`make_lidar_scenes` writes::

    root/points/train_000000.bin ...     x, y, z, intensity (float32, N x 4), LiDAR frame
    root/points/val_000000.bin ...
    root/lidar_scenes_infos_train.pkl    mmdet3d v2 info files (``metainfo`` + ``data_list``)
    root/lidar_scenes_infos_val.pkl
    root/VERSION                         the generator's arguments (a marker)

A scene is what a LiDAR at the origin, 1.73 m above a flat ground, would see of a few objects:

- objects: ``car`` / ``pedestrian`` / ``cyclist`` boxes (sizes jittered around typical values, yaw
  uniform), placed without overlap inside the point-cloud range; points are sampled on the box
  faces that face the sensor (side faces whose outward normal points to the origin, and the top), with
  a density that falls with the squared range (as a spinning LiDAR's beams spread), plus 2 cm noise;
- ground: points on ``z = -1.73`` with a density falling with range (uniform in log range), minus
  the points under an object;
- clutter: poles, walls and bushes (points on small boxes that are not objects), so that the
  detector has to tell shapes apart, not just find any points.

Boxes are stored as mmdet3d ``LiDARInstance3DBoxes`` values ``(x, y, z, l, w, h, yaw)`` with
``(x, y, z)`` the bottom centre, ``l`` along the heading; every instance also carries
``velocity = [0, 0]`` so that CenterPoint's CenterHead (which regresses velocity) trains on it.
Each scene has its own random stream seeded from ``(seed, split, index)`` (numpy ``SeedSequence`` +
legacy ``RandomState``, both stable across numpy versions): the same arguments give the same bytes,
and scene ``i`` does not depend on how many scenes follow it.

:class:`LidarScenesDataset` is mmdet3d's ``Det3DDataset`` over these files (generated on first use
through :func:`kdtoolbox.datasets.generated.generate_once`); evaluate it with
:class:`LidarBoxAPMetric`: mmdet3d's ``IndoorMetric`` (3D box AP from
``mmdet3d.evaluation.functional.indoor_eval``; rotated BEV IoU through mmcv's CPU op) on the LiDAR
boxes (``box_type_3d='LiDAR'``), velocities dropped. Configs name it
``type='kdtoolbox.LidarScenesDataset'`` (see ``configs/bev/demo/_base_/lidar_scenes.py``).
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from typing import Optional, Sequence

import numpy as np
from mmdet3d.datasets import Det3DDataset
from mmdet3d.evaluation.metrics import IndoorMetric
from mmdet3d.structures import LiDARInstance3DBoxes

from .generated import MARKER, generate_once, is_current

__all__ = ['LIDAR_CLASSES', 'LIDAR_FORMAT_VERSION', 'make_lidar_scenes', 'lidar_scenes_is_current',
           'lidar_scenes_marker', 'render_scene', 'LidarScenesDataset', 'LidarBoxAPMetric', 'SENSOR_HEIGHT']

LIDAR_CLASSES = ('car', 'pedestrian', 'cyclist')
# Bump when the scene drawing changes, so data written by an older generator is regenerated.
LIDAR_FORMAT_VERSION = 1
GENERATOR = 'kdtoolbox.datasets.lidar_scenes'
SPLITS = ('train', 'val')
_SPLIT_CODE = {'train': 0, 'val': 1}
SENSOR_HEIGHT = 1.73  # the ground is at z = -SENSOR_HEIGHT in the LiDAR frame
DEFAULT_RANGE = (-20.48, -20.48, -3.0, 20.48, 20.48, 1.0)

# (length, width, height) means and the relative jitter of each class
_SIZES = {'car': ((4.2, 1.8, 1.55), 0.12), 'pedestrian': ((0.75, 0.65, 1.75), 0.12),
          'cyclist': ((1.8, 0.65, 1.7), 0.1)}
_CLASS_PROBS = (0.55, 0.25, 0.2)
_POINTS_PER_M2_AT_10M = 12.0  # object surface density at 10 m (falls as 1 / range^2)
_MIN_OBJECT_POINTS = 8


# ------------------------------------------------------------------------------- geometry
def _rotation(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def _surface_points(rng: np.random.RandomState, box: np.ndarray, density: float,
                    sensor_facing: bool = True) -> np.ndarray:
    """Points on the faces of ``box`` ``(x, y, z_bottom, l, w, h, yaw)``: the side faces whose outward
    normal points towards the sensor (all four when ``sensor_facing`` is False) and the top face,
    ``density`` points per m² (Poisson counts) -> ``[N, 3]``."""
    x, y, z, length, width, height, yaw = box
    rot = _rotation(yaw)
    centre = np.array([x, y])
    # side faces in the box frame: (normal, face centre offset, extent along the face)
    faces = [(np.array([1., 0.]), np.array([length / 2, 0.]), width),
             (np.array([-1., 0.]), np.array([-length / 2, 0.]), width),
             (np.array([0., 1.]), np.array([0., width / 2]), length),
             (np.array([0., -1.]), np.array([0., -width / 2]), length)]
    chunks = []
    for normal, offset, extent in faces:
        normal_w = rot @ normal
        face_centre = centre + rot @ offset
        if sensor_facing and float(normal_w @ (-face_centre)) <= 0:
            continue  # faces away from the sensor: occluded by the object itself
        n = rng.poisson(density * extent * height)
        along = rng.uniform(-extent / 2, extent / 2, n)
        tangent = rot @ np.array([-normal[1], normal[0]])
        xy = face_centre[None] + along[:, None] * tangent[None]
        zz = z + rng.uniform(0, height, n)
        chunks.append(np.column_stack([xy, zz]))
    n_top = rng.poisson(density * length * width * 0.5)  # grazing angle: fewer returns on the top
    local = np.column_stack([rng.uniform(-length / 2, length / 2, n_top), rng.uniform(-width / 2, width / 2, n_top)])
    chunks.append(np.column_stack([centre[None] + local @ rot.T, np.full(n_top, z + height)]))
    return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 3))


def _inside_footprint(xy: np.ndarray, box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Boolean ``[N]``: which points ``xy [N, 2]`` fall inside the BEV footprint of ``box``."""
    local = (xy - box[None, :2]) @ _rotation(box[6])  # world -> box frame (R^T x)
    return (np.abs(local[:, 0]) <= box[3] / 2 + margin) & (np.abs(local[:, 1]) <= box[4] / 2 + margin)


def _place(rng, sizes: np.ndarray, placed: list, pc_range: Sequence[float], margin: float) -> Optional[np.ndarray]:
    """A centre and yaw for a box of ``sizes (l, w, h)`` inside the range, not overlapping ``placed``."""
    x0, y0, _, x1, y1, _ = pc_range
    radius = 0.5 * float(np.hypot(sizes[0], sizes[1]))
    for _ in range(40):
        x = rng.uniform(x0 + margin + radius, x1 - margin - radius)
        y = rng.uniform(y0 + margin + radius, y1 - margin - radius)
        if np.hypot(x, y) < 3.0 + radius:
            continue  # too close to the sensor
        if all(np.hypot(x - b[0], y - b[1]) > radius + 0.5 * np.hypot(b[3], b[4]) + 0.3 for b in placed):
            return np.array([x, y, -SENSOR_HEIGHT, *sizes, rng.uniform(-np.pi, np.pi)])
    return None


def render_scene(rng: np.random.RandomState, pc_range: Sequence[float] = DEFAULT_RANGE,
                 max_objects: int = 8, ground_points: int = 1800, clutter: int = 4):
    """One scene: ``points [N, 4]`` float32 (x, y, z, intensity) and its objects.

    Returns:
        points: ``[N, 4]`` float32, every point inside ``pc_range``.
        boxes: ``[K, 7]`` float32 ``(x, y, z_bottom, l, w, h, yaw)``.
        labels: ``[K]`` int64 indices into :data:`LIDAR_CLASSES`.
        num_points: ``[K]`` int64 points sampled on each object.
    """
    boxes, labels, chunks, counts = [], [], [], []
    for _ in range(int(rng.randint(2, max_objects + 1))):
        label = int(rng.choice(len(LIDAR_CLASSES), p=_CLASS_PROBS))
        mean, jitter = _SIZES[LIDAR_CLASSES[label]]
        sizes = np.asarray(mean) * (1 + rng.uniform(-jitter, jitter, 3))
        box = _place(rng, sizes, boxes, pc_range, margin=0.5)
        if box is None:
            continue
        dist = float(np.hypot(box[0], box[1]))
        density = _POINTS_PER_M2_AT_10M * (10.0 / max(dist, 1.0)) ** 2
        pts = _surface_points(rng, box, density)
        while len(pts) < _MIN_OBJECT_POINTS:  # far and small: a few more returns, never an empty object
            pts = np.concatenate([pts, _surface_points(rng, box, density + 4.0)])
        pts = pts + rng.normal(0, 0.02, pts.shape)
        intensity = rng.uniform(0.3, 0.9, (len(pts), 1))
        boxes.append(box)
        labels.append(label)
        counts.append(len(pts))
        chunks.append(np.hstack([pts, intensity]))
    placed = list(boxes)
    for _ in range(int(clutter)):  # poles, walls, bushes: points, but not objects
        kind = rng.randint(3)
        sizes = [np.array([0.3, 0.3, rng.uniform(2.0, 3.5)]),
                 np.array([rng.uniform(3.0, 6.0), 0.3, rng.uniform(1.0, 2.2)]),
                 np.array([rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.6), rng.uniform(0.5, 1.0)])][kind]
        box = _place(rng, sizes, placed, pc_range, margin=0.3)
        if box is None:
            continue
        placed.append(box)
        dist = float(np.hypot(box[0], box[1]))
        pts = _surface_points(rng, box, _POINTS_PER_M2_AT_10M * (10.0 / max(dist, 1.0)) ** 2)
        pts = pts + rng.normal(0, 0.03, pts.shape)
        chunks.append(np.hstack([pts, rng.uniform(0.1, 0.5, (len(pts), 1))]))
    # ground: uniform in log range (density ~ 1 / r^2 per unit area), uniform in azimuth
    r = np.exp(rng.uniform(np.log(2.5), np.log(np.hypot(pc_range[3], pc_range[4])), ground_points))
    phi = rng.uniform(-np.pi, np.pi, ground_points)
    ground = np.column_stack([r * np.cos(phi), r * np.sin(phi), -SENSOR_HEIGHT + rng.normal(0, 0.03, ground_points)])
    keep = np.ones(len(ground), dtype=bool)
    for box in placed:
        keep &= ~_inside_footprint(ground[:, :2], box)
    ground = ground[keep]
    chunks.append(np.hstack([ground, rng.uniform(0.02, 0.2, (len(ground), 1))]))
    points = np.concatenate(chunks, axis=0)
    lo, hi = np.asarray(pc_range[:3]), np.asarray(pc_range[3:])
    points = points[np.all((points[:, :3] >= lo) & (points[:, :3] < hi), axis=1)]
    points = points[rng.permutation(len(points))].astype(np.float32)
    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 7)
    return points, boxes_arr, np.asarray(labels, dtype=np.int64), np.asarray(counts, dtype=np.int64)


def scene_rng(seed: int, split: str, index: int) -> np.random.RandomState:
    state = np.random.SeedSequence([seed, _SPLIT_CODE[split], index, 3]).generate_state(4)
    return np.random.RandomState(state)


# ----------------------------------------------------------------------------------- files
def lidar_scenes_marker(num_train: int = 64, num_val: int = 16, seed: int = 0, max_objects: int = 8,
                        point_cloud_range: Sequence[float] = DEFAULT_RANGE) -> dict:
    """What ``root/VERSION`` holds for these arguments."""
    return {'generator': GENERATOR, 'format_version': LIDAR_FORMAT_VERSION,
            'args': {'num_train': int(num_train), 'num_val': int(num_val), 'seed': int(seed),
                     'max_objects': int(max_objects),
                     'point_cloud_range': [float(v) for v in point_cloud_range]}}


def info_path(root: str, split: str) -> str:
    return osp.join(root, f'lidar_scenes_infos_{split}.pkl')


def _complete(root: str, num_train: int, num_val: int) -> bool:
    for split, count in (('train', num_train), ('val', num_val)):
        if not osp.isfile(info_path(root, split)):
            return False
        if sum(n.startswith(f'{split}_') for n in os.listdir(osp.join(root, 'points'))) != count:
            return False
    return True


def lidar_scenes_is_current(root: str, **args) -> bool:
    """True if ``root`` holds a complete dataset generated with exactly these arguments."""
    marker = lidar_scenes_marker(**args)
    a = marker['args']
    return is_current(osp.abspath(root), marker, lambda r: _complete(r, a['num_train'], a['num_val']))


def _write_split(folder: str, split: str, num: int, seed: int, max_objects: int,
                 pc_range: Sequence[float]) -> None:
    data_list = []
    for index in range(num):
        points, boxes, labels, counts = render_scene(scene_rng(seed, split, index), pc_range, max_objects)
        name = f'{split}_{index:06d}.bin'
        points.tofile(osp.join(folder, 'points', name))
        instances = [{'bbox_3d': [float(v) for v in box], 'bbox_label_3d': int(label),
                      'velocity': [0.0, 0.0], 'num_lidar_pts': int(count)}
                     for box, label, count in zip(boxes, labels, counts)]
        data_list.append({'sample_idx': index, 'token': f'{split}_{index:06d}',
                          'lidar_points': {'num_pts_feats': 4, 'lidar_path': name},
                          'instances': instances})
    infos = {'metainfo': {'categories': {c: i for i, c in enumerate(LIDAR_CLASSES)},
                          'dataset': 'kdtoolbox_lidar_scenes', 'info_version': '1.1',
                          'version': str(LIDAR_FORMAT_VERSION)},
             'data_list': data_list}
    with open(info_path(folder, split), 'wb') as f:
        pickle.dump(infos, f, protocol=4)


def make_lidar_scenes(root: str, num_train: int = 64, num_val: int = 16, seed: int = 0, max_objects: int = 8,
                      point_cloud_range: Sequence[float] = DEFAULT_RANGE, force: bool = False) -> dict:
    """Write the LiDAR scene dataset under ``root`` unless it is already there with the same arguments.

    Returns the paths: ``root``, ``points`` (folder), ``train_info``, ``val_info``, ``marker``.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError('make_lidar_scenes: num_train and num_val must be >= 0')
    if max_objects < 2:
        raise ValueError(f'make_lidar_scenes: max_objects must be >= 2, got {max_objects}')
    pc_range = [float(v) for v in point_cloud_range]
    if len(pc_range) != 6 or pc_range[3] - pc_range[0] < 12 or pc_range[4] - pc_range[1] < 12:
        raise ValueError(f'make_lidar_scenes: point_cloud_range must be (x0, y0, z0, x1, y1, z1) at least '
                         f'12 m wide, got {point_cloud_range}')
    if not pc_range[2] < -SENSOR_HEIGHT < pc_range[5]:
        raise ValueError(f'make_lidar_scenes: the ground (z = {-SENSOR_HEIGHT}) must be inside the z range '
                         f'of point_cloud_range {point_cloud_range}')
    marker = lidar_scenes_marker(num_train, num_val, seed, max_objects, pc_range)
    root = osp.abspath(root)

    def write(folder: str) -> None:
        os.makedirs(osp.join(folder, 'points'))
        for split, num in (('train', num_train), ('val', num_val)):
            _write_split(folder, split, num, seed, max_objects, pc_range)

    generate_once(root, marker, lambda r: _complete(r, num_train, num_val), write, 'LiDAR scene dataset',
                  force=force)
    return {'root': root, 'points': osp.join(root, 'points'), 'train_info': info_path(root, 'train'),
            'val_info': info_path(root, 'val'), 'marker': osp.join(root, MARKER)}


# ------------------------------------------------------------------------------- the dataset
def _spconv_cpu_fix() -> None:
    """Apply ``kdtoolbox.ops.spconv_compat``'s CPU-backward fix: the models trained on these scenes
    (SparseEncoder) run spconv, whose CPU backward fails without it; nothing when spconv is missing."""
    try:
        from ..ops.spconv_compat import import_spconv
        import_spconv()
    except ImportError:
        pass


class LidarScenesDataset(Det3DDataset):
    """mmdet3d's ``Det3DDataset`` over :func:`make_lidar_scenes`' files, generated on first use.

    Args:
        generate: call :func:`make_lidar_scenes` before loading (a no-op when the data under
            ``data_root`` is current; it regenerates when missing or generated with other arguments).
        num_train, num_val, seed, max_objects, point_cloud_range: the generator's arguments; give the
            train and val datasets of one config the same values (they share the root).
        with_velocity: append the (zero) velocity to the boxes (9 values, as CenterHead needs).
        *args, **kwargs: ``Det3DDataset``'s (``data_root``, ``ann_file``, ``pipeline``, ...);
            ``data_prefix`` defaults to ``dict(pts='points')``.

    ``gt_bboxes_3d`` are ``LiDARInstance3DBoxes`` with the bottom centre as origin; the metainfo
    carries ``box_type_3d='LiDAR'`` so that mmdet3d's ``IndoorMetric`` evaluates LiDAR boxes.
    """

    METAINFO = {'classes': LIDAR_CLASSES, 'box_type_3d': 'LiDAR',
                'palette': [(255, 158, 0), (0, 0, 230), (220, 20, 60)]}

    def __init__(self, *args, generate: bool = True, num_train: int = 64, num_val: int = 16, seed: int = 0,
                 max_objects: int = 8, point_cloud_range: Sequence[float] = DEFAULT_RANGE,
                 with_velocity: bool = True, **kwargs) -> None:
        self.scene_args = dict(num_train=num_train, num_val=num_val, seed=seed, max_objects=max_objects,
                               point_cloud_range=tuple(float(v) for v in point_cloud_range))
        self.with_velocity = with_velocity
        kwargs.setdefault('data_prefix', dict(pts='points', img=''))
        if generate:
            root = kwargs.get('data_root')
            if not root:
                raise ValueError('LidarScenesDataset(generate=True) needs data_root (where to generate)')
            make_lidar_scenes(root, **self.scene_args)
        _spconv_cpu_fix()
        super().__init__(*args, **kwargs)

    def parse_ann_info(self, info: dict) -> dict:
        """``gt_bboxes_3d`` (LiDARInstance3DBoxes, 9 values with velocity, else 7) and ``gt_labels_3d``
        ``[K]``; a scene without objects gives empty ones."""
        ann_info = super().parse_ann_info(info)
        if ann_info is None:
            ann_info = {'gt_bboxes_3d': np.zeros((0, 7), dtype=np.float32),
                        'gt_labels_3d': np.zeros(0, dtype=np.int64),
                        'velocities': np.zeros((0, 2), dtype=np.float32)}
        boxes = ann_info['gt_bboxes_3d'].reshape(-1, 7)
        if self.with_velocity:
            boxes = np.concatenate([boxes, ann_info['velocities'].reshape(-1, 2)], axis=-1)
        ann_info['gt_bboxes_3d'] = LiDARInstance3DBoxes(boxes, box_dim=boxes.shape[-1], origin=(0.5, 0.5, 0))
        return ann_info


def _seven(boxes):
    """``boxes`` (BaseInstance3DBoxes) cut to ``(x, y, z, l, w, h, yaw)``: mmdet3d's ``indoor_eval``
    stacks boxes into 7-value tensors, so velocities must go."""
    if boxes.tensor.shape[-1] == 7:
        return boxes
    return type(boxes)(boxes.tensor[:, :7], box_dim=7, with_yaw=boxes.with_yaw)


class LidarBoxAPMetric(IndoorMetric):
    """mmdet3d's ``IndoorMetric`` (3D box AP/AR per class at ``iou_thr`` through
    ``mmdet3d.evaluation.functional.indoor_eval``: rotated 3D IoU, mmcv's CPU ``box_iou_rotated``) for
    LiDAR boxes that carry velocities (CenterPoint's 9 values): boxes are cut to 7 values first.
    Keys: ``car_AP_0.25``, ..., ``mAP_0.25``, ``mAP_0.50``, ``mAR_0.25``, ..."""

    def process(self, data_batch: dict, data_samples) -> None:
        for data_sample in data_samples:
            pred = {k: (v.to('cpu') if hasattr(v, 'to') else v) for k, v in data_sample['pred_instances_3d'].items()}
            pred['bboxes_3d'] = _seven(pred['bboxes_3d'])
            ann = dict(data_sample['eval_ann_info'])
            ann['gt_bboxes_3d'] = _seven(ann['gt_bboxes_3d'])
            self.results.append((ann, pred))
