# Kinetics-Sound (a subset of the Kinetics classes with audible sources) [unverified: the official
# repository has no Kinetics-Sound code; the paper's exact class list, split and preprocessing could
# not be checked]. Layout read here:
#   data/kinetics_sound/annotations/{train,validate}.csv   Kinetics CSVs
#       (label,youtube_id,time_start,time_end,split); the video id is
#       <youtube_id>_<time_start:06d>_<time_end:06d> (the Kinetics downloader's file names).
#       Give ks_classes (the Kinetics-Sound class names) to filter full Kinetics CSVs, or
#       pre-filter the CSVs and leave it None (the classes are then the CSV's sorted labels).
#   data/kinetics_sound/videos/<id>.mp4     the clips, decoded with PyAV and sampled at 4 fps
#   data/kinetics_sound/audio/<id>.wav      16 kHz mono wav of each clip (e.g. ffmpeg -ar 16000 -ac 1)
#   data/kinetics_sound/audio_features/<id>.npy   precomputed teacher embeddings (e.g. CNN14, 512-d)
# Same clip protocol as UCF51 / ActivityNet: 16 frames at 4 fps, 112 x 112.
default_scope = 'kdtoolbox'
data_root = 'data/kinetics_sound/'
ks_classes = None
num_classes = 31  # [unverified] the usual Kinetics-Sound size; set to len(ks_classes)
dataset_type = 'AVVideoFileDataset'
data_prefix = dict(video='videos', audio='audio', teacher='audio_features')
clip_len = 16
fps = 4
crop_size = 112
train_pipeline = [
    dict(type='AVSampleClip', mode='random'),
    dict(type='AVLoadFrames'),
    dict(type='AVLoadAudio', mode='clip', sample_rate=16000),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVResize', size=128),  # Kinetics clips are full size: resize before the random crop
    dict(type='AVRandomResizedCrop', size=crop_size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='AVFlip', prob=0.5),
    dict(type='PackAVInputs'),
]
test_pipeline = [
    dict(type='AVSampleClip'),
    dict(type='AVLoadFrames'),
    dict(type='AVLoadAudio', mode='clip', sample_rate=16000),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVResize', size=crop_size),
    dict(type='AVCenterCrop', size=crop_size),
    dict(type='PackAVInputs'),
]
__train = dict(type=dataset_type, data_root=data_root, ann_file='annotations/train.csv', subset='train',
               classes=ks_classes, data_prefix=data_prefix, clip_len=clip_len, fps=fps, on_missing='skip')
__val = dict(__train, ann_file='annotations/validate.csv', subset='validate')
train_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(__train, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=30, num_workers=8, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__val, test_mode=True, test_windows=dict(type='even', num=3), pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__val, test_mode=True, test_windows=dict(type='sliding', stride=16), pipeline=test_pipeline))
gallery_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__train, test_mode=True, test_windows=dict(type='sliding', stride=16), pipeline=test_pipeline))
custom_hooks = [dict(type='GalleryFeatureHook', dataloader=gallery_dataloader, on_val=False, on_test=True)]
val_evaluator = [dict(type='VideoAccuracy', topk=(1, 5))]
test_evaluator = [dict(type='VideoAccuracy', topk=(1, 5)),
                  dict(type='RetrievalMetric', topk=(1, 5, 10), map_topk=500)]
