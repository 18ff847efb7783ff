# The benchmark teacher of tools/demo.py: the demo RetinaNet R50 teacher with a 128-channel FPN and
# head (about half the compute of the 256-channel demo model at 256 px, where the head's convs on
# P3 dominate). tools/demo.py adds the benchmark data (data/shapes_bench/, harder shapes) and the
# schedule; the exact config of each run is written to its work dir as config.py.
_base_ = ['../retinanet_r50_shapes_teacher.py']

fpn_channels = 128
model = dict(
    neck=dict(out_channels=fpn_channels),
    bbox_head=dict(in_channels=fpn_channels, feat_channels=fpn_channels))
