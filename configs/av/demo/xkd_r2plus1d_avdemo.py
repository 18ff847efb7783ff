# XKD's cross-modal distillation (EMA teachers, DINO-style cross-modal KD, MMD alignment; no MAE
# pretraining) between the demo video student and a small log-mel audio student, on the generated
# data (audio = the 1 s wav segment of each clip). Small DINO heads for CPU (XKD: 2048 / 256 / 8192).
#   python tools/train.py configs/av/demo/xkd_r2plus1d_avdemo.py
_base_ = ['./unimodal_r2plus1d_avdemo.py']

model = dict(
    _delete_=True,
    type='DistillationModel',
    student=_base_.student,
    teacher=dict(type='NullTeacher'),
    distiller=dict(type='XKD', video_model=_base_.student,
                   audio_model=dict(type='LogMelAudioCNN', num_classes=4, channels=(16, 32, 64, 128)),
                   out_dim=256, hidden_dim=128, bottleneck_dim=64, num_layers=3,
                   audio_cls_weight=1.0))
