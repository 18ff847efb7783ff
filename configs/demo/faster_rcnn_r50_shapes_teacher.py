# Faster R-CNN ResNet-50 FPN on the generated shapes dataset: the demo teacher of the two-stage
# distillers (Mimic). mmdet's faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py is
# models/faster-rcnn_r50_fpn.py + datasets/coco_detection.py + schedules/schedule_1x.py +
# default_runtime.py; as in retinanet_r50_shapes_teacher.py the dataset (and runtime) base is swapped
# for ./_base_/shapes_detection.py (mmengine forbids two sibling bases defining the same key).
# Trained from scratch on CPU: no pretrained weights are downloaded (backbone init_cfg=None).
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    './_base_/shapes_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
]

model = dict(
    backbone=dict(
        init_cfg=None,  # no ImageNet weights (nothing may download)
        frozen_stages=-1,  # from scratch: freezing the random stem would only hurt
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False),  # batch 4 of 256 px images: train-mode BN learns fine from scratch
    # The default RPN anchors (one scale, 32 px at stride 4 up to 512 px at stride 64, 3 ratios)
    # cover the 30-100 px objects; kept unchanged.
    roi_head=dict(bbox_head=dict(num_classes=3)),
    # At most 4 objects per 256 px image: fewer proposals and sampled RoIs than COCO's 1000 / 512
    # keep the RoI head (two 1024-d FCs per RoI) from dominating a CPU step.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=50)))

# The schedule of retinanet_r50_shapes_teacher.py: 12 epochs of 64 images (16 iterations of 4) =
# 192 iterations, validation at the end, one checkpoint (the last).
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1,
                                     save_last=True))
randomness = dict(seed=0)
