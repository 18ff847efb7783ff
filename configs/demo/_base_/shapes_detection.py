# The generated shapes dataset (kdtoolbox.ShapesDataset: circle / square / triangle, COCO format):
# the default data of the demo configs. It is written under data_root on first use (no download),
# or ahead of time with `python tools/make_shapes_dataset.py --root data/shapes`.
# Also brings mmdet's default runtime (default_scope='mmdet', hooks, visualizer), adapted for CPU.
_base_ = ['mmdet::_base_/default_runtime.py']

default_scope = 'mmdet'
dataset_type = 'kdtoolbox.ShapesDataset'
data_root = 'data/shapes/'
# The generator's arguments: train and val share the dataset folder, so keep them identical
# (a dataset found with other arguments is regenerated).
shapes_args = dict(num_train=64, num_val=16, img_size=256, seed=0, max_shapes=4)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(256, 256), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # 256 px PNGs load in ~1 ms: worker processes would only cost start-up time
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args,
        **shapes_args))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
        **shapes_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/val.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# CPU-friendly runtime: log every 10 iterations, no CUDA-only settings.
default_hooks = dict(logger=dict(type='LoggerHook', interval=10))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
# nccl for CUDA runs; without CUDA, tools/train.py initialises gloo itself (kdtoolbox.engine.distributed)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
