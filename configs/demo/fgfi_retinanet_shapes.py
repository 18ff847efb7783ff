# FGFI fine-grained feature imitation on the generated shapes data: RetinaNet R50 teacher ->
# RetinaNet R18 student, on CPU in a few minutes. Train the teacher first:
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
    distiller=dict(
        type='FGFI',
        student_channels=256, teacher_channels=256,
        num_levels=5,            # P3-P7, anchors of the student's RetinaHead (9 per location)
        psi=0.5,                 # imitate where IoU > 0.5 x the GT's best anchor IoU
        fpn_assign=True,         # each GT imitated on one level (the DeFeat code's FPN variant)
        normalize='locations',   # official: sum / (2 x number of imitated locations)
        level_reduction='mean',
        loss_weight=0.01,        # lambda (official)
        adapter_kernel_size=3, adapter_relu=True, adapter_init='near_zero', adapter_std=1e-4))

# Imitation off for the first iterations (official: 400 iterations of ~5k per epoch at batch 1);
# here one epoch of 16 iterations. A zero scale skips the teacher pass entirely.
custom_hooks = [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=16)]
