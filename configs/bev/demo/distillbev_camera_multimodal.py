# DistillBEV (ICCV 2023), LiDAR CenterPoint-Pillar -> camera CameraBEVDet on the generated multi-modal
# scenes, three taps as the official CenterPoint -> BEVDepth pair: the two BEV backbone stages (student
# 32 / 64 ch, teacher 64 / 128 ch; upsample_3layer adapters) and the BEV neck (96 -> 128 ch, 1x1 conv)
# with the teacher's false positives.
_base_ = ['./_base_/multimodal_distill.py']

model = dict(distiller=dict(
    type='DistillBEV',
    taps=dict(
        stage1=dict(student='bev_backbone.blocks.0', teacher='pts_backbone.blocks.0', student_channels=32,
                    teacher_channels=64, adapter='upsample_3layer'),
        stage2=dict(student='bev_backbone.blocks.1', teacher='pts_backbone.blocks.1', student_channels=64,
                    teacher_channels=128, adapter='upsample_3layer'),
        neck=dict(student='bev_neck', teacher='pts_neck', student_channels=96, teacher_channels=128,
                  adapter='1x1conv', false_positives=True))))
