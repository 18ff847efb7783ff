# MasKD stage 2 (Huang et al., ICLR 2023): RetinaNet ResNet-101 FPN 2x (38.9 box mAP) teacher ->
# RetinaNet ResNet-50 FPN student, 2x COCO schedule, the official hyper-parameters
# (hunto/MasKD mmrazor/configs/distill/maskd/retinanet_r101-retinanet_r50_coco.py: masked
# distillation on P3-P7 with 6 frozen tokens per level, loss_weight 7, mask customisation after
# 7000 iterations, 1x1 align convs; L1 KD (weight 1) on bbox_head.retina_reg; SGD lr 0.02, 8 GPUs x
# 2 images, 1000 warm-up iterations, grad clip 35; student neck and head initialised from the
# teacher). Paper / official README: student 37.4 -> 39.9 box mAP.
# (The official X101 -> R50 config, 41.0 -> 41.0, uses custom_mask_warmup=8500 and SmoothL1 on
# retina_reg: the MasKD distiller's defaults.)
#
# Stage 1 first (configs/maskd_tokens_retinanet.py, which also names the teacher checkpoint to
# download); its last checkpoint holds the tokens. The official released tokens should load too
# (their keys are mask_modules.*): tokens_checkpoint='https://github.com/Gumpest/MasKD/releases/download/v0.0.3/maskd_retinanet_r101_fpn_2x_coco_20200131-5560aee8.ckpt'  # noqa: E501
# The teacher path is used three times below (teacher, student neck, student head): to use another
# file, change __teacher_checkpoint here.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

__teacher_checkpoint = 'checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'

# Inheriting strategy: the student's neck and head start from the teacher's (same architecture),
# through mmengine's Pretrained init (applied inside init_weights(), so it is not overwritten).
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(
        type='MasKD',
        tokens_checkpoint='work_dirs/maskd_tokens_retinanet/iter_2000.pth',
        student_channels=256, teacher_channels=256, num_levels=5,
        num_tokens=6, weight_mask=True,
        loss_weight=7.0,
        custom_mask=True, custom_mask_warmup=7000,
        reg_module='bbox_head.retina_reg', reg_loss='l1', reg_weight=1.0))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1)]
# the official batch: 8 GPUs x 2 images (train_dataloader.batch_size=2 per GPU, from mmdet)
auto_scale_lr = dict(enable=False, base_batch_size=16)
