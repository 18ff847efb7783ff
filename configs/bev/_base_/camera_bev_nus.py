# LiDAR -> camera BEV distillation on nuScenes in mmdet3d 1.4 terms: the data (points with 9 sweeps for
# the LiDAR teacher, the 6 camera images for the student, from mmdet3d's nuScenes v2 infos), the
# camera student (kdtoolbox.CameraBEVDet: ResNet-50 + FPN, LSS with BEVDet's depth bins 1-60 m / 0.5 m,
# SECOND + SECONDFPN, the nuScenes CenterHead with 6 tasks) on the teacher's grid, and the runtime.
# Paper configs set the teacher, its checkpoint and the distiller (and the student's grid when the
# teacher's differs from the default).
# The student's BEV is built on the grid given here (default: CenterPoint voxel 0.1 x stride 8 =
# 0.8 m cells, 128 x 128 over [-51.2, 51.2]^2); a teacher on another grid is refused by the distillers.
_base_ = ['mmdet3d::_base_/datasets/nus-3d.py', 'mmdet3d::_base_/schedules/cyclic-20e.py',
          'mmdet3d::_base_/default_runtime.py']

point_cloud_range = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
bev_cell = 0.8
bev_size = 128
class_names = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
metainfo = dict(classes=class_names)
cameras = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
data_root = 'data/nuscenes/'
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in cameras})
input_modality = dict(use_lidar=True, use_camera=True)
backend_args = None
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'lidar2img', 'cam2img', 'pad_shape', 'lidar2cam', 'num_views',
             'box_mode_3d', 'box_type_3d', 'sample_idx', 'lidar_path', 'num_pts_feats', 'pcd_horizontal_flip',
             'pcd_vertical_flip', 'pcd_trans', 'pcd_scale_factor', 'pcd_rotation', 'pcd_rotation_angle',
             'transformation_3d_flow', 'lidar_aug_matrix', 'img_aug_matrix')
# 1600 x 900 images resized by 0.44 (704 x 396, BEVDet's input width); BEV augmentation on points and
# boxes recorded for the student (BEVAugMatrix); no GT sampling (pasted objects are not in the images).
img_scale = 0.44
train_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5, backend_args=backend_args),
    dict(type='LoadPointsFromMultiSweeps', sweeps_num=9, use_dim=[0, 1, 2, 3, 4], pad_empty_sweeps=True,
         remove_close=True, backend_args=backend_args),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.3925, 0.3925], scale_ratio_range=[0.95, 1.05],
         translation_std=[0, 0, 0]),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='kdtoolbox.BEVAugMatrix'),
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6, backend_args=backend_args),
    dict(type='kdtoolbox.MultiViewImageResize', scale=img_scale),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d'], meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=5, use_dim=5, backend_args=backend_args),
    dict(type='LoadPointsFromMultiSweeps', sweeps_num=9, use_dim=[0, 1, 2, 3, 4], pad_empty_sweeps=True,
         remove_close=True, backend_args=backend_args),
    dict(type='kdtoolbox.BEVAugMatrix'),
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, num_views=6, backend_args=backend_args),
    dict(type='kdtoolbox.MultiViewImageResize', scale=img_scale),
    dict(type='Pack3DDetInputs', keys=['points', 'img'], meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=4, num_workers=4,
    dataset=dict(_delete_=True, type='NuScenesDataset', data_root=data_root, ann_file='nuscenes_infos_train.pkl',
                 pipeline=train_pipeline, metainfo=metainfo, modality=input_modality, test_mode=False,
                 data_prefix=data_prefix, box_type_3d='LiDAR', backend_args=backend_args))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, metainfo=metainfo, modality=input_modality,
                                   data_prefix=data_prefix))
test_dataloader = val_dataloader

center_tasks = [
    dict(num_class=1, class_names=['car']),
    dict(num_class=2, class_names=['truck', 'construction_vehicle']),
    dict(num_class=2, class_names=['bus', 'trailer']),
    dict(num_class=1, class_names=['barrier']),
    dict(num_class=2, class_names=['motorcycle', 'bicycle']),
    dict(num_class=2, class_names=['pedestrian', 'traffic_cone'])]
student_model = dict(
    type='kdtoolbox.CameraBEVDet',
    data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    img_backbone=dict(type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
                      init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    img_neck=dict(type='mmdet.FPN', in_channels=[512, 1024, 2048], out_channels=256, num_outs=3),
    img_level=1,  # stride 16
    view_transform=dict(in_channels=256, out_channels=80, depth_bins=(1.0, 60.0, 0.5),
                        grid=dict(point_cloud_range=point_cloud_range, voxel_size=[bev_cell, bev_cell, 8.0])),
    bev_backbone=dict(type='SECOND', in_channels=80, out_channels=[128, 256], layer_nums=[5, 5], layer_strides=[1, 2],
                      norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), conv_cfg=dict(type='Conv2d', bias=False)),
    bev_neck=dict(type='SECONDFPN', in_channels=[128, 256], out_channels=[256, 256], upsample_strides=[1, 2],
                  norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), upsample_cfg=dict(type='deconv', bias=False),
                  use_conv_for_no_stride=True),
    bbox_head=dict(
        type='CenterHead', in_channels=512, tasks=center_tasks,
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)), share_conv_channel=64,
        bbox_coder=dict(type='CenterPointBBoxCoder', post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
                        max_num=500, score_threshold=0.1, out_size_factor=1, voxel_size=[bev_cell, bev_cell],
                        pc_range=point_cloud_range[:2], code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25), norm_bbox=True),
    train_cfg=dict(grid_size=[bev_size, bev_size, 1], voxel_size=[bev_cell, bev_cell, 8.0],
                   point_cloud_range=point_cloud_range, out_size_factor=1, dense_reg=1, gaussian_overlap=0.1,
                   max_objs=500, min_radius=2, code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2]),
    test_cfg=dict(post_center_limit_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0], max_per_img=500,
                  max_pool_nms=False, min_radius=[4, 12, 10, 1, 0.85, 0.175], score_threshold=0.1,
                  out_size_factor=1, voxel_size=[bev_cell, bev_cell], pc_range=point_cloud_range[:2],
                  nms_type='rotate', pre_max_size=1000, post_max_size=83, nms_thr=0.2))

model = dict(type='kdtoolbox.DistillationModel', student=student_model, teacher_preprocessor='teacher',
             teacher_mode='loss')  # mmdet3d's CenterPoint has no tensor mode; it stops after its head

# AdamW 2e-4, 24 epochs, cosine, gradient clip 35 (BEVDistill's schedule; DistillBEV clips at 5)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.01),
                     paramwise_cfg=dict(custom_keys={'student.img_backbone': dict(lr_mult=0.1)}),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=24, eta_min=2e-7, by_epoch=True, begin=0, end=24)]
train_cfg = dict(by_epoch=True, max_epochs=24, val_interval=24)
