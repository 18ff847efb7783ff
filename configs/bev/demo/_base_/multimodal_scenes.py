# The generated multi-modal scenes (kdtoolbox.MultiModalScenesDataset: LiDAR points + two camera images
# of the same car / pedestrian / cyclist boxes, with cam2img / lidar2cam): the data of the cross-modal
# BEV demos. Written under data_root on first use (no download). The BEV grid in front of the vehicle:
# x in [0, 25.6], y in [-12.8, 12.8] m, 64 x 64 cells of 0.4 m, shared by the LiDAR teacher and the
# camera student. Evaluation: mmdet3d's IndoorMetric (3D box AP at IoU 0.25 / 0.5, CPU).
_base_ = ['mmdet3d::_base_/default_runtime.py']

default_scope = 'mmdet3d'
dataset_type = 'kdtoolbox.MultiModalScenesDataset'
data_root = 'data/multimodal_scenes/'
class_names = ['car', 'pedestrian', 'cyclist']
point_cloud_range = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
bev_cell = 0.4  # metres: 64 x 64 BEV cells over the range
cameras = dict(CAM_FRONT_LEFT=35.0, CAM_FRONT_RIGHT=-35.0)  # yaw in degrees, 90 degree field of view
img_size = (96, 192)  # (H, W)
# The generator's arguments: train and val share the folder, so keep them identical.
scene_args = dict(num_train=32, num_val=8, seed=0, max_objects=6, point_cloud_range=point_cloud_range,
                  cameras=cameras, img_size=img_size)
metainfo = dict(classes=class_names)
input_modality = dict(use_lidar=True, use_camera=True)
backend_args = None
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'lidar2img', 'cam2img', 'pad_shape', 'lidar2cam',
             'num_views', 'box_mode_3d', 'box_type_3d', 'sample_idx', 'lidar_path', 'num_pts_feats',
             'pcd_horizontal_flip', 'pcd_vertical_flip', 'pcd_trans', 'pcd_scale_factor', 'pcd_rotation',
             'pcd_rotation_angle', 'transformation_3d_flow', 'lidar_aug_matrix')

# BEV augmentation on points and boxes; BEVAugMatrix records it for the camera student, whose images
# stay as captured (loaded after the 3-D augmentations, so RandomFlip3D does not flip them as 2-D
# images). No vertical flip: the grid covers the front only, x -> -x would leave it. No GT sampling
# (pasted objects would not be in the images).
train_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.2, 0.2], scale_ratio_range=[0.95, 1.05],
         translation_std=[0, 0, 0]),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.0),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='kdtoolbox.BEVAugMatrix'),
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=len(cameras), backend_args=backend_args),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d'], meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='kdtoolbox.BEVAugMatrix'),
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=len(cameras), backend_args=backend_args),
    dict(type='Pack3DDetInputs', keys=['points', 'img'], meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='multimodal_scenes_infos_train.pkl',
        pipeline=train_pipeline, metainfo=metainfo, modality=input_modality, box_type_3d='LiDAR',
        test_mode=False, backend_args=backend_args, **scene_args))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='multimodal_scenes_infos_val.pkl',
        pipeline=test_pipeline, metainfo=metainfo, modality=input_modality, box_type_3d='LiDAR',
        test_mode=True, backend_args=backend_args, with_velocity=False, **scene_args))
test_dataloader = val_dataloader
# CenterHead predicts 9-value boxes (with the zero velocity it is trained on): LidarBoxAPMetric (mmdet3d's IndoorMetric) cuts predicted and GT boxes to 7 values (velocity dropped) first.
val_evaluator = dict(type='kdtoolbox.LidarBoxAPMetric', iou_thr=[0.25, 0.5])
test_evaluator = val_evaluator

max_epochs = 20
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=16),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(logger=dict(type='LoggerHook', interval=8),
                     checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1),
                     visualization=dict(type='Det3DVisualizationHook', draw=False))
log_processor = dict(type='LogProcessor', window_size=8, by_epoch=True)
# nccl for CUDA runs; without CUDA, tools/train.py initialises gloo itself (kdtoolbox.engine.distributed)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
