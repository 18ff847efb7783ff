# FGD (Yang et al., CVPR 2022): RetinaNet ResNeXt-101-64x4d FPN 1x (41.0 box mAP) teacher ->
# RetinaNet ResNet-50 FPN student, 2x COCO schedule, the official hyper-parameters
# (yzd-v/FGD configs/distillers/fgd/fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py:
# temp 0.5, alpha 1e-3, beta 5e-4, gamma 5e-4, lambda 5e-6 on P3-P7; SGD lr 0.01, 8 GPUs x 2
# images, grad clip 35, student neck and head initialised from the teacher).
# Paper (FGD README): student 37.4 -> 40.7 box mAP.
#
# The student, data, schedule and runtime are mmdet's retinanet_r50_fpn_2x_coco.py. Get the
# teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_x101_64x4d_fpn_1x_coco/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth  # noqa: E501
# The path is used three times below (teacher, student neck, student head): to use another file,
# change __teacher_checkpoint here (a --cfg-options override of model.teacher_checkpoint alone
# would leave the student inheriting from the old path).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

__teacher_checkpoint = 'checkpoints/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'

# Inheriting strategy: the student's neck and head start from the teacher's (same architecture).
# mmengine applies these init_cfgs inside init_weights(), after the default initialisation, so
# they are not overwritten; the backbone keeps its ImageNet init (torchvision://resnet50).
__student = _base_.model
__student.neck.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='neck.')
__student.bbox_head.init_cfg = dict(type='Pretrained', checkpoint=__teacher_checkpoint, prefix='bbox_head.')

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=__student,
    teacher='mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py',
    teacher_checkpoint=__teacher_checkpoint,
    distiller=dict(type='FGD', preset='one_stage', student_channels=256, teacher_channels=256,
                   num_levels=5, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4,
                   lambda_fgd=5e-6))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
# the official batch: 8 GPUs x 2 images (train_dataloader.batch_size=2 per GPU, from mmdet)
auto_scale_lr = dict(enable=False, base_batch_size=16)
