# SparseKD with a coarser pillar student (the role of CP-Pillar-v0.64): CenterPoint voxel teacher
# (0.16 m voxels, 32 x 32 heatmaps) -> CenterPoint-Pillar 0.64 m (16 x 16 heatmaps). The teacher
# voxelises the same augmented points with its own data preprocessor (the official DIFF_VOXEL); the
# student's heatmaps are resized to the teacher's (bilinear) and the regression KD is off (the maps
# differ, as in the official pillar configs, REG_LOSS weight 0). The architectures differ, so no TGI.
#   python tools/train.py configs/bev/demo/centerpoint_voxel_scenes_teacher.py
#   python tools/train.py configs/bev/demo/sparsekd_pillar064_scenes.py
# Baseline: centerpoint_pillar064_scenes.py.
_base_ = ['./centerpoint_pillar064_scenes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='{{fileDirname}}/centerpoint_voxel_scenes_teacher.py',
    teacher_checkpoint='work_dirs/centerpoint_voxel_scenes_teacher',
    teacher_mode='loss',
    teacher_preprocessor='teacher',
    distiller=dict(
        type='SparseKD',
        hm_weight=7.0, reg_weight=0.0,             # cp-pillar-v0.64_sparsekd.yaml
        label_kd=True, label_score_thresh=[0.6, 0.5, 0.5],
        teacher_bn_mode='train',
        tgi=False))
