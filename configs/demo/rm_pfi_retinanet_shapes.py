# Rank Mimicking + Prediction-guided Feature Imitation on the generated shapes data: RetinaNet R50
# teacher -> RetinaNet R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation. type='RankMimicking' or type='PFI' runs one of the two.
_base_ = ['./retinanet_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    # the teacher's last checkpoint (its config keeps one, epoch_12.pth, plus last_checkpoint)
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth',
    # the prototype's weights (RM 4, PFI 1.5), T = 1; anchors and assigner from the student's head
    distiller=dict(type='RankMimicPFI', rm_weight=4.0, pfi_weight=1.5, temperature=1.0,
                   student_channels=256, teacher_channels=256))
