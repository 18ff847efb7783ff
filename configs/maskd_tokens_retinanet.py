# MasKD stage 1 (Huang et al., ICLR 2023): learn the receptive tokens (6 per FPN level, P3-P7) on
# the frozen RetinaNet R101 FPN 2x teacher (38.9 box mAP), as the official
# hunto/MasKD mmdetection/configs/maskd/retinanet_r101_fpn_2x_coco.py does: the teacher's own
# detection loss on the masked FPN features plus the Dice diversity loss (weight 1) trains only the
# mask modules; 2000 iterations of 8 GPUs x 2 images, Adam lr 0.01 weight decay 1e-3, cosine LR to
# 1e-6 without warm-up.
#
# Get the teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth  # noqa: E501
# then
#   bash tools/dist_train.sh configs/maskd_tokens_retinanet.py 8
# writes work_dirs/maskd_tokens_retinanet/iter_2000.pth, whose state_dict holds only the tokens
# (mask_modules.{0-4}.mask_token, mask_modules.{0-4}.prob.{0,2}.{weight,bias}): stage 2,
# configs/maskd_retinanet.py, reads it. The validation at the end reports the masked teacher's mAP.
_base_ = ['mmdet::retinanet/retinanet_r101_fpn_2x_coco.py']  # COCO data and runtime

max_iters = 2000
model = dict(
    _delete_=True,
    type='kdtoolbox.MasKDTokenLearner',
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_checkpoint='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    channels=256, num_levels=5,  # the FPN outputs P3-P7
    num_tokens=6, weight_mask=True, div_weight=1.0)

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-6, by_epoch=False,
                        begin=0, end=max_iters)]
optim_wrapper = dict(optimizer=dict(_delete_=True, type='Adam', lr=0.01, weight_decay=1e-3))
auto_scale_lr = dict(enable=False, base_batch_size=16)  # the official 8 GPUs x 2 images
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
