# MNF + CSC (the paper's method), audio -> visual, on the generated data: the teacher is the
# precomputed audio embedding of each video (audio_features/<id>.npy, the official setup, here
# 128-d and noisy for half of the videos), the student the demo R(2+1)D of unimodal_r2plus1d_avdemo.py.
# Compare with that config (no teacher) and with kd/crd/rkd_r2plus1d_avdemo.py (no MNF).
#   python tools/train.py configs/av/demo/mnfcsc_r2plus1d_avdemo.py
_base_ = ['./unimodal_r2plus1d_avdemo.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    # no parameters, nothing to load: the embeddings come with the data samples
    teacher=dict(type='PrecomputedEmbedding', embed_dim=128),
    # UCF51 settings of the official scripts: margin 0.2, delta 0.07, lambda 1, sparsity 1e-3
    distiller=dict(type='MNFCSC', num_classes=4, embed_dim=128, num_heads=2, margin=0.2, delta=0.07,
                   loss_weight=1.0, sparsity_weight=1e-3))
# the filter's learning rate is 0.2x the student's (the official "audio_optimizer")
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)}))
