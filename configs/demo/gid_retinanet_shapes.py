# GID (general instance distillation) on the generated shapes data: RetinaNet R50 teacher ->
# RetinaNet R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation. The hyper-parameters are the official ones (see
# configs/gid_retinanet.py and plugins/detection/gid.py); the shapes are 30-100 px in 256 px images,
# so the 10 px minimum GI side and the P3-P7 RoI levels need no change.
_base_ = ['./retinanet_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    # a work dir: its latest checkpoint is used
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher',
    distiller=dict(
        type='GID',
        student_channels=256, teacher_channels=256,
        nms_pre=3000, nms_iou=0.3, num_instances=10, min_box_size=10,
        loss_weight_feature=5e-4, loss_weight_relation=40, loss_weight_cls=0.1, loss_weight_reg=1.0,
        reg_beta=0.1))
