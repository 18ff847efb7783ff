# DeFeat decoupled neck distillation on the generated shapes data: RetinaNet R50 teacher -> RetinaNet
# R18 student, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# The data set, schedule and runtime are the student baseline's (retinanet_r18_shapes.py), so the
# two runs differ only by distillation. The decoupled RoI classification KL of DeFeat needs a
# two-stage student (see configs/defeat_faster_rcnn.py); RetinaNet gets the neck part only.
_base_ = ['./retinanet_r18_shapes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    # a work dir: its latest checkpoint is used
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher',
    distiller=dict(
        type='DeFeat',
        student_channels=256, teacher_channels=256,
        num_levels=5,          # P3-P7; strides from the student's anchor generator (8 ... 128)
        finest_scale=56,       # GT -> level: floor(log2(sqrt((w+1)(h+1)) / 56)); 30-100 px shapes land on P3
        hint_neck_w=3.0,       # foreground (official)
        hint_neck_back_w=12.0,  # background (official)
        adapter_kernel_size=3, adapter_init='near_zero', adapter_std=1e-4))
