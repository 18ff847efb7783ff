# FGD (Yang et al., CVPR 2022): GFL ResNet-101 FPN multi-scale 2x teacher -> GFL ResNet-50 FPN
# student, 1x COCO schedule, the official hyper-parameters
# (yzd-v/FGD configs/distillers/fgd/fgd_gfl_r101_distill_gfl_r50_fpn_1x_coco.py: temp 0.5,
# alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6 on P3-P7; SGD lr 0.01, 8 GPUs x 2 images,
# grad clip 35, student neck and head initialised from the teacher).
# Paper (FGD README): student 40.2 -> 43.5 box mAP.
#
# Get the teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/gfl/gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth  # noqa: E501
# The path is used three times below: change __teacher_checkpoint, not model.teacher_checkpoint alone.
_base_ = ['mmdet::gfl/gfl_r50_fpn_1x_coco.py']

__teacher_checkpoint = 'checkpoints/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth'

# inheriting strategy (applied by mmengine inside init_weights(), so it survives it)
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(type='FGD', preset='one_stage', student_channels=256, teacher_channels=256,
                   num_levels=5, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
                   lambda_fgd=5e-6))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
