# PGD (prediction-guided distillation of the head towers) on the generated shapes data: RetinaNet
# R50 teacher -> RetinaNet R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation (compare with fgd_retinanet_shapes.py).
#
# The official PGD heads (GFL, ATSS, DDOD, FCOS, AutoAssign) have one prior per location; RetinaNet
# has 9 anchors per location: the PGW top-K and Gaussian run over all anchors and each location takes
# the max over its anchors' weights (see plugins/detection/pgd.py). The head's cls_convs.0 and
# reg_convs.0 (ConvModule: conv, GN, ReLU here) are the distilled features, as in GFL.
_base_ = ['./retinanet_r18_shapes.py']

# The teacher's last checkpoint (its config keeps one, epoch_12.pth, plus last_checkpoint).
__teacher_checkpoint = 'work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth'

# Inheriting strategy (official init_student=True): the student's neck and head start from the
# teacher's. The R18 FPN's lateral convs and its P6 conv take other input channels than the R50's:
# those keys do not fit and keep their default init (mmengine logs the size mismatches).
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    teacher_checkpoint=__teacher_checkpoint,
    # the official GFL hyper-parameters (pgd_gfl_r101_r50_1x.py), P3-P7
    distiller=dict(type='PGD', head_type='RetinaHead', num_levels=5, temp=0.8, alpha=0.04, beta=0.02,
                   gamma=0.064, delta=8e-4, level_weights=[1.0, 1.25, 1.5, 1.75, 2.0],
                   alpha_cls=0.8, alpha_reg=0.6, topk=30))
