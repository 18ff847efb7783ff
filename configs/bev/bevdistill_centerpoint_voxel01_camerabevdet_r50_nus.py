# BEVDistill (Chen et al., ICLR 2023) on nuScenes in mmdet3d 1.4 terms: the LiDAR teacher is mmdet3d's
# CenterPoint voxel 0.1 (128 x 128 BEV at 0.8 m, SECONDFPN 512 channels: the grid of the official
# ObjectDGCNN teacher's FPN level 0), the student kdtoolbox.CameraBEVDet R50 on the same grid (the
# official student is BEVFormer-R50, which mmdet3d 1.4 does not ship; see plugins/bev/bevdistill.py for
# what differs). Official weights: dense 0.01, instance InfoNCE 0.2 (T 0.07, 512-d heads), boxes 0.25
# on the top 50 teacher boxes. Teacher checkpoint: mmdet3d's model zoo (configs/centerpoint/README.md).
_base_ = ['./_base_/camera_bev_nus.py']

model = dict(
    teacher='mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py',
    teacher_checkpoint='checkpoints/centerpoint_01voxel_second_secfpn_circlenms_4x8_cyclic_20e_nus.pth',
    distiller=dict(type='BEVDistill', student_channels=512, teacher_channels=512, student_bev='bev_neck',
                   teacher_bev='pts_neck', bev_weight=0.01, instance_weight=0.2, box_weight=0.25,
                   num_instances=300, mid_channels=512, temperature=0.07, max_teacher_boxes=50))
