# GID (Dai et al., "General Instance Distillation for Object Detection", CVPR 2021): RetinaNet
# ResNet-101 FPN teacher -> RetinaNet ResNet-50 FPN student, 2x COCO schedule.
# Paper (abstract; the authors' own framework, not reproduced here): student 36.2 -> 39.1 box mAP
# with a 38.1 R101 teacher. In mmdet's model zoo the same teacher (retinanet_r101_fpn_1x_coco)
# reaches 38.5 and the student baseline (retinanet_r50_fpn_2x_coco) 37.4.
#
# Hyper-parameters: the authors' Detectron2 reference (daixinghome/Distill_GID_detectron2,
# GID/config/Distill_RetinaNet_T_Res101_S_Res50_2x_L1Smo.yaml): GISM NMS IoU 0.3, pre-NMS top 3000,
# K = 10 instances per image, min side 10 px; RoIAlignV2 10x10 (sampling 2) on P3-P7; loss weights
# feature 5e-4, relation 40, response cls 0.1, response reg 1.0 (SmoothL1 beta 0.1); 3x3 adapter
# shared across levels; SGD lr 0.01, 16 images per batch, 180k iterations (= mmdet's 2x).
# The student, data, schedule and runtime are mmdet's retinanet_r50_fpn_2x_coco.py (its L1 box loss;
# the reference's Detectron2 student and teacher use SmoothL1 box losses). No gradient clipping, as
# the reference.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_2x_coco.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='mmdet::retinanet/retinanet_r101_fpn_1x_coco.py',
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_1x_coco/'
                       'retinanet_r101_fpn_1x_coco_20200130-7a93545f.pth',
    distiller=dict(
        type='GID',
        student_channels=256, teacher_channels=256,
        # GISM
        nms_pre=3000, nms_iou=0.3, num_instances=10, min_box_size=10,
        # RoIAlignV2 10x10 on P3-P7, Detectron2's canonical level rule (224 px -> P4)
        roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=10, sampling_ratio=2, aligned=True),
                           featmap_strides=[8, 16, 32, 64, 128], finest_scale=112),
        adapt_on='features',  # one 3x3 conv on the student's FPN maps (really applied, trained)
        # the shipped YAML's weights (the reference code's defaults are 0.005 / 40 / 0.1 / 0.1)
        loss_weight_feature=5e-4, loss_weight_relation=40, loss_weight_cls=0.1, loss_weight_reg=1.0,
        reg_beta=0.1, relation_beta=1.0))

# the official batch: 16 images (mmdet's 8 GPUs x 2 images)
auto_scale_lr = dict(enable=False, base_batch_size=16)
