# The visual teacher of the visual -> audio demo: a frame ResNet (ResNet-10 layout, 16 channels
# in the first stage -> 128-d features) trained on the generated frames. Train it first, then
# mnfcsc_logmel_v2a_avdemo.py loads it:
#   python tools/train.py configs/av/demo/frameresnet_teacher_avdemo.py
_base_ = ['./_base_/av_demo_data.py', './_base_/av_demo_runtime.py']

model = dict(type='FrameResNet', num_classes=4, input_key='video', depth=10, base_channels=16,
             data_preprocessor=dict(type='AVDataPreprocessor'))
default_hooks = dict(checkpoint=dict(interval=30, save_best=None, max_keep_ckpts=1))
