# KD (Hinton; T = 4) baseline, audio -> visual, on the generated data: the teacher logits come from
# the linear probe on the precomputed embeddings (train probe_embedding_avdemo.py first).
#   python tools/train.py configs/av/demo/kd_r2plus1d_avdemo.py
_base_ = ['./unimodal_r2plus1d_avdemo.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='PrecomputedEmbedding', embed_dim=128, num_classes=4, with_head=True),
    teacher_checkpoint='work_dirs/probe_embedding_avdemo/epoch_30.pth',
    distiller=dict(type='KD', temperature=4.0, loss_weight=1.0))
