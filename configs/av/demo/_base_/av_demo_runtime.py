# CPU runtime of the av demos: Adam (the official optimizer, weight decay 5e-4) at a demo learning
# rate, 30 epochs of 6 iterations, validation (video top-1 + retrieval) every 5 epochs.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=30, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, weight_decay=5e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[20], gamma=0.1)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=2),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=2, save_best='av/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(type='LogProcessor', window_size=6, by_epoch=True)
# nccl for CUDA runs; without CUDA, tools/train.py initialises gloo itself (kdtoolbox.engine.distributed)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=3)  # the official --manual_seed
log_level = 'INFO'
load_from = None
resume = False
