# The two models of the cross-modal demos (configs pick them as {{_base_.teacher_model}} /
# {{_base_.student_model}}; no `model` here).
#
# teacher_model, the LiDAR teacher: CenterPoint-Pillar (mmdet3d parts: hard voxels,
# PillarFeatureNet, PointPillarsScatter, SECOND + SECONDFPN, CenterHead) with 0.4 m pillars, so its
# BEV maps are on the shared 64 x 64 grid at stride 1 (no sparse convolution: cheap on CPU; the
# pillar CenterPoint is also DistillBEV's teacher). One task with the three classes.
_base_ = ['./multimodal_scenes.py']

pillar_size = [0.4, 0.4, 4.0]
point_cloud_range = [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
center_head = dict(
    type='CenterHead', in_channels=128,
    tasks=[dict(num_class=3, class_names=['car', 'pedestrian', 'cyclist'])],
    common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
    share_conv_channel=64,
    bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=point_cloud_range[:2],
                    post_center_range=[-5, -18, -5, 31, 18, 3], max_num=100, score_threshold=0.1,
                    out_size_factor=1, voxel_size=pillar_size[:2], code_size=9),
    separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
    loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
    loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
    norm_bbox=True)
head_train_cfg = dict(
    grid_size=[64, 64, 1], voxel_size=pillar_size, point_cloud_range=point_cloud_range, out_size_factor=1,
    dense_reg=1, gaussian_overlap=0.1, max_objs=100, min_radius=2,
    code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # zero velocity: not learnt
head_test_cfg = dict(
    post_center_limit_range=[-5, -18, -5, 31, 18, 3], max_per_img=100, max_pool_nms=False,
    min_radius=[4, 0.85, 0.85], score_threshold=0.1, out_size_factor=1, voxel_size=pillar_size[:2],
    nms_type='rotate', pre_max_size=500, post_max_size=50, nms_thr=0.2)
teacher_model = dict(
    type='CenterPoint',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor', voxel=True,
        voxel_layer=dict(max_num_points=32, voxel_size=pillar_size, point_cloud_range=point_cloud_range,
                         max_voxels=(4096, 4096))),
    pts_voxel_encoder=dict(
        type='PillarFeatureNet', in_channels=4, feat_channels=(64, ), with_distance=False,
        voxel_size=pillar_size, point_cloud_range=point_cloud_range, legacy=False,
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01)),
    pts_middle_encoder=dict(type='PointPillarsScatter', in_channels=64, output_shape=(64, 64)),
    pts_backbone=dict(
        type='SECOND', in_channels=64, out_channels=[64, 128], layer_nums=[2, 2], layer_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), conv_cfg=dict(type='Conv2d', bias=False)),
    pts_neck=dict(
        type='SECONDFPN', in_channels=[64, 128], out_channels=[64, 64], upsample_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), upsample_cfg=dict(type='deconv', bias=False),
        use_conv_for_no_stride=True),
    pts_bbox_head=center_head,
    train_cfg=dict(pts=head_train_cfg),
    test_cfg=dict(pts=head_test_cfg))

# student_model, the camera student: kdtoolbox.CameraBEVDet = mmdet ResNet-18 + FPN on the two 96 x 192
# images, a lift-splat view transformer (35 depth bins of 1 m) onto the teacher's 64 x 64 grid (0.4 m
# cells), SECOND + SECONDFPN narrower than the teacher's (96 BEV channels against 128) and the same
# CenterHead.
student_model = dict(
    type='kdtoolbox.CameraBEVDet',
    data_preprocessor=dict(type='Det3DDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    img_backbone=dict(type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch',
                      init_cfg=None),
    img_neck=dict(type='mmdet.FPN', in_channels=[128, 256, 512], out_channels=64, num_outs=3),
    img_level=0,  # stride 8: 12 x 24 feature pixels per image
    view_transform=dict(in_channels=64, out_channels=64, depth_bins=(1.0, 36.0, 1.0),
                        grid=dict(point_cloud_range=point_cloud_range, voxel_size=pillar_size)),
    bev_backbone=dict(
        type='SECOND', in_channels=64, out_channels=[32, 64], layer_nums=[2, 2], layer_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), conv_cfg=dict(type='Conv2d', bias=False)),
    bev_neck=dict(
        type='SECONDFPN', in_channels=[32, 64], out_channels=[48, 48], upsample_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01), upsample_cfg=dict(type='deconv', bias=False),
        use_conv_for_no_stride=True),
    bbox_head=dict(center_head, in_channels=96),
    train_cfg=head_train_cfg,
    test_cfg=head_test_cfg)

# lidar_student_model, a LiDAR student for the LiDAR -> LiDAR path (UniDistill): the teacher at half width
# (pillar features 32, SECOND 32 / 64, neck 64 channels) on the same grid.
lidar_student_model = dict(
    teacher_model,
    pts_voxel_encoder=dict(teacher_model['pts_voxel_encoder'], feat_channels=(32, )),
    pts_middle_encoder=dict(type='PointPillarsScatter', in_channels=32, output_shape=(64, 64)),
    pts_backbone=dict(teacher_model['pts_backbone'], in_channels=32, out_channels=[32, 64]),
    pts_neck=dict(teacher_model['pts_neck'], in_channels=[32, 64], out_channels=[32, 32]),
    pts_bbox_head=dict(center_head, in_channels=64))
