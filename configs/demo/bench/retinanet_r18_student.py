# The benchmark student baseline of tools/demo.py: the demo RetinaNet R18 (retinanet_r18_shapes.py)
# with the 128-channel FPN and head of the benchmark teacher (retinanet_r50_teacher.py), trained
# alone. tools/demo.py adds the benchmark data and schedule.
_base_ = ['../retinanet_r18_shapes.py']

fpn_channels = 128
model = dict(
    neck=dict(out_channels=fpn_channels),
    bbox_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels))
