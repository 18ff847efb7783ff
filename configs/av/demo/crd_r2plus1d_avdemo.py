# CRD baseline (memory bank + NCE critic), audio -> visual, on the generated data: the student's
# pooled feature against the precomputed audio embedding. num_data is the training set's length
# (48 generated videos); 1024 negatives (RepDistiller: 16384).
#   python tools/train.py configs/av/demo/crd_r2plus1d_avdemo.py
_base_ = ['./unimodal_r2plus1d_avdemo.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='PrecomputedEmbedding', embed_dim=128),
    distiller=dict(type='CRD', num_data=48, student_channels=128, teacher_channels=128, feat_dim=64,
                   num_negatives=1024, temperature=0.07, momentum=0.5, loss_weight=0.8))
