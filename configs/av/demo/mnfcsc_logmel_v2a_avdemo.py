# MNF + CSC in the visual -> audio direction (the paper's audio-tagging extension), on the generated
# data: a frame ResNet teacher (frameresnet_teacher_avdemo.py, train it first) run on the fly, and a
# log-mel audio CNN student on the 1 s waveform of each clip (tokens [N, 128, F', T']). The metrics
# (window-averaged top-1, retrieval) then evaluate the audio student.
#   python tools/train.py configs/av/demo/mnfcsc_logmel_v2a_avdemo.py
_base_ = ['./_base_/av_demo_data.py', './_base_/av_demo_runtime.py']

student = dict(type='LogMelAudioCNN', num_classes=4, input_key='audio', channels=(16, 32, 64, 128),
               sample_rate=16000, data_preprocessor=dict(type='AVDataPreprocessor'))
model = dict(
    type='DistillationModel',
    student=student,
    teacher=dict(type='FrameResNet', num_classes=4, input_key='video', depth=10, base_channels=16),
    teacher_checkpoint='work_dirs/frameresnet_teacher_avdemo/epoch_30.pth',
    distiller=dict(type='MNFCSC', num_classes=4, embed_dim=128, num_heads=2, margin=0.2, delta=0.07,
                   loss_weight=1.0, sparsity_weight=1e-3))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)}))
