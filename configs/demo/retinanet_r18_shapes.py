# RetinaNet ResNet-18 FPN on the generated shapes dataset, trained alone: the student baseline.
# The architecture of mmdet's retinanet/retinanet_r18_fpn_1x_coco.py (ResNet-18, FPN in_channels
# [64, 128, 256, 512]) with the teacher's dataset and schedule, from scratch (no download).
_base_ = ['./retinanet_r50_shapes_teacher.py']

model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
