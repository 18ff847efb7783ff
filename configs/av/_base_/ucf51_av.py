# UCF51 (the 51 UCF101 classes with audio), as the official code reads it:
#   data/ucf51/annotation.json             the official datasets/ucf_51/annotation.json
#                                          ({"labels": [...51], "database": {id: {subset, label}}};
#                                           4892 training / 1944 validation videos)
#   data/ucf51/video_set_4fps/<id>/image_00001.jpg ...   frames dumped at 4 fps, 112 x 112
#       (the official release stores them as <id>.hdf5 with JPEG bytes in dataset 'video':
#        extract each to a folder; the official loader's off-by-one frame index is not reproduced)
#   data/ucf51/audio_features/<id>.npy     the teacher: 512-d CNN14 audio embeddings (official release)
# Clips of 16 frames (4 s); training: random temporal crop + RandomResizedCrop(112, 0.25-1, 3/4-4/3)
# + flip; validation during training: 3 evenly spaced clips (TemporalEvenCrop); test and the
# retrieval gallery: sliding windows of 16, stride 16, scores / features averaged per video.
default_scope = 'kdtoolbox'
data_root = 'data/ucf51/'
num_classes = 51
dataset_type = 'AVFrameFolderDataset'
data_prefix = dict(video='video_set_4fps', teacher='audio_features')
clip_len = 16
fps = 4
crop_size = 112
train_pipeline = [
    dict(type='AVSampleClip', mode='random'),
    dict(type='AVLoadFrames'),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVRandomResizedCrop', size=crop_size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='AVFlip', prob=0.5),
    dict(type='PackAVInputs'),
]
test_pipeline = [
    dict(type='AVSampleClip'),
    dict(type='AVLoadFrames'),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVResize', size=crop_size),
    dict(type='AVCenterCrop', size=crop_size),
    dict(type='PackAVInputs'),
]
__dataset = dict(type=dataset_type, data_root=data_root, ann_file='annotation.json', data_prefix=data_prefix,
                 clip_len=clip_len, fps=fps)
train_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(__dataset, subset='training', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=30, num_workers=8, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__dataset, subset='validation', test_mode=True, test_windows=dict(type='even', num=3),
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__dataset, subset='validation', test_mode=True, test_windows=dict(type='sliding', stride=16),
                 pipeline=test_pipeline))
gallery_dataloader = dict(
    batch_size=32, num_workers=8, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__dataset, subset='training', test_mode=True, test_windows=dict(type='sliding', stride=16),
                 pipeline=test_pipeline))
# retrieval (training-set gallery) only at test time: it predicts the whole training set
custom_hooks = [dict(type='GalleryFeatureHook', dataloader=gallery_dataloader, on_val=False, on_test=True)]
val_evaluator = [dict(type='VideoAccuracy', topk=(1, 5))]
test_evaluator = [dict(type='VideoAccuracy', topk=(1, 5)),
                  dict(type='RetrievalMetric', topk=(1, 5, 10), map_topk=500)]
