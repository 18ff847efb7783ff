# The visual teacher of the visual -> audio setting: a ResNet-18 on 8 evenly spaced frames of each
# 16-frame clip, trained on Kinetics-Sound frames. [unverified] the paper's visual teacher (the notes
# mention a ResNet-50 only as a possibility) and its training.
_base_ = ['./_base_/kinetics_sound_av.py', './_base_/av_runtime.py']

model = dict(type='FrameResNet', num_classes=31, input_key='video', depth=18, base_channels=64, num_frames=8,
             data_preprocessor=dict(type='AVDataPreprocessor'))
custom_hooks = []
test_evaluator = [dict(type='VideoAccuracy', topk=(1, 5))]
