# The benchmark student of tools/demo.py with FGD's inheriting strategy and no distillation loss:
# its FPN output convs and its head start from the teacher's (mmengine Pretrained init; the R18
# FPN's lateral convs and P6 conv take other input channels than the R50's and keep their default
# init), then it trains alone. FGD, PGD and MasKD's demo configs inherit the same way, so this row,
# not the plain baseline, is what their losses are compared with. tools/demo.py replaces the
# checkpoint path below by the suite teacher's (the path is the demo teacher's, 256 channels: do
# not use this config outside tools/demo.py).
_base_ = ['./retinanet_r18_student.py']

teacher_checkpoint = 'work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth'
model = dict(
    neck=dict(init_cfg=dict(type='Pretrained', checkpoint=teacher_checkpoint, prefix='neck.')),
    bbox_head=dict(init_cfg=dict(type='Pretrained', checkpoint=teacher_checkpoint, prefix='bbox_head.')))
