# SparseKD, CP-Pillar teacher -> CP-Pillar-v0.4 student (same network, coarser pillars), in mmdet3d 1.4 terms.
# Paper / official repo (CVMI-Lab/SparseKD, tools/cfgs/waymo_models/cp-pillar/cp-pillar-v0.4_sparsekd.yaml):
# Waymo, 20 % training data, LEVEL 2 mAPH: CP-Pillar-v0.4 57.55 -> 59.24 (teacher CP-Pillar 0.32 m: 59.09).
# What differs here: the official pair is a Waymo 0.32 m CenterPoint-Pillar of OpenPCDet; mmdet3d 1.4's closest
# is its nuScenes CenterPoint pillar 0.2 m (PillarFeatureNet 64, SECOND [64, 128, 256], SECONDFPN 3 x 128,
# 128 x 128 heatmaps). The student keeps the network and takes 0.4 m pillars (256 x 256 canvas, 64 x 64
# heatmaps): the teacher voxelises the same augmented points with its own preprocessor (official DIFF_VOXEL),
# the student's heatmaps are resized to the teacher's, and the regression KD is off (maps differ; the official
# REG_LOSS weight is 0 for pillars). TGI loads the teacher as is (same widths), as the official pillar runs.
_base_ = ['mmdet3d::centerpoint/centerpoint_pillar02_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py']

pillar_size = [0.4, 0.4, 8.0]
teacher = 'mmdet3d::centerpoint/centerpoint_pillar02_second_secfpn_head-circlenms_8xb4-cyclic-20e_nus-3d.py'
student = _base_.model
student.data_preprocessor.voxel_layer.voxel_size = pillar_size
student.pts_voxel_encoder.voxel_size = pillar_size
student.pts_middle_encoder.output_shape = (256, 256)
student.pts_bbox_head.bbox_coder.voxel_size = pillar_size[:2]
student.train_cfg.pts.grid_size = [256, 256, 1]
student.train_cfg.pts.voxel_size = pillar_size
student.test_cfg.pts.voxel_size = pillar_size[:2]

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=student,
    teacher=teacher,
    teacher_checkpoint='checkpoints/centerpoint_pillar02_nus_teacher.pth',
    teacher_mode='loss',
    teacher_preprocessor='teacher',
    distiller=dict(
        type='SparseKD', hm_weight=7.0, reg_weight=0.0, label_kd=True,
        # the official [Vehicle 0.6, Pedestrian 0.5, Cyclist 0.5], mapped onto nuScenes' 10 classes
        label_score_thresh=[0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5, 0.6],
        teacher_bn_mode='train', tgi=True))
