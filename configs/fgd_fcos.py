# FGD (Yang et al., CVPR 2022): FCOS ResNet-101 (caffe) FPN GN-head multi-scale 2x teacher ->
# FCOS ResNet-50 (caffe) FPN GN-head student with center sampling, normalised targets and GIoU,
# multi-scale training, 2x COCO schedule, the official hyper-parameters
# (yzd-v/FGD configs/distillers/fgd/fgd_fcos_r101_distill_fcos_r50_2x_coco.py: temp 0.8,
# alpha 1.6e-3, beta 8e-4, gamma 8e-4, lambda 8e-6 on P3-P7; grad clip 35, 24 epochs with steps at
# 16 and 22, student neck and head initialised from the teacher).
# Paper (FGD README): student 38.5 -> 42.7 box mAP.
#
# The official student is FGD's own fcos_center-normbbox-giou_r50_caffe_fpn_gn-head_mstrain_1x_coco.py:
# mmdet's ...-center-normbbox-centeronreg-giou_1x config with centerness on the classification
# branch (centerness_on_reg=False) and 640-800 multi-scale training, which is what this config
# sets on top of it. The teacher's head has no conv biases (GN, conv_bias='auto') where the
# student's has (conv_bias=True): those biases keep their default init when inheriting.
#
# Get the teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/fcos/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth  # noqa: E501
# The path is used three times below: change __teacher_checkpoint, not model.teacher_checkpoint alone.
_base_ = ['mmdet::fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py']

__teacher_checkpoint = 'checkpoints/fcos_r101_caffe_fpn_gn-head_mstrain_640-800_2x_coco-511424d6.pth'

__student = _base_.model
__student.bbox_head.centerness_on_reg = False
# inheriting strategy (applied by mmengine inside init_weights(), so it survives it)
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    # caffe-style teacher: the same input normalisation as the student (both BGR, caffe mean)
    teacher='mmdet::fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(type='FGD', preset='fcos', student_channels=256, teacher_channels=256,
                   num_levels=5, temp=0.8, alpha_fgd=1.6e-3, beta_fgd=8e-4, gamma_fgd=8e-4,
                   lambda_fgd=8e-6))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3.0, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 22], gamma=0.1),
]
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=35, norm_type=2))  # mmdet's base has clip_grad=None
auto_scale_lr = dict(enable=False, base_batch_size=16)
