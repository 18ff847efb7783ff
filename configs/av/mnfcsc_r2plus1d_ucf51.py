# MNF + CSC (audio -> visual) on UCF51: frozen teacher = the precomputed 512-d audio embeddings
# (audio_features/<id>.npy), student = R(2+1)D (one block per stage, 512-d features, 2x7x7 = 98
# tokens for 16x112x112 clips). Official script settings: margin 0.2, delta 0.07, lambda 1,
# gate sparsity 1e-3 (summed over both gate weights; legacy_sparsity=True for the official slip),
# the MNF at 0.2x the student's learning rate.
# Paper numbers (Xia et al. 2023, arXiv 2304.07775): [unverified] -- the paper's text was not
# available to this project (only its abstract and the official code were read), so no Table 1 /
# Table 4 number is quoted here; fill them in from the paper before citing this config.
_base_ = ['./r2plus1d_unimodal_ucf51.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='PrecomputedEmbedding', embed_dim=512),
    distiller=dict(type='MNFCSC', num_classes=51, embed_dim=512, num_heads=2, margin=0.2, delta=0.07,
                   loss_weight=1.0, sparsity_weight=1e-3))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)}))
