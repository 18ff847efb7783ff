# The video student alone (no teacher): the "unimodal" row of the paper's Table 1, on the generated
# audio-visual data. R(2+1)D with one block per stage (what the official --model_depth 18 builds,
# depth=10 here) at 16 channels in the first stage, so the pooled feature is 8 * 16 = 128-d.
#   python tools/train.py configs/av/demo/unimodal_r2plus1d_avdemo.py
_base_ = ['./_base_/av_demo_data.py', './_base_/av_demo_runtime.py']

student = dict(type='R2Plus1D', num_classes=4, input_key='video', depth=10, base_channels=16,
               data_preprocessor=dict(type='AVDataPreprocessor'))
model = student
