# Mimic (RoI feature mimic, CVPR 2017) on the generated shapes data: Faster R-CNN R50 teacher ->
# Faster R-CNN R18 student, on CPU. Train the teacher first:
#   python tools/train.py configs/demo/faster_rcnn_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (faster_rcnn_r18_shapes.py), so the
# two runs differ only by distillation.
_base_ = ['./faster_rcnn_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='{{fileDirname}}/faster_rcnn_r50_shapes_teacher.py',
    # a work dir: its latest checkpoint is used
    teacher_checkpoint='work_dirs/faster_rcnn_r50_shapes_teacher',
    # The student's RPN proposals (its train_cfg.rpn_proposal: up to 300 per image here), cropped
    # 7x7 by RoIAlign on P2-P5 of both necks, a 1x1 adapter 256 -> 256, weight 1 (the paper's).
    distiller=dict(type='Mimic', proposals='student', student_channels=256, teacher_channels=256,
                   loss_weight=1.0))
