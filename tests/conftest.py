"""Shared test helpers: tiny real mmdet models and hand-made detection batches."""
from __future__ import annotations

import copy
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable


def retinanet_cfg(depth: int = 18, num_classes: int = 3) -> dict:
    """An mmdet RetinaNet (ResNet-``depth`` + FPN) model dict, randomly initialised (no download)."""
    in_channels = [64, 128, 256, 512] if depth in (18, 34) else [256, 512, 1024, 2048]
    return dict(
        type='RetinaNet',
        _scope_='mmdet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=depth, num_stages=4, out_indices=(0, 1, 2, 3),
                      frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                      style='pytorch', init_cfg=None),
        neck=dict(type='FPN', in_channels=in_channels, out_channels=64, start_level=1,
                  add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=num_classes, in_channels=64, stacked_convs=1, feat_channels=64,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20))


def faster_rcnn_cfg(depth: int = 18, channels: int = 32, num_classes: int = 3,
                    proposals_train=(200, 100), proposals_test=(200, 100)) -> dict:
    """A tiny mmdet Faster R-CNN (ResNet-``depth`` + FPN P2-P6, RPN, StandardRoIHead), no download.

    ``proposals_train`` / ``proposals_test``: the RPN's (nms_pre, max_per_img) in training / test.
    """
    in_channels = [64, 128, 256, 512] if depth in (18, 34) else [256, 512, 1024, 2048]
    nms = dict(type='nms', iou_threshold=0.7)
    return dict(
        type='FasterRCNN', _scope_='mmdet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
                      init_cfg=None),
        neck=dict(type='FPN', in_channels=in_channels, out_channels=channels, num_outs=5),
        rpn_head=dict(type='RPNHead', in_channels=channels, feat_channels=channels,
                      anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                            strides=[4, 8, 16, 32, 64]),
                      bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                    out_channels=channels, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=channels, fc_out_channels=64, roi_feat_size=7,
                           num_classes=num_classes,
                           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           reg_class_agnostic=False,
                           loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                           loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                                   match_low_quality=True, ignore_iof_thr=-1),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5, neg_pos_ub=-1,
                                  add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=proposals_train[0], max_per_img=proposals_train[1], nms=nms,
                              min_bbox_size=0),
            rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                    match_low_quality=False, ignore_iof_thr=-1),
                      sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25, neg_pos_ub=-1,
                                   add_gt_as_proposals=True),
                      pos_weight=-1, debug=False)),
        test_cfg=dict(rpn=dict(nms_pre=proposals_test[0], max_per_img=proposals_test[1], nms=nms,
                               min_bbox_size=0),
                      rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=20)))


def make_det_batch(n: int = 2, size: int = 128, boxes=None, seed: int = 0):
    """A preprocessed batch ``[n, 3, size, size]`` and DetDataSamples with GT boxes (xyxy, pixels)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, size, size, generator=g)
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                                        batch_input_shape=(size, size), scale_factor=(1.0, 1.0), img_id=i))
        b = torch.tensor(boxes if boxes is not None else [[10., 20., 60., 90.], [70., 30., 120., 100.]])
        s.gt_instances = InstanceData(bboxes=b.reshape(-1, 4), labels=torch.arange(len(b.reshape(-1, 4))) % 3)
        samples.append(s)
    return inputs, samples


@pytest.fixture
def det_batch():
    return make_det_batch()


@pytest.fixture(autouse=True)
def _mmdet_scope():
    """Tests build mmdet models by name, as a config with default_scope='mmdet' does."""
    from mmengine.registry import DefaultScope
    import kdtoolbox  # noqa: F401
    name = 'kdtoolbox-tests'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmdet')
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def distill_model_cfg(distiller: dict, **kwargs) -> dict:
    cfg = dict(type='kdtoolbox.DistillationModel', student=retinanet_cfg(18), teacher=retinanet_cfg(34),
               distiller=distiller)
    cfg.update(kwargs)
    return copy.deepcopy(cfg)


def fitnet_cfg(**kwargs) -> dict:
    return dict(type='FitNet', student_channels=64, teacher_channels=64, num_levels=5, **kwargs)
