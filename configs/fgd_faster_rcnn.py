# FGD (Yang et al., CVPR 2022): Cascade Mask R-CNN ResNeXt-101-32x4d-DCN FPN 1x teacher ->
# Faster R-CNN ResNet-50 FPN student, 2x COCO schedule, the official hyper-parameters
# (yzd-v/FGD configs/distillers/fgd/fgd_cascade_mask_rcnn_rx101_32x4d_distill_faster_rcnn_r50_fpn_2x_coco.py:
# temp 0.5, alpha 5e-5, beta 2.5e-5, gamma 5e-5, lambda 5e-7 on P2-P5, the 4 FPN levels that have
# an output conv; SGD lr 0.02, 8 GPUs x 2 images, grad clip 35).
# Paper (FGD README): student 38.4 -> 42.0 box mAP.
#
# No inheriting strategy here, as in the official config: the teacher's heads (cascade, mask)
# are not the student's. For a same-architecture two-stage teacher (e.g. Faster R-CNN R101 ->
# R50, official init_student=True) add Pretrained init_cfgs with prefixes 'neck.',
# 'rpn_head.' and 'roi_head.' to the student's neck, rpn_head and roi_head (see fgd_retinanet.py).
#
# Get the teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/dcn/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth  # noqa: E501
# The teacher's deformable convs need mmcv's ops (built by tools/install.sh).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='mmdet::dcn/cascade-mask-rcnn_x101-32x4d-dconv-c3-c5_fpn_1x_coco.py',
    teacher_checkpoint='checkpoints/cascade_mask_rcnn_x101_32x4d_fpn_dconv_c3-c5_1x_coco-e75f90c8.pth',
    distiller=dict(type='FGD', preset='two_stage', student_channels=256, teacher_channels=256,
                   num_levels=4, temp=0.5, alpha_fgd=5e-5, beta_fgd=2.5e-5, gamma_fgd=5e-5,
                   lambda_fgd=5e-7))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
