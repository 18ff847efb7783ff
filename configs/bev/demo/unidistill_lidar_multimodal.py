# UniDistill (CVPR 2023) between two LiDAR detectors on the generated multi-modal scenes (the
# LiDAR -> LiDAR path): the CenterPoint-Pillar teacher into a half-width CenterPoint-Pillar student on
# the same 64 x 64 grid. Low-level maps are both pillar scatters (32 -> 64 channels: a 1x1 adapter).
_base_ = ['./_base_/multimodal_distill.py']

model = dict(
    _delete_=True,  # not the camera student of the base
    type='kdtoolbox.DistillationModel',
    student={{_base_.lidar_student_model}},
    teacher={{_base_.teacher_model}},
    teacher_checkpoint='work_dirs/multimodal_centerpoint_pillar_teacher',
    teacher_preprocessor='teacher',
    teacher_mode='loss',
    distiller=dict(type='UniDistill', student_low='pts_middle_encoder', teacher_low='pts_middle_encoder',
                   student_high='pts_neck', teacher_high='pts_neck', student_low_channels=32,
                   teacher_low_channels=64))
