# Baseline of Table 1: KD (Hinton, T = 4) on the logits of a linear probe over the audio embeddings (train
# configs/av/probe_cnn14_ucf51.py first),
# audio -> visual on UCF51, same student, data and schedule as mnfcsc_r2plus1d_ucf51.py. [unverified] which variant and
# hyper-parameters the paper used for this baseline.
# Paper numbers (Xia et al. 2023, arXiv 2304.07775): [unverified] -- the paper's text was not
# available to this project (only its abstract and the official code were read), so no Table 1 /
# Table 4 number is quoted here; fill them in from the paper before citing this config.
_base_ = ['./r2plus1d_unimodal_ucf51.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='PrecomputedEmbedding', embed_dim=512, num_classes=51, with_head=True),
    teacher_checkpoint='work_dirs/probe_cnn14_ucf51/epoch_50.pth',
    distiller=dict(type='KD', temperature=4.0, loss_weight=1.0))
