# UniDistill (Zhou et al., CVPR 2023), LiDAR -> camera path, on nuScenes in mmdet3d 1.4 terms: the
# teacher is mmdet3d's CenterPoint voxel 0.075 (180 x 180 BEV at 0.6 m over [-54, 54]^2: the official
# shared grid), the student kdtoolbox.CameraBEVDet R50 lifted onto the same grid (the official camera
# branch is a BEVFusion-style LSS with the same 0.6 m cells). Low level: LSS output (80 ch) vs the
# teacher's SparseEncoder output (256 ch): a 1x1 adapter (the official branches both have 256 ch);
# high level: the BEV neck outputs (512 ch); response: the CenterHead outputs. Weights 100 / 40 / 10.
_base_ = ['./_base_/camera_bev_nus.py']

# The student on the teacher's grid. The data pipeline's range filters stay at the base's 51.2 m
# (nuScenes evaluates detections within 50 m).
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
model = dict(
    student=dict(
        view_transform=dict(grid=dict(point_cloud_range=point_cloud_range, voxel_size=[0.6, 0.6, 8.0])),
        bbox_head=dict(bbox_coder=dict(voxel_size=[0.6, 0.6], pc_range=point_cloud_range[:2])),
        train_cfg=dict(grid_size=[180, 180, 1], voxel_size=[0.6, 0.6, 8.0], point_cloud_range=point_cloud_range),
        test_cfg=dict(voxel_size=[0.6, 0.6], pc_range=point_cloud_range[:2])),
    teacher='mmdet3d::centerpoint/centerpoint_voxel0075_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py',
    teacher_checkpoint='checkpoints/centerpoint_0075voxel_second_secfpn_circlenms_4x8_cyclic_20e_nus.pth',
    distiller=dict(type='UniDistill', student_low='view_transform', teacher_low='pts_middle_encoder',
                   student_high='bev_neck', teacher_high='pts_neck', student_low_channels=80,
                   teacher_low_channels=256, feat_weight=100.0, relation_weight=40.0, response_weight=10.0))
