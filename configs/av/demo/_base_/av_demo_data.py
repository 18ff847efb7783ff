# The generated audio-visual dataset (kdtoolbox_plugins.av.generate; see plugins/av/generate.py):
# 4 classes, 48 training / 16 validation videos of 16 frames at 8 fps (2 s), 32 x 32 px, 16 kHz wav
# audio; each class has a drifting grating and a harmonic tone -- classes 0/1 and 2/3 look alike
# (same orientation and colour) and differ only by the drift speed, while each has its own tone; half of
# the tracks mix in the tone of another class at weight 0.5 (the paper's noise experiment); the
# teacher embeddings (audio_features/<id>.npy, 128-d) are a fixed random projection of the written
# (so possibly noisy) track's log-spectrum plus N(0, 0.1^2) noise.
# It is written under data_root on first use, or ahead of time with
#   python tools/make_av_dataset.py --root data/av_demo
# (same arguments as av_generate below: a dataset made with other arguments is regenerated).
# Clips: 8 frames (1 s, 16000 audio samples); validation: sliding windows of 8 with stride 8, i.e.
# 2 windows per video, scores / features averaged per video (the official test protocol).
default_scope = 'kdtoolbox'

data_root = 'data/av_demo/'
num_classes = 4
embed_dim = 128  # the teacher embedding width = the demo student's feature width (MNF needs equal widths)
av_generate = dict(num_classes=num_classes, num_train=48, num_val=16, num_frames=16, fps=8, frame_size=32,
                   sample_rate=16000, noise_ratio=0.5, noisy_fraction=0.5, embed_dim=embed_dim,
                   embed_noise=0.1, visual_pairs=1, visual_noise=30.0, num_mp4=4, seed=0)
clip_len = 8
fps = 8
crop_size = 32
dataset_type = 'AVFrameFolderDataset'
data_prefix = dict(video='frames', audio='audio', teacher='audio_features')

# the official augmentation (RandomResizedCrop scale 0.25-1, ratio 3/4-4/3, horizontal flip) at 32 px
train_pipeline = [
    dict(type='AVSampleClip', mode='random'),
    dict(type='AVLoadFrames'),
    dict(type='AVLoadAudio', mode='clip', sample_rate=16000),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVRandomResizedCrop', size=crop_size, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='AVFlip', prob=0.5),
    dict(type='PackAVInputs'),
]
test_pipeline = [
    dict(type='AVSampleClip'),  # keeps the dataset's window
    dict(type='AVLoadFrames'),
    dict(type='AVLoadAudio', mode='clip', sample_rate=16000),
    dict(type='AVLoadTeacherEmbedding'),
    dict(type='AVResize', size=crop_size),
    dict(type='AVCenterCrop', size=crop_size),
    dict(type='PackAVInputs'),
]
__dataset = dict(type=dataset_type, data_root=data_root, ann_file='annotation.json', data_prefix=data_prefix,
                 clip_len=clip_len, fps=fps, generate=av_generate)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(__dataset, subset='training', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__dataset, subset='validation', test_mode=True, test_windows=dict(type='sliding', stride=0),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
# the retrieval gallery: the training videos through the test pipeline and windows
gallery_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(__dataset, subset='training', test_mode=True, test_windows=dict(type='sliding', stride=0),
                 pipeline=test_pipeline))
custom_hooks = [dict(type='GalleryFeatureHook', dataloader=gallery_dataloader)]
val_evaluator = [dict(type='VideoAccuracy', topk=(1,)),
                 dict(type='RetrievalMetric', topk=(1, 5, 10), map_topk=500)]
test_evaluator = val_evaluator
