"""A small generated multi-modal scene dataset: LiDAR points and camera images of the same boxes, with
calibration, in mmdet3d 1.4's info format: the data of the cross-modal (LiDAR -> camera) BEV demos.

:func:`make_multimodal_scenes` writes::

    root/points/train_000000.bin ...              x, y, z, intensity (float32, N x 4), LiDAR frame
    root/images/<CAM>/train_000000.png ...        one pinhole image per camera
    root/multimodal_scenes_infos_{train,val}.pkl  mmdet3d v2 infos: lidar_points, images (img_path,
                                                  cam2img, lidar2cam, lidar2img 4x4, height, width),
                                                  instances
    root/VERSION                                  the generator's arguments (a marker)

Scenes come from :func:`kdtoolbox.datasets.lidar_scenes.render_scene` (objects, clutter and ground,
points on the sensor-facing faces; boxes ``(x, y, z_bottom, l, w, h, yaw)``) over a range in front of
the vehicle (default ``x in [0, 25.6]``, ``y in [-12.8, 12.8]``: 64 x 64 cells of 0.4 m). The cameras
sit at the LiDAR origin (1.73 m above the ground), horizontal, looking along ``yaw`` (default two
cameras at +-35 degrees, 90 degree field of view, 192 x 96 px), ``lidar2cam = [R | -R c]`` with camera
axes x right, y down, z forward. An image is rendered with numpy/cv2: sky above the horizon, a ground
plane with a 2 m checkerboard (a depth cue: each pixel below the horizon is ray-cast onto ``z =
-1.73``), and every object as a filled projected cuboid in its class colour, faces shaded by their
orientation, drawn far to near (painter's algorithm); an object with a corner behind a camera
(``z_cam < 0.2 m``) is not drawn in that camera. Same arguments, same bytes (per-scene random streams
seeded from ``(seed, split, index)``, as the LiDAR scenes; the scene stream is the LiDAR scenes'
``render_scene`` with this dataset's range).

:class:`MultiModalScenesDataset` is mmdet3d's ``Det3DDataset`` (through
:class:`~kdtoolbox.datasets.lidar_scenes.LidarScenesDataset`, whose box parsing it reuses) with
``modality=dict(use_lidar=True, use_camera=True)``; mmdet3d's ``LoadMultiViewImageFromFiles`` puts
``cam2img`` / ``lidar2cam`` per view into the results and ``Pack3DDetInputs`` into the metainfo.

:class:`MultiViewImageResize`: resizes every view and records it in ``img_aug_matrix`` (for full-size
camera data such as nuScenes in the paper configs).

Evaluation: :class:`kdtoolbox.datasets.lidar_scenes.LidarBoxAPMetric` (mmdet3d's ``IndoorMetric`` on
the first 7 box values, CenterHead's velocity dropped).

:class:`BEVAugMatrix` (a transform; mmdet3d 1.4 has none for this): after ``GlobalRotScaleTrans`` /
``RandomFlip3D`` it writes ``lidar_aug_matrix`` (4x4) with ``p_aug = lidar_aug_matrix @ p_original``,
composed from the recorded ``pcd_rotation``, ``pcd_scale_factor``, ``pcd_trans`` and flips in the
order of ``transformation_3d_flow``. The images stay as captured; the camera student lifts into the
original LiDAR frame with ``lidar2cam`` and then applies this matrix, so teacher points and student
images describe the same augmented scene. Load the images after the 3-D augmentations (otherwise
``RandomFlip3D`` would also flip them as 2-D images).
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from typing import Optional, Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from .generated import MARKER, generate_once, is_current
from .lidar_scenes import LIDAR_CLASSES, SENSOR_HEIGHT, LidarScenesDataset, scene_rng, render_scene

__all__ = ['MULTIMODAL_FORMAT_VERSION', 'DEFAULT_RANGE', 'DEFAULT_CAMERAS', 'camera_matrices', 'render_image',
           'make_multimodal_scenes', 'multimodal_scenes_is_current', 'MultiModalScenesDataset', 'BEVAugMatrix',
           'MultiViewImageResize']

MULTIMODAL_FORMAT_VERSION = 1
GENERATOR = 'kdtoolbox.datasets.multimodal_scenes'
DEFAULT_RANGE = (0.0, -12.8, -3.0, 25.6, 12.8, 1.0)
#: camera name -> yaw (degrees, counter-clockwise from the LiDAR x axis)
DEFAULT_CAMERAS = {'CAM_FRONT_LEFT': 35.0, 'CAM_FRONT_RIGHT': -35.0}
CLASS_COLOURS = {'car': (40, 40, 220), 'pedestrian': (40, 200, 40), 'cyclist': (220, 120, 30)}  # BGR
_SKY, _GROUND_A, _GROUND_B = (235, 200, 150), (110, 110, 110), (150, 150, 150)
# faces of mmdet3d's corner order (LiDARInstance3DBoxes.corners, origin bottom centre)
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (3, 2, 6, 7), (0, 3, 7, 4), (1, 2, 6, 5))


# ------------------------------------------------------------------------------ cameras
def camera_matrices(yaw_deg: float, img_size: Sequence[int], fov_deg: float = 90.0) -> tuple[np.ndarray, np.ndarray]:
    """``(cam2img [3, 3], lidar2cam [4, 4])`` of a horizontal pinhole camera at the LiDAR origin
    looking along ``yaw``; ``img_size = (H, W)``, ``fov_deg`` horizontal."""
    h, w = int(img_size[0]), int(img_size[1])
    f = (w / 2) / np.tan(np.deg2rad(fov_deg) / 2)
    cam2img = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=np.float64)
    yaw = np.deg2rad(yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = np.stack([right, down, forward])  # camera at the origin: no translation
    return cam2img, lidar2cam


def _box_corners(box: np.ndarray) -> np.ndarray:
    """8 corners ``[8, 3]`` in mmdet3d's LiDAR corner order, box ``(x, y, z_bottom, l, w, h, yaw)``."""
    x, y, z, length, width, height, yaw = box[:7]
    unit = np.array([[-0.5, -0.5, 0], [-0.5, -0.5, 1], [-0.5, 0.5, 1], [-0.5, 0.5, 0],
                     [0.5, -0.5, 0], [0.5, -0.5, 1], [0.5, 0.5, 1], [0.5, 0.5, 0]])
    local = unit * np.array([length, width, height])
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + np.array([x, y, z])


