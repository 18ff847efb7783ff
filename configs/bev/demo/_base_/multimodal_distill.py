# What every LiDAR -> camera distillation demo shares: the camera student, the LiDAR teacher (its own
# data preprocessor voxelises the same augmented points the student's images show), the teacher's
# checkpoint from its demo run (python tools/train.py configs/bev/demo/multimodal_centerpoint_pillar_teacher.py).
# The teacher runs in 'loss' mode (mmdet3d's MVX detectors have no tensor mode); it stops right after its
# CenterHead's forward, before any loss is computed.
_base_ = ['./multimodal_models.py']

model = dict(
    type='kdtoolbox.DistillationModel',
    student={{_base_.student_model}},
    teacher={{_base_.teacher_model}},
    teacher_checkpoint='work_dirs/multimodal_centerpoint_pillar_teacher',
    teacher_preprocessor='teacher',
    teacher_mode='loss',
    distiller=dict())  # each demo sets its distiller
