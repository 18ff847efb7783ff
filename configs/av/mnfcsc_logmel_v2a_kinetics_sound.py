# MNF + CSC in the visual -> audio direction (the paper's audio-tagging extension, Table 4)
# [unverified: the official code has only the audio -> visual direction; the dataset, teacher and
# settings of the paper's audio tagging experiment could not be checked]: a frozen frame ResNet-18
# teacher (frameresnet18_kinetics_sound.py) run on the fly, the log-mel audio CNN student (tokens
# [N, 512, F', T']); the MNF gates the visual teacher feature with the audio context.
# Paper numbers (Xia et al. 2023, arXiv 2304.07775): [unverified] -- the paper's text was not
# available to this project (only its abstract and the official code were read), so no Table 1 /
# Table 4 number is quoted here; fill them in from the paper before citing this config.
_base_ = ['./logmel_unimodal_kinetics_sound.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='FrameResNet', num_classes=31, input_key='video', depth=18, base_channels=64, num_frames=8),
    teacher_checkpoint='work_dirs/frameresnet18_kinetics_sound/best_av_top1.pth',
    distiller=dict(type='MNFCSC', num_classes=31, embed_dim=512, num_heads=2, margin=0.2, delta=0.07,
                   loss_weight=1.0, sparsity_weight=1e-3))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)}))
