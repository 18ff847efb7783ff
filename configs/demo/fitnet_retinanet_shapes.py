# FitNet hint distillation on the generated shapes data: RetinaNet R50 teacher -> RetinaNet R18
# student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation.
_base_ = ['./retinanet_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    # a work dir: its latest checkpoint is used
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher',
    distiller=dict(type='FitNet', student_channels=256, teacher_channels=256, num_levels=5,
                   loss_weight=1.0, reduction='mean'))
