# PGD (Yang, Ochal, Storkey, Crowley; ECCV 2022): GFL ResNet-101 FPN teacher -> GFL ResNet-50 FPN
# student, 1x COCO schedule, the official hyper-parameters
# (ChenhongyiYang/PGD work_configs/pgd_gfl_r101_r50_1x.py: features = the first conv of the head's
# cls and reg towers on P3-P7, T 0.8, alpha 0.04, beta 0.02, gamma 0.064, delta 8e-4, level
# weights 1.0/1.25/1.5/1.75/2.0, PGW top-30 with alpha_cls 0.8 / alpha_reg 0.6; SGD lr 0.02,
# 8 GPUs x 4 images, grad clip 35, 500-iteration linear warm-up, student neck and head initialised
# from the teacher). Paper (PGD README): teacher 45.8 -> student 40.2 -> PGD 43.8 box mAP.
#
# The paper's teacher is a GFL R101 trained by the authors (3x, multi-scale; not released). The
# closest public one is mmdet's GFL R101 multi-scale 2x (44.7 box mAP), used here:
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth  # noqa: E501
# The path is used three times below: change __teacher_checkpoint, not model.teacher_checkpoint alone.
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']

__teacher_checkpoint = 'checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'

# inheriting strategy (applied by mmengine inside init_weights(), so it survives it)
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(type='PGD', head_type='GFLHead', num_levels=5,
                   cls_module='cls_convs.0', reg_module='reg_convs.0',
                   temp=0.8, alpha=0.04, beta=0.02, gamma=0.064, delta=8e-4,
                   level_weights=[1.0, 1.25, 1.5, 1.75, 2.0],
                   alpha_cls=0.8, alpha_reg=0.6, topk=30))

# 8 GPUs x 4 images (batch 32) at lr 0.02, as the official 1x setting
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=32)
