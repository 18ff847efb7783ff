# FRS (feature richness score) on the generated shapes data: RetinaNet R50 teacher -> RetinaNet
# R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation.
_base_ = ['./retinanet_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    # the teacher's last checkpoint (its config keeps one, epoch_12.pth, plus last_checkpoint)
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth',
    # the official RetinaNet weights (feat 0.005, cls 0.02) on P3-P7, 3x3 adapters
    distiller=dict(type='FRS', preset='retinanet', student_channels=256, teacher_channels=256))

# The official linear warm-up is 500 iterations; this demo trains 192 in all, so it ramps over 50
# (the length of its learning-rate warm-up).
custom_hooks = [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=50, warmup_mode='linear')]
