# Rank Mimicking + Prediction-guided Feature Imitation (Li et al., AAAI 2022, "Knowledge
# Distillation for Object Detection via Rank Mimicking and Prediction-guided Feature Imitation"):
# RetinaNet ResNet-101 FPN 2x (38.9 box mAP, mmdet model zoo) teacher -> RetinaNet ResNet-50 FPN
# student, 2x COCO schedule (SGD lr 0.01, 8 GPUs x 2 images: mmdet's retinanet_r50_fpn_2x).
# No official code: the weights are those of the mmrazor 0.x prototype (PR #107,
# configs/distill/rank_mimicing/rm_pgfi_retina_r101_retina_r50_2x_coco.py): RM 4, PFI 1.5;
# temperature 1 (the prototype has none; the paper's value is not verified here).
# Paper (abstract): RetinaNet R50 40.4 box mAP, +3.5 over its baseline; the paper's ablation
# (Tab. 1, via a secondary summary, not verified): RM alone +1.4, PFI alone +2.3.
# RankMimicking alone / PFI alone: distiller type='RankMimicking' / type='PFI' (or the switches
# rank_mimic=False / pfi=False below).
#
# Get the teacher's weights first (mmdet model zoo):
#   mkdir -p checkpoints && wget -P checkpoints https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth  # noqa: E501
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher='mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
    teacher_checkpoint='checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    # anchors and the MaxIoUAssigner (IoU >= 0.5) come from the student's bbox_head / train_cfg
    distiller=dict(type='RankMimicPFI', rank_mimic=True, pfi=True, rm_weight=4.0, pfi_weight=1.5,
                   temperature=1.0, detach_prediction=True, cls_module='bbox_head.retina_cls',
                   student_channels=256, teacher_channels=256))
