# The demo teacher: CenterPoint with 0.16 m voxels, full width, on the generated LiDAR scenes
# (the role of SparseKD's CP-Voxel teacher). A few minutes on CPU:
#   python tools/train.py configs/bev/demo/centerpoint_voxel_scenes_teacher.py
_base_ = ['./_base_/centerpoint_scenes.py']

# 12 epochs of 16 iterations (batch 4): about 2 s an iteration on 2 CPU cores
max_epochs = 12
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=32),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
