# MasKD stage 2 on the generated shapes data: RetinaNet R50 teacher -> RetinaNet R18 student, on CPU
# in a few minutes. First train the teacher, then learn the tokens (stage 1):
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
#   python tools/train.py configs/demo/maskd_tokens_retinanet_shapes.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation (compare with fgd_retinanet_shapes.py).
_base_ = ['./retinanet_r18_shapes.py']

__teacher_checkpoint = 'work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth'

# The official RetinaNet inheriting strategy: the student's neck and head start from the teacher's
# (mmengine Pretrained init). The R18 FPN's lateral convs and its P6 conv take other input channel
# counts than the R50's: those keys keep their default init (mmengine logs the size mismatches).
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(
        type='MasKD',
        # stage 1's work dir: its latest checkpoint holds the tokens
        tokens_checkpoint='work_dirs/maskd_tokens_retinanet_shapes',
        student_channels=256, teacher_channels=256, num_levels=5, num_tokens=6,
        loss_weight=7.0,  # the official RetinaNet weight
        # the official warm-up is ~5% of the 2x schedule (8500 of 180k iterations); here 1 epoch of
        # 16 iterations of the 192
        custom_mask=True, custom_mask_warmup=16,
        reg_module='bbox_head.retina_reg', reg_loss='smooth_l1', reg_weight=1.0))
