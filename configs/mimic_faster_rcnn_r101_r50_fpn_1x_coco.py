# Mimic (Li, Jin, Yan, "Mimicking Very Efficient Network for Object Detection", CVPR 2017):
# Faster R-CNN R101-FPN teacher (mmdet model zoo, 2x, 39.8 box AP) -> Faster R-CNN R50-FPN student,
# COCO 1x schedule. The paper has no COCO result (Caltech / VOC with Inception students); the
# reference COCO reproduction is ModelTC/EOD's SampleFeature mimic (Faster R-CNN R152 42.3 -> R50:
# 38.0 -> 39.8). The student's config, data, schedule and runtime are mmdet's
# faster-rcnn_r50_fpn_1x_coco.py unchanged (ImageNet-pretrained R50, 8 GPUs x 2 images).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
                       'faster_rcnn_r101_fpn_2x_coco/'
                       'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    distiller=dict(
        type='Mimic',
        # the paper: the student's own RPN proposals (train_cfg.rpn_proposal: up to 1000 per image);
        # 'teacher' is EOD's default
        proposals='student',
        student_channels=256,
        teacher_channels=256,
        # mmdet's Faster R-CNN FPN bbox_roi_extractor: RoIAlign 7x7 on P2-P5, finest_scale 56
        roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                           featmap_strides=[4, 8, 16, 32], finest_scale=56),
        loss_weight=1.0))