def render_image(boxes: np.ndarray, labels: np.ndarray, cam2img: np.ndarray, lidar2cam: np.ndarray,
                 img_size: Sequence[int]) -> np.ndarray:
    """The BGR uint8 image ``[H, W, 3]`` of boxes ``[K, 7]`` seen by one camera (module docstring)."""
    h, w = int(img_size[0]), int(img_size[1])
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = _SKY
    # ground: ray-cast every pixel below the horizon onto z = -SENSOR_HEIGHT, checkerboard of 2 m
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    rays_cam = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(cam2img).T
    cam2lidar = np.linalg.inv(lidar2cam)
    rays = rays_cam @ cam2lidar[:3, :3].T  # directions in the LiDAR frame
    down = rays[..., 2] < -1e-6
    t = np.where(down, -SENSOR_HEIGHT / np.where(down, rays[..., 2], -1.0), 0.0)
    gx, gy = rays[..., 0] * t, rays[..., 1] * t
    checker = ((np.floor(gx / 2.0) + np.floor(gy / 2.0)) % 2 == 0)
    ground = np.where(checker[..., None], np.array(_GROUND_A, np.uint8), np.array(_GROUND_B, np.uint8))
    img[down] = ground[down]
    # objects, far to near
    order = np.argsort(-np.hypot(boxes[:, 0], boxes[:, 1])) if len(boxes) else []
    for k in order:
        corners = _box_corners(boxes[k])
        cam = np.c_[corners, np.ones(8)] @ lidar2cam.T
        if np.any(cam[:, 2] < 0.2):
            continue
        pix = cam[:, :3] @ cam2img.T
        pix = pix[:, :2] / pix[:, 2:3]
        colour = np.array(CLASS_COLOURS[LIDAR_CLASSES[int(labels[k])]], dtype=np.float64)
        centre = corners.mean(0)
        faces = sorted(_FACES, key=lambda f: -np.linalg.norm(corners[list(f)].mean(0)))
        for face in faces:
            fc = corners[list(face)].mean(0)
            normal = fc - centre
            normal /= np.linalg.norm(normal) + 1e-9
            shade = 0.55 + 0.45 * abs(normal[2])  # top faces brightest
            shade = min(1.0, shade + 0.15 * (normal[1] > 0))
            poly = np.round(np.clip(pix[list(face)], -4 * w, 4 * w)).astype(np.int32)
            cv2.fillConvexPoly(img, poly, tuple(int(c) for c in np.clip(colour * shade, 0, 255)))
    return img


# ------------------------------------------------------------------------------ files
def multimodal_marker(num_train: int = 32, num_val: int = 8, seed: int = 0, max_objects: int = 6,
                      point_cloud_range: Sequence[float] = DEFAULT_RANGE, cameras: Optional[dict] = None,
                      img_size: Sequence[int] = (96, 192), fov: float = 90.0) -> dict:
    cams = dict(DEFAULT_CAMERAS if cameras is None else cameras)
    return {'generator': GENERATOR, 'format_version': MULTIMODAL_FORMAT_VERSION,
            'args': {'num_train': int(num_train), 'num_val': int(num_val), 'seed': int(seed),
                     'max_objects': int(max_objects), 'point_cloud_range': [float(v) for v in point_cloud_range],
                     'cameras': {k: float(v) for k, v in cams.items()}, 'img_size': [int(v) for v in img_size],
                     'fov': float(fov)}}


