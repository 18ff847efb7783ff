# Mimic (Li, Jin, Yan, "Mimicking Very Efficient Network for Object Detection", CVPR 2017):
# Faster R-CNN R101-FPN teacher (mmdet model zoo, 2x, 39.8 box AP) -> Faster R-CNN R50-FPN student
# (37.4 box AP alone), COCO 1x schedule. The paper has no COCO result (Caltech / VOC with
# Inception-style students); the reference COCO reproduction is ModelTC/EOD's SampleFeature mimic
# (Faster R-CNN R152 teacher 42.3 -> R50 student 38.0 alone, 39.8 with Mimic). The student's
# config, data, schedule and runtime are mmdet's faster-rcnn_r50_fpn_1x_coco.py unchanged
# (ImageNet-pretrained R50, 8 GPUs x 2 images, lr 0.02).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

# The teacher's model dict from mmdet's model zoo config (mmengine.hub.get_config resolves
# 'mmdet::' paths from the installed mmdet, nothing is downloaded; the import comes after _base_
# so that mmengine parses this file as a plain config).
from mmengine.hub import get_config as __zoo_config  # noqa: E402

__teacher = __zoo_config('mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py').model
__teacher._scope_ = 'mmdet'

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student=_base_.model,
    teacher=__teacher,
    # downloaded on first use (mmengine's load_checkpoint); a local copy works as well
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
                       'faster_rcnn_r101_fpn_2x_coco/'
                       'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    distiller=dict(
        type='Mimic',
        # the paper: the student's own RPN proposals (its train_cfg.rpn_proposal: up to 1000 per
        # image); 'teacher' is EOD's default
        proposals='student',
        student_channels=256,
        teacher_channels=256,
        # mmdet's Faster R-CNN FPN bbox_roi_extractor: RoIAlign 7x7 on P2-P5, finest_scale 56
        roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                           featmap_strides=[4, 8, 16, 32], finest_scale=56),
        loss_weight=1.0))
