# BEVDistill (ICLR 2023), LiDAR CenterPoint-Pillar -> camera CameraBEVDet on the generated multi-modal
# scenes: dense BEV loss under the Gaussian foreground mask, instance InfoNCE at the student's peaks,
# teacher-box L1 at the teacher's peaks, on the BEV neck outputs (96 -> 128 channels).
_base_ = ['./_base_/multimodal_distill.py']

model = dict(distiller=dict(
    type='BEVDistill', student_channels=96, teacher_channels=128, student_bev='bev_neck', teacher_bev='pts_neck',
    num_instances=32, mid_channels=128, max_teacher_boxes=50))
