# RKD baseline (distance x25 + angle x50, RepDistiller's weights), audio -> visual, on the generated
# data: relations of the student's pooled features against those of the precomputed audio embeddings.
#   python tools/train.py configs/av/demo/rkd_r2plus1d_avdemo.py
_base_ = ['./unimodal_r2plus1d_avdemo.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='PrecomputedEmbedding', embed_dim=128),
    distiller=dict(type='RKD', distance_weight=25.0, angle_weight=50.0))
