# The official schedule (GeWu-Lab/cross-modal-distillation, args.py + scripts/*_train_script.sh):
# Adam, lr 3e-4, weight decay 5e-4 (the MNF at 0.2x through paramwise_cfg in the MNF configs),
# 200 epochs, MultiStepLR at epoch 150 (gamma 0.1), validation every 5 epochs keeping the best
# checkpoint, seed 3.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=200, val_interval=5)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=3e-4, weight_decay=5e-4))
param_scheduler = [dict(type='MultiStepLR', by_epoch=True, milestones=[150], gamma=0.1)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=50, max_keep_ckpts=2, save_best='av/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=3)
log_level = 'INFO'
load_from = None
resume = False
