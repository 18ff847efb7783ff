# The pillar student alone (the baseline of sparsekd_pillar064_scenes.py): CenterPoint-Pillar with
# 0.64 m pillars (64 x 64), SECOND strides 2/2/2, FPN to stride 4: 16 x 16 heatmaps (2.56 m cells),
# half the resolution of the teacher's 32 x 32 (as SparseKD's CP-Pillar-v0.64 against its 0.32 m
# teacher), so SparseKD interpolates the student's heatmaps to the teacher's size.
_base_ = ['./_base_/centerpoint_scenes.py']

pillar_size = [0.64, 0.64, 4.0]
point_cloud_range = [-20.48, -20.48, -3.0, 20.48, 20.48, 1.0]
model = dict(
    data_preprocessor=dict(voxel_layer=dict(max_num_points=32, voxel_size=pillar_size, max_voxels=(4096, 4096))),
    pts_voxel_encoder=dict(
        _delete_=True, type='PillarFeatureNet', in_channels=4, feat_channels=(32, ), with_distance=False,
        voxel_size=pillar_size, point_cloud_range=point_cloud_range, legacy=False,
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01)),
    pts_middle_encoder=dict(_delete_=True, type='PointPillarsScatter', in_channels=32, output_shape=(64, 64)),
    pts_backbone=dict(in_channels=32, out_channels=[32, 64, 128], layer_nums=[3, 5, 5], layer_strides=[2, 2, 2]),
    pts_neck=dict(in_channels=[32, 64, 128], out_channels=[64, 64, 64], upsample_strides=[0.5, 1, 2]),
    pts_bbox_head=dict(in_channels=192, share_conv_channel=64,
                       bbox_coder=dict(out_size_factor=4, voxel_size=pillar_size[:2])),
    train_cfg=dict(pts=dict(grid_size=[64, 64, 1], voxel_size=pillar_size, out_size_factor=4)),
    test_cfg=dict(pts=dict(out_size_factor=4, voxel_size=pillar_size[:2])))
