# The narrow voxel student alone (the baseline of sparsekd_voxel_half_scenes.py): the teacher's network
# at half width everywhere (SparseEncoder 8..32, BEV 128, SECOND 32/64, FPN 64+64, shared conv 32);
# SparseKD's CP-Voxel-XS/XXS are narrower in the same way.
_base_ = ['./_base_/centerpoint_scenes.py']
width = 0.5


def _w(c):
    return int(round(c * width))


model = dict(
    pts_middle_encoder=dict(
        base_channels=_w(16), output_channels=_w(128),
        encoder_channels=((_w(16), ), (_w(32), _w(32), _w(32)), (_w(64), _w(64), _w(64)), (_w(64), _w(64), _w(64)))),
    pts_backbone=dict(in_channels=_w(128) * 2, out_channels=[_w(64), _w(128)]),
    pts_neck=dict(in_channels=[_w(64), _w(128)], out_channels=[_w(128), _w(128)]),
    pts_bbox_head=dict(in_channels=_w(128) * 2, share_conv_channel=_w(64)))
