# The R(2+1)D student alone on ActivityNet (the "unimodal" / no-distillation row), official schedule.
# depth=10 builds one block per stage: what the official "--model_depth 18" builds.
# Paper numbers (Xia et al. 2023, arXiv 2304.07775): [unverified] -- the paper's text was not
# available to this project (only its abstract and the official code were read), so no Table 1 /
# Table 4 number is quoted here; fill them in from the paper before citing this config.
_base_ = ['./_base_/activitynet_av.py', './_base_/av_runtime.py']

student = dict(type='R2Plus1D', num_classes=200, input_key='video', depth=10, base_channels=64,
               data_preprocessor=dict(type='AVDataPreprocessor'))
model = student
