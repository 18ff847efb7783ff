# SparseKD on the generated LiDAR scenes: CenterPoint voxel teacher (width 1) -> the same network at
# half width (the role of CP-Voxel-XS/XXS), same voxels, so the heatmaps have the same size and the
# regression KD at GT centres applies. Train the teacher first (a few minutes):
#   python tools/train.py configs/bev/demo/centerpoint_voxel_scenes_teacher.py
#   python tools/train.py configs/bev/demo/sparsekd_voxel_half_scenes.py
# Baseline (same data, schedule and student, no teacher): centerpoint_voxel_half_scenes.py.
_base_ = ['./centerpoint_voxel_half_scenes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='{{fileDirname}}/centerpoint_voxel_scenes_teacher.py',
    teacher_checkpoint='work_dirs/centerpoint_voxel_scenes_teacher',  # its latest checkpoint
    # mmdet3d's CenterPoint runs nothing in 'tensor' mode: the teacher runs its loss path, truncated
    # right after its head (its own loss is never computed)
    teacher_mode='loss',
    distiller=dict(
        type='SparseKD',
        hm_weight=15.0, reg_weight=0.2,            # cp-voxel-xs_sparsekd.yaml
        score_thresh=0.0, soft_mask=True, fg_mask=True, rank=-1,
        label_kd=True, label_score_thresh=[0.6, 0.6, 0.6],
        teacher_bn_mode='train',                   # TEACHER_MODE: train
        tgi=True))                                  # REMAP_PRETRAIN (FNAV2) from the teacher
