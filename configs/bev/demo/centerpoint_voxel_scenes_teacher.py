# The demo teacher: CenterPoint with 0.16 m voxels, full width, on the generated LiDAR scenes
# (the role of SparseKD's CP-Voxel teacher). A few minutes on CPU:
#   python tools/train.py configs/bev/demo/centerpoint_voxel_scenes_teacher.py
_base_ = ['./_base_/centerpoint_scenes.py']

