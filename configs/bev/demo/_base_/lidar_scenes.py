# The generated LiDAR scenes (kdtoolbox.LidarScenesDataset: car / pedestrian / cyclist boxes, ground,
# clutter; mmdet3d v2 infos + .bin points): the data of the 3D demo configs. Written under data_root
# on first use (no download), or ahead of time with
#   python tools/make_lidar_dataset.py --root data/lidar_scenes
# Evaluation: kdtoolbox.LidarBoxAPMetric = mmdet3d's IndoorMetric (3D box AP at IoU 0.25 / 0.5, rotated IoU on CPU) on the LiDAR
# boxes. Brings mmdet3d's default runtime (default_scope='mmdet3d'), adapted for CPU.
_base_ = ['mmdet3d::_base_/default_runtime.py']

default_scope = 'mmdet3d'
dataset_type = 'kdtoolbox.LidarScenesDataset'
data_root = 'data/lidar_scenes/'
class_names = ['car', 'pedestrian', 'cyclist']
point_cloud_range = [-20.48, -20.48, -3.0, 20.48, 20.48, 1.0]
# The generator's arguments: train and val share the folder, so keep them identical.
scene_args = dict(num_train=64, num_val=16, seed=0, max_objects=8, point_cloud_range=point_cloud_range)
metainfo = dict(classes=class_names)
input_modality = dict(use_lidar=True, use_camera=False)
backend_args = None

train_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.3925, 0.3925], scale_ratio_range=[0.95, 1.05],
         translation_std=[0, 0, 0]),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d']),
]
test_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4, backend_args=backend_args),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points']),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # a scene loads in well under a millisecond
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='lidar_scenes_infos_train.pkl',
        data_prefix=dict(pts='points'), pipeline=train_pipeline, metainfo=metainfo,
        modality=input_modality, box_type_3d='LiDAR', test_mode=False, backend_args=backend_args,
        **scene_args))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='lidar_scenes_infos_val.pkl',
        data_prefix=dict(pts='points'), pipeline=test_pipeline, metainfo=metainfo,
        modality=input_modality, box_type_3d='LiDAR', test_mode=True, backend_args=backend_args,
        **scene_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='kdtoolbox.LidarBoxAPMetric', iou_thr=[0.25, 0.5])
test_evaluator = val_evaluator

# schedule: AdamW with a linear warm-up and cosine decay (the official SparseKD runs use Adam one-cycle,
# lr 0.003, grad-norm clip 10)
# 12 epochs of 16 iterations (batch 4): about 2 s an iteration for the teacher on 2 CPU cores
max_epochs = 12
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=32),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# CPU-friendly runtime
default_hooks = dict(logger=dict(type='LoggerHook', interval=8),
                     checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1),
                     visualization=dict(type='Det3DVisualizationHook', draw=False))
log_processor = dict(type='LogProcessor', window_size=8, by_epoch=True)
# nccl for CUDA runs; without CUDA, tools/train.py initialises gloo itself (kdtoolbox.engine.distributed)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
