# SparseKD, CP-Voxel teacher -> CP-Voxel-XXS student, in mmdet3d 1.4 terms.
# Paper / official repo (CVMI-Lab/SparseKD, tools/cfgs/waymo_models/cp-voxel/cp-voxel-xxs_sparsekd.yaml):
# Waymo, 20 % training data, LEVEL 2 mAPH: CP-Voxel-XXS 56.26 -> 59.28 with SparseKD (teacher CP-Voxel 64.29).
# What differs here: the official pairs are Waymo CenterPoints of OpenPCDet (VoxelResBackBone8x + BaseBEVBackbone,
# one 3-class head); mmdet3d 1.4 ships no Waymo CenterPoint, so the closest configs are its nuScenes CenterPoint
# voxel 0.1 (SparseEncoder 16..128, SECOND [128, 256], SECONDFPN [256, 256], 6 task heads with velocity).
# The student narrows it as XXS narrows CP-Voxel: 3D width 0.5 (BEV 128 channels), 2D width 0.25 (SECOND
# [32, 64], FPN [64, 64]), shared head conv 16. (The official XXS initialises from the trained XS: point
# TGI at an XS checkpoint by using it as the teacher_checkpoint of an XS-width teacher config.) Numbers in this file's header are the paper's, not
# reproduced here (no GPU). Optimiser: the nuScenes schedule of the base config (the official run uses
# Adam one-cycle, lr 0.003, 30 epochs, batch 4/GPU).
_base_ = ['mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py']

teacher = 'mmdet3d::centerpoint/centerpoint_voxel01_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py'
student = _base_.model
student.pts_middle_encoder.base_channels = 8
student.pts_middle_encoder.encoder_channels = ((8, 8, 16), (16, 16, 32), (32, 32, 64), (64, 64))
student.pts_middle_encoder.output_channels = 64
student.pts_backbone.in_channels = 128
student.pts_backbone.out_channels = [32, 64]
student.pts_neck.in_channels = [32, 64]
student.pts_neck.out_channels = [64, 64]
student.pts_bbox_head.in_channels = 128
student.pts_bbox_head.share_conv_channel = 16

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=student,
    teacher=teacher,
    teacher_checkpoint='checkpoints/centerpoint_voxel01_nus_teacher.pth',  # a trained teacher
    teacher_mode='loss',  # mmdet3d's CenterPoint runs nothing in 'tensor' mode; truncated after its head
    distiller=dict(
        type='SparseKD', hm_weight=15.0, reg_weight=0.2, score_thresh=0.0, soft_mask=True, fg_mask=True,
        rank=-1, label_kd=True,
        label_score_thresh=[0.6] * 10,  # the official 0.6 for every class (Waymo: 3 classes)
        teacher_bn_mode='train', tgi=True))
