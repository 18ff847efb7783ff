# MasKD stage 1 on the generated shapes data: learn 6 receptive tokens per FPN level (P3-P7) on the
# frozen RetinaNet R50 shapes teacher, on CPU in a few minutes. Train the teacher first:
#   python tools/train.py configs/demo/retinanet_r50_shapes_teacher.py
# then
#   python tools/train.py configs/demo/maskd_tokens_retinanet_shapes.py
# writes work_dirs/maskd_tokens_retinanet_shapes/iter_100.pth (the tokens only), which
# configs/demo/maskd_retinanet_shapes.py reads. The official schedule (2000 iterations of 16 images,
# Adam lr 0.01 wd 1e-3, cosine LR) is shortened to 100 iterations of 4 images (~6 epochs of the
# 64 images); the validation at the end reports the masked teacher's mAP.
_base_ = ['./_base_/shapes_detection.py']

max_iters = 100
model = dict(
    type='kdtoolbox.MasKDTokenLearner',
    teacher='{{fileDirname}}/retinanet_r50_shapes_teacher.py',
    teacher_checkpoint='work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth',
    channels=256, num_levels=5,  # the teacher's FPN outputs P3-P7
    num_tokens=6, weight_mask=True, div_weight=1.0)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, eta_min=1e-6, by_epoch=False,
                        begin=0, end=max_iters)]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=0.01, weight_decay=1e-3))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters,
                                     max_keep_ckpts=1, save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
