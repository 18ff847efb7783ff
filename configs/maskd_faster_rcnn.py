# MasKD stage 2 (Huang et al., ICLR 2023): Faster R-CNN ResNet-101 FPN 2x (39.8 box mAP) teacher ->
# Faster R-CNN ResNet-50 FPN student, 2x COCO schedule, the official hyper-parameters
# (hunto/MasKD mmrazor/configs/distill/maskd/fpn_r101-fpn_r50_coco.py: masked distillation on the
# neck's 5 outputs with 6 frozen tokens each, loss_weight 1, mask customisation after 7330
# iterations, 1x1 align convs; SmoothL1 KD (weight 1) between the student's fc_reg output and the
# teacher's RoI regression on the student's RoIs; SGD lr 0.02, 8 GPUs x 2 images, no grad clip; the
# student is not initialised from the teacher). Paper / official README: student 38.4 -> 41.0 box mAP.
#
# Stage 1 first: configs/maskd_tokens_faster_rcnn.py (it names the teacher checkpoint to download).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    distiller=dict(
        type='MasKD',
        tokens_checkpoint='work_dirs/maskd_tokens_faster_rcnn/iter_2000.pth',
        student_channels=256, teacher_channels=256, num_levels=5,
        num_tokens=6, weight_mask=True,
        loss_weight=1.0,
        custom_mask=True, custom_mask_warmup=7330,
        reg_module=None, roi_reg=True, reg_loss='smooth_l1', reg_weight=1.0))
# optimizer (SGD 0.02, momentum 0.9, wd 1e-4) and schedule (500 warm-up iterations, 24 epochs,
# steps at 16 and 22) are mmdet's faster-rcnn_r50_fpn_2x_coco.py, as in the official config
auto_scale_lr = dict(enable=False, base_batch_size=16)
