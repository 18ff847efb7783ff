# CenterPoint (mmdet3d: hard voxels, SparseEncoder, SECOND + SECONDFPN, CenterHead) sized for the
# generated LiDAR scenes: 0.16 m voxels over [-20.48, 20.48]^2 x [-3, 1] (256 x 256 x 40), BEV stride 8
# (32 x 32 heatmaps, 1.28 m cells), one task with the three classes (as SparseKD's Waymo heads).
# `width` scales every channel count (the teacher is width 1; SparseKD's narrower students < 1).
_base_ = ['./lidar_scenes.py']

voxel_size = [0.16, 0.16, 0.1]
point_cloud_range = [-20.48, -20.48, -3.0, 20.48, 20.48, 1.0]
width = 1.0


def _w(c):
    return int(round(c * width))


model = dict(
    type='CenterPoint',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor', voxel=True,
        voxel_layer=dict(max_num_points=10, voxel_size=voxel_size, point_cloud_range=point_cloud_range,
                         max_voxels=(16000, 16000))),
    pts_voxel_encoder=dict(type='HardSimpleVFE', num_features=4),
    pts_middle_encoder=dict(
        type='SparseEncoder', in_channels=4, sparse_shape=[41, 256, 256], base_channels=_w(16),
        output_channels=_w(128),
        order=('conv', 'norm', 'act'),
        # SECOND's KITTI encoder layout (one SubMConv then strided SparseConv + SubMConvs per stage):
        # half the CPU time of the nuScenes 'basicblock' layout at this size
        encoder_channels=((_w(16), ), (_w(32), _w(32), _w(32)), (_w(64), _w(64), _w(64)), (_w(64), _w(64), _w(64))),
        encoder_paddings=((1, ), (1, 1, 1), (1, 1, 1), ((0, 1, 1), 1, 1)),
        block_type='conv_module'),
    pts_backbone=dict(
        type='SECOND', in_channels=_w(128) * 2, out_channels=[_w(64), _w(128)], layer_nums=[3, 3],
        layer_strides=[1, 2], norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        conv_cfg=dict(type='Conv2d', bias=False)),
    pts_neck=dict(
        type='SECONDFPN', in_channels=[_w(64), _w(128)], out_channels=[_w(128), _w(128)],
        upsample_strides=[1, 2], norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        upsample_cfg=dict(type='deconv', bias=False), use_conv_for_no_stride=True),
    pts_bbox_head=dict(
        type='CenterHead', in_channels=_w(128) * 2,
        tasks=[dict(num_class=3, class_names=['car', 'pedestrian', 'cyclist'])],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
        share_conv_channel=_w(64),
        bbox_coder=dict(type='CenterPointBBoxCoder', pc_range=point_cloud_range[:2],
                        post_center_range=[-25, -25, -5, 25, 25, 3], max_num=100,
                        score_threshold=0.1, out_size_factor=8, voxel_size=voxel_size[:2], code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
        norm_bbox=True),
    train_cfg=dict(pts=dict(
        grid_size=[256, 256, 40], voxel_size=voxel_size, point_cloud_range=point_cloud_range, out_size_factor=8,
        dense_reg=1, gaussian_overlap=0.1, max_objs=100, min_radius=2,
        code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])),  # zero velocity: not learnt
    test_cfg=dict(pts=dict(
        post_center_limit_range=[-25, -25, -5, 25, 25, 3], max_per_img=100, max_pool_nms=False,
        min_radius=[4, 0.85, 0.85], score_threshold=0.1, out_size_factor=8, voxel_size=voxel_size[:2],
        nms_type='rotate', pre_max_size=500, post_max_size=50, nms_thr=0.2)))
