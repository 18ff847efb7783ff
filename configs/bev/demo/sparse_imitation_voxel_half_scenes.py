# Sparse voxel feature imitation on the generated LiDAR scenes: CenterPoint voxel teacher -> the half-width
# student (same voxels), the four SparseEncoder stages imitated at their common active sites through
# per-stage nn.Linear adapters (kdtoolbox.adapters.SparseLinearAdapter).
#   python tools/train.py configs/bev/demo/centerpoint_voxel_scenes_teacher.py
#   python tools/train.py configs/bev/demo/sparse_imitation_voxel_half_scenes.py
# Baseline: centerpoint_voxel_half_scenes.py.
_base_ = ['./centerpoint_voxel_half_scenes.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='{{fileDirname}}/centerpoint_voxel_scenes_teacher.py',
    teacher_checkpoint='work_dirs/centerpoint_voxel_scenes_teacher',
    teacher_mode='loss',  # CenterPoint runs nothing in 'tensor' mode; truncated after its middle encoder
    distiller=dict(
        type='SparseVoxelImitation',
        encoder='pts_middle_encoder',
        stages=(0, 1, 2, 3),
        student_channels=(8, 16, 32, 32),    # the outputs of encoder_layer1..4 (width 0.5)
        teacher_channels=(16, 32, 64, 64),
        loss_weight=1.0,
        adapter=dict(type='SparseLinearAdapter')))
