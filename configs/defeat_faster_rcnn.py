# DeFeat (Guo et al., CVPR 2021): Faster R-CNN R101-FPN teacher -> Faster R-CNN R50-FPN student, COCO.
# The paper's main pair (student 37.4 -> 40.9 mAP). Decoupled neck loss on P2-P6 (5 levels, as the
# official code) plus the decoupled RoI classification KL; hyper-parameters of the official config
# configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_decouple_neck.py of ggjy/DeFeat.pytorch, with its
# grad clip (35). Student data pipeline and 1x schedule: mmdet's faster-rcnn_r50_fpn_1x_coco (the
# 37.4 baseline); teacher: mmdet's faster-rcnn_r101_fpn_2x_coco (39.8 box AP in the model zoo).
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']

# The teacher's model dict from mmdet's model-zoo config (mmengine.hub.get_config resolves 'mmdet::'
# paths; the import comes after _base_ so that mmengine parses this file as a plain config).
from mmengine.hub import get_config as __zoo_config  # noqa: E402

__teacher = __zoo_config('mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py').model
__teacher._scope_ = 'mmdet'

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher=__teacher,
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/faster_rcnn_r101_fpn_2x_coco/'
                       'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    distiller=dict(
        type='DeFeat',
        student_channels=256, teacher_channels=256,
        num_levels=5,                  # P2-P6 (the neck's 5 outputs, P6 included, as officially)
        strides=[4, 8, 16, 32, 64],    # the RPN anchor strides
        finest_scale=56,               # GT -> level: floor(log2(sqrt((w+1)(h+1)) / 56 + 1e-6))
        hint_neck_w=3.0,               # foreground neck loss
        hint_neck_back_w=12.0,         # background neck loss
        adapter_kernel_size=3, adapter_init='near_zero', adapter_std=1e-4,
        roi_cls=True,                  # decoupled RoI classification KL on the student's sampled RoIs
        head_cls_w=2.0,                # positive RoIs
        head_cls_back_w=2.0,           # background RoIs
        head_cls_T=1.0))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