def info_path(root: str, split: str) -> str:
    return osp.join(root, f'multimodal_scenes_infos_{split}.pkl')


def _complete(root: str, num_train: int, num_val: int, cameras: Sequence[str]) -> bool:
    for split, count in (('train', num_train), ('val', num_val)):
        if not osp.isfile(info_path(root, split)):
            return False
        if sum(n.startswith(f'{split}_') for n in os.listdir(osp.join(root, 'points'))) != count:
            return False
        for cam in cameras:
            if sum(n.startswith(f'{split}_') for n in os.listdir(osp.join(root, 'images', cam))) != count:
                return False
    return True


def multimodal_scenes_is_current(root: str, **args) -> bool:
    """True if ``root`` holds a complete dataset generated with exactly these arguments."""
    marker = multimodal_marker(**args)
    a = marker['args']
    return is_current(osp.abspath(root), marker,
                      lambda r: _complete(r, a['num_train'], a['num_val'], list(a['cameras'])))


def make_multimodal_scenes(root: str, num_train: int = 32, num_val: int = 8, seed: int = 0, max_objects: int = 6,
                           point_cloud_range: Sequence[float] = DEFAULT_RANGE, cameras: Optional[dict] = None,
                           img_size: Sequence[int] = (96, 192), fov: float = 90.0, force: bool = False) -> dict:
    """Write the dataset under ``root`` unless it is there with the same arguments; returns its paths
    (``root``, ``train_info``, ``val_info``)."""
    marker = multimodal_marker(num_train, num_val, seed, max_objects, point_cloud_range, cameras, img_size, fov)
    a = marker['args']
    if num_train < 0 or num_val < 0 or max_objects < 2 or not a['cameras']:
        raise ValueError('make_multimodal_scenes: num_train/num_val >= 0, max_objects >= 2 and at least one camera')
    pc_range = a['point_cloud_range']
    calib = {cam: camera_matrices(yaw, img_size, fov) for cam, yaw in a['cameras'].items()}
    root = osp.abspath(root)

    def write(folder: str) -> None:
        os.makedirs(osp.join(folder, 'points'))
        for cam in calib:
            os.makedirs(osp.join(folder, 'images', cam))
        for split, num in (('train', num_train), ('val', num_val)):
            data_list = []
            for index in range(num):
                points, boxes, labels, counts = render_scene(scene_rng(seed, split, index), pc_range, max_objects)
                name = f'{split}_{index:06d}'
                points.tofile(osp.join(folder, 'points', name + '.bin'))
                images = {}
                for cam, (cam2img, lidar2cam) in calib.items():
                    cv2.imwrite(osp.join(folder, 'images', cam, name + '.png'),
                                render_image(boxes, labels, cam2img, lidar2cam, img_size))
                    cam2img4 = np.eye(4)
                    cam2img4[:3, :3] = cam2img
                    images[cam] = {'img_path': f'{cam}/{name}.png', 'cam2img': cam2img4.tolist(),
                                   'lidar2cam': lidar2cam.tolist(), 'lidar2img': (cam2img4 @ lidar2cam).tolist(),
                                   'height': int(img_size[0]),
                                   'width': int(img_size[1])}
                instances = [{'bbox_3d': [float(v) for v in box], 'bbox_label_3d': int(label),
                              'velocity': [0.0, 0.0], 'num_lidar_pts': int(count)}
                             for box, label, count in zip(boxes, labels, counts)]
                data_list.append({'sample_idx': index, 'token': name, 'images': images,
                                  'lidar_points': {'num_pts_feats': 4, 'lidar_path': name + '.bin'},
                                  'instances': instances})
            infos = {'metainfo': {'categories': {c: i for i, c in enumerate(LIDAR_CLASSES)},
                                  'dataset': 'kdtoolbox_multimodal_scenes', 'info_version': '1.1',
                                  'version': str(MULTIMODAL_FORMAT_VERSION)},
                     'data_list': data_list}
            with open(info_path(folder, split), 'wb') as f:
                pickle.dump(infos, f, protocol=4)

    generate_once(root, marker, lambda r: _complete(r, num_train, num_val, list(calib)), write,
                  'multi-modal scene dataset', force=force)
    return {'root': root, 'train_info': info_path(root, 'train'), 'val_info': info_path(root, 'val'),
            'marker': osp.join(root, MARKER)}


