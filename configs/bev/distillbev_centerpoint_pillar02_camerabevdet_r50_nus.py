# DistillBEV (Wang et al., ICCV 2023) on nuScenes in mmdet3d 1.4 terms: the teacher is mmdet3d's
# CenterPoint pillar 0.2 (SECOND stages at 256 / 128 / 64 cells, SECONDFPN 384 ch at 128 x 128, 0.8 m),
# the student kdtoolbox.CameraBEVDet R50 on the same 128 x 128 grid (the official students are BEVDepth
# and BEVFormer). Taps as the official CenterPoint -> BEVDepth script: student BEV stages (128 ch at
# 128, 256 ch at 64) against the teacher's SECOND stages 2 and 3 (128 ch at 128, 256 ch at 64) with
# upsample_3layer adapters, and the neck (512 -> 384, 1x1 conv) with the teacher's false positives.
# Weights 6e-3 / 4e-2 / 6e-2 (fg / bg / fp), spatial 2.5e-3; gradient clip 5.
_base_ = ['./_base_/camera_bev_nus.py']

model = dict(
    teacher='mmdet3d::centerpoint/centerpoint_pillar02_second_secfpn_8xb4-cyclic-20e_nus-3d.py',
    teacher_checkpoint='checkpoints/centerpoint_02pillar_second_secfpn_4x8_cyclic_20e_nus.pth',
    distiller=dict(
        type='DistillBEV',
        taps=dict(
            stage2=dict(student='bev_backbone.blocks.0', teacher='pts_backbone.blocks.1', student_channels=128,
                        teacher_channels=128, adapter='upsample_3layer'),
            stage3=dict(student='bev_backbone.blocks.1', teacher='pts_backbone.blocks.2', student_channels=256,
                        teacher_channels=256, adapter='upsample_3layer'),
            neck=dict(student='bev_neck', teacher='pts_neck', student_channels=512, teacher_channels=384,
                      adapter='1x1conv', false_positives=True)),
        alpha=6e-3, beta=4e-2, gamma=6e-2, delta=2.5e-3))
optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
