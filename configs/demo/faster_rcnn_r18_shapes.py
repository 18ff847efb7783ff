# Faster R-CNN ResNet-18 FPN on the generated shapes dataset, trained alone: the two-stage student
# baseline. The architecture of mmdet's faster_rcnn/faster-rcnn_r18_fpn_8xb8-amp-lsj-200e_coco.py
# (ResNet-18, FPN in_channels [64, 128, 256, 512], 256 output channels like the teacher's) with the
# teacher's dataset, heads and schedule, from scratch (no download).
_base_ = ['./faster_rcnn_r50_shapes_teacher.py']

model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512]))