# ------------------------------------------------------------------------------ dataset / transform
class MultiModalScenesDataset(LidarScenesDataset):
    """:func:`make_multimodal_scenes`' files as an mmdet3d ``Det3DDataset``, generated on first use.

    Args:
        generate: generate under ``data_root`` first (a no-op when current).
        num_train, num_val, seed, max_objects, point_cloud_range, cameras, img_size, fov: the generator's
            arguments (the train and val datasets of one config must agree: they share the root).
        **kwargs: ``Det3DDataset``'s; defaults ``data_prefix=dict(pts='points', img='images')``,
            ``modality=dict(use_lidar=True, use_camera=True)``, ``default_cam_key`` the first camera.
    """

    def __init__(self, *args, generate: bool = True, num_train: int = 32, num_val: int = 8, seed: int = 0,
                 max_objects: int = 6, point_cloud_range: Sequence[float] = DEFAULT_RANGE,
                 cameras: Optional[dict] = None, img_size: Sequence[int] = (96, 192), fov: float = 90.0,
                 **kwargs) -> None:
        cams = dict(DEFAULT_CAMERAS if cameras is None else cameras)
        if generate:
            root = kwargs.get('data_root')
            if not root:
                raise ValueError('MultiModalScenesDataset(generate=True) needs data_root (where to generate)')
            make_multimodal_scenes(root, num_train, num_val, seed, max_objects, point_cloud_range, cams, img_size, fov)
        kwargs.setdefault('data_prefix', dict(pts='points', img='images'))
        kwargs.setdefault('modality', dict(use_lidar=True, use_camera=True))
        kwargs.setdefault('default_cam_key', next(iter(cams)))
        super().__init__(*args, generate=False, num_train=num_train, num_val=num_val, seed=seed,
                         max_objects=max_objects, point_cloud_range=point_cloud_range, **kwargs)


class BEVAugMatrix(BaseTransform):
    """Write ``results['lidar_aug_matrix']`` (4x4 float32): the BEV augmentation applied so far
    (``GlobalRotScaleTrans``: ``R``, ``S``, ``T``; ``RandomFlip3D``: ``HF`` negates y, ``VF`` negates
    x), composed in the order of ``transformation_3d_flow``, so that ``p_aug = M @ [p, 1]``.
    Identity when no augmentation ran (test pipelines)."""

    def transform(self, results: dict) -> dict:
        m = np.eye(4)
        for step in results.get('transformation_3d_flow', []):
            t = np.eye(4)
            if step == 'R':
                rot_t = results['pcd_rotation']  # points are rotated as p @ rot_mat_T
                rot_t = rot_t.cpu().numpy() if hasattr(rot_t, 'cpu') else np.asarray(rot_t)
                t[:3, :3] = np.asarray(rot_t, dtype=np.float64).T
            elif step == 'S':
                t[:3, :3] *= float(results['pcd_scale_factor'])
            elif step == 'T':
                t[:3, 3] = np.asarray(results['pcd_trans'], dtype=np.float64)
            elif step == 'HF':
                t[1, 1] = -1
            elif step == 'VF':
                t[0, 0] = -1
            else:
                raise KeyError(f'BEVAugMatrix: unknown step {step!r} in transformation_3d_flow')
            m = t @ m
        results['lidar_aug_matrix'] = m.astype(np.float32)
        return results


class MultiViewImageResize(BaseTransform):
    """Resize every view of ``results['img']`` (a list of ``[H, W, 3]``, as mmdet3d's
    ``LoadMultiViewImageFromFiles`` loads them) by ``scale`` and record it in ``img_aug_matrix``
    (``[N, 4, 4]``, ``diag(scale, scale, 1, 1)`` composed with any earlier one), so that a view
    transformer maps resized pixels back to the calibrated camera (``cam2img`` stays the original's).
    mmdet3d 1.4's core has no multi-view resize that records this (BEVFusion's ``ImageAug3D`` is a
    project, not the package)."""

    def __init__(self, scale: float):
        if not scale > 0:
            raise ValueError(f'MultiViewImageResize: scale must be > 0, got {scale}')
        self.scale = float(scale)

    def transform(self, results: dict) -> dict:
        imgs = results['img']
        resized = [cv2.resize(img, (int(round(img.shape[1] * self.scale)), int(round(img.shape[0] * self.scale))),
                              interpolation=cv2.INTER_LINEAR) for img in imgs]
        step = np.diag([self.scale, self.scale, 1.0, 1.0])
        previous = results.get('img_aug_matrix', [np.eye(4)] * len(imgs))
        results['img'] = resized
        results['img_aug_matrix'] = [(step @ np.asarray(m, dtype=np.float64)).astype(np.float32) for m in previous]
        results['img_shape'] = resized[0].shape[:2]
        results['pad_shape'] = resized[0].shape[:2]
        return results
