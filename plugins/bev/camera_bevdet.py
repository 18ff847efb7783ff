"""CameraBEVDet: a compact lift-splat camera BEV detector (the student of the cross-modal distillers).

mmdet3d 1.4 ships no camera BEV detector of this kind; this one is assembled from upstream parts:

- ``img_backbone`` / ``img_neck``: mmdet's (e.g. ``mmdet.ResNet`` depth 18 + ``mmdet.FPN``), run on the
  ``B * N`` camera images of the batch (``inputs['imgs']`` ``[B, N, 3, H, W]`` from mmdet3d's
  ``Det3DDataPreprocessor``); level ``img_level`` of the neck is lifted;
- ``view_transform``: :class:`~kdtoolbox_plugins.bev.camera_lss.LSSViewTransformer` onto the grid of
  the LiDAR teacher (``[B, C, H, W]``, rows = y, columns = x), with the calibration (``cam2img``,
  ``lidar2cam``) and the BEV augmentation (``lidar_aug_matrix``) read from each data sample;
- ``bev_backbone`` / ``bev_neck``: mmdet3d's ``SECOND`` / ``SECONDFPN`` (as the teacher's, so the
  taps line up);
- ``bbox_head``: mmdet3d's ``CenterHead`` (its ``train_cfg`` / ``test_cfg`` are this model's, not
  nested under ``pts``).

Modes: ``loss`` (CenterHead's losses), ``predict`` (``pred_instances_3d`` on each data sample, as
mmdet3d's detectors) and ``tensor`` (the head's raw outputs).
"""
from __future__ import annotations

from typing import Optional

from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS as MMDET3D_MODELS

from .camera_lss import LSSViewTransformer


class CameraBEVDet(Base3DDetector):
    """Camera images -> LSS BEV -> BEV backbone/neck -> CenterHead (module docstring).

    Args:
        img_backbone, img_neck, bev_backbone, bev_neck, bbox_head: model configs (mmdet3d registry).
        view_transform: :class:`LSSViewTransformer` arguments (``type`` optional).
        img_level: which neck output is lifted (0: the finest).
        train_cfg, test_cfg: the CenterHead's (``grid_size``, ``voxel_size``, ``out_size_factor``,
            ``point_cloud_range``, ...).
    """

    def __init__(self, img_backbone: dict, img_neck: dict, view_transform: dict, bev_backbone: dict,
                 bev_neck: dict, bbox_head: dict, img_level: int = 0, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, data_preprocessor: Optional[dict] = None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MMDET3D_MODELS.build(img_backbone)
        self.img_neck = MMDET3D_MODELS.build(img_neck)
        vt = dict(view_transform)
        vt.pop('type', None)
        self.view_transform = LSSViewTransformer(**vt)
        self.bev_backbone = MMDET3D_MODELS.build(bev_backbone)
        self.bev_neck = MMDET3D_MODELS.build(bev_neck)
        head = dict(bbox_head)
        head.update(train_cfg=train_cfg, test_cfg=test_cfg)
        self.bbox_head = MMDET3D_MODELS.build(head)
        self.img_level = img_level
        self.train_cfg, self.test_cfg = train_cfg, test_cfg

    def extract_feat(self, batch_inputs_dict: dict, batch_input_metas: list) -> list:
        """BEV features ``[x]`` (a one-level list, as CenterHead takes them)."""
        imgs = batch_inputs_dict.get('imgs')
        if imgs is None:
            raise KeyError("CameraBEVDet: inputs['imgs'] is missing (the pipeline must load the camera images "
                           "and pack them with Pack3DDetInputs(keys=['img', ...]))")
        if imgs.dim() == 4:  # a single camera, packed without the view dimension
            imgs = imgs[:, None]
        b, n = imgs.shape[:2]
        feats = self.img_neck(self.img_backbone(imgs.flatten(0, 1)))[self.img_level]
        feats = feats.reshape(b, n, *feats.shape[1:])
        bev = self.view_transform(feats, batch_input_metas, imgs.shape[-2:])
        x = self.bev_neck(self.bev_backbone(bev))
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def loss(self, batch_inputs_dict: dict, batch_data_samples: list, **kwargs) -> dict:
        metas = [s.metainfo for s in batch_data_samples]
        return self.bbox_head.loss(self.extract_feat(batch_inputs_dict, metas), batch_data_samples)

    def predict(self, batch_inputs_dict: dict, batch_data_samples: list, **kwargs) -> list:
        metas = [s.metainfo for s in batch_data_samples]
        results = self.bbox_head.predict(self.extract_feat(batch_inputs_dict, metas), batch_data_samples)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs_dict: dict, batch_data_samples: Optional[list] = None, **kwargs):
        metas = [s.metainfo for s in batch_data_samples] if batch_data_samples else [{}]
        return self.bbox_head(self.extract_feat(batch_inputs_dict, metas))


def register(registry):
    registry.model(CameraBEVDet)

