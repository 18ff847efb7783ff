# MasKD stage 1 (Huang et al., ICLR 2023): learn the receptive tokens (6 per FPN output, P2-P6) on the
# frozen Faster R-CNN R101 FPN 2x teacher (39.8 box mAP), as the official hunto/MasKD
# mmdetection/configs/maskd/faster_rcnn_r101_fpn_2x_coco.py does: 2000 iterations of 8 GPUs x 2
# images, SGD lr 0.1 (momentum 0.9, weight decay 1e-4), cosine LR to 1e-6 without warm-up.
# (The official config inherits faster_rcnn_r50_fpn_2x but loads the R101 checkpoint non-strictly,
# i.e. a corrupted teacher; here the R101 config and its checkpoint go together, loaded strictly.)
#
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth  # noqa: E501
#   bash tools/dist_train.sh configs/maskd_tokens_faster_rcnn.py 8
# writes work_dirs/maskd_tokens_faster_rcnn/iter_2000.pth (the tokens only), read by
# configs/maskd_faster_rcnn.py.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py']  # COCO data and runtime

max_iters = 2000
model = dict(
    _delete_=True,
    type='kdtoolbox.MasKDTokenLearner',
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_checkpoint='checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    channels=256, num_levels=5,  # the neck's 5 outputs: P2-P5 and the max-pooled P6
    num_tokens=6, weight_mask=True, div_weight=1.0)

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-6, by_epoch=False,
                        begin=0, end=max_iters)]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)  # the official 8 GPUs x 2 images
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters))
log_processor = dict(by_epoch=False)
