# UniDistill (CVPR 2023), LiDAR CenterPoint-Pillar -> camera CameraBEVDet on the generated multi-modal
# scenes: keypoint feature L1 on the low-level BEV (LSS output 64 ch vs pillar scatter 64 ch), keypoint
# relation L1 on the BEV neck outputs, Gaussian-masked response L1 on the CenterHead outputs.
_base_ = ['./_base_/multimodal_distill.py']

model = dict(distiller=dict(
    type='UniDistill', student_low='view_transform', teacher_low='pts_middle_encoder',
    student_high='bev_neck', teacher_high='pts_neck'))
