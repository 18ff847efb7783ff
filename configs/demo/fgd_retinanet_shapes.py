# FGD (focal and global distillation) on the generated shapes data: RetinaNet R50 teacher ->
# RetinaNet R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation (compare with fitnet_retinanet_shapes.py).
_base_ = ['./retinanet_r18_shapes.py']

# The teacher's last checkpoint (its config keeps one, epoch_12.pth, plus last_checkpoint).
__teacher_checkpoint = 'work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth'

# FGD's inheriting strategy: the student's neck and head start from the teacher's, through
# mmengine's Pretrained init (applied inside init_weights(), so it survives it). The R18 FPN's
# lateral convs and its P6 conv (fpn_convs.3, on C5) take 128..512 input channels where the R50's
# take 512..2048: those keys do not fit and keep their default init (mmengine logs the size
# mismatches); the other output convs and the whole head load.
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    teacher_checkpoint=__teacher_checkpoint,
    # the official one-stage (RetinaNet) hyper-parameters on P3-P7: temp 0.5, alpha 1e-3,
    # beta 5e-4, gamma 5e-4, lambda 5e-6 (see plugins/detection/fgd.py)
    distiller=dict(type='FGD', preset='one_stage', student_channels=256, teacher_channels=256,
                   num_levels=5))
