# The audio student alone (log-mel CNN, CNN14-style blocks 64-128-256-512, 512-d features) on the
# 4 s wav segments of Kinetics-Sound clips: the no-distillation row of the visual -> audio setting.
# Paper numbers (Xia et al. 2023, arXiv 2304.07775): [unverified] -- the paper's text was not
# available to this project (only its abstract and the official code were read), so no Table 1 /
# Table 4 number is quoted here; fill them in from the paper before citing this config.
_base_ = ['./_base_/kinetics_sound_av.py', './_base_/av_runtime.py']

student = dict(type='LogMelAudioCNN', num_classes=31, input_key='audio', channels=(64, 128, 256, 512),
               sample_rate=16000, data_preprocessor=dict(type='AVDataPreprocessor'))
model = student
