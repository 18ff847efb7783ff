# FGFI (Wang et al., CVPR 2019) on an FPN Faster R-CNN: R101-FPN teacher -> R50-FPN student, COCO.
# The paper's own pair (VGG16 -> VGG11 Faster R-CNN without FPN, VOC07: 59.6 -> 67.6 with a 70.1
# teacher in the official README) has no mmdet model-zoo config; this is the FPN variant that the
# DeFeat code uses as its FGFI baseline (configs/kd_faster_rcnn/voc_stu_faster_rcnn_r50_FGFI.py): each
# GT assigned to one FPN level, imitation mask from that level's RPN anchors (3 per location), psi 0.5.
# Loss as the FGFI code: sum over channels / (2 x imitated locations), lambda 0.01, 3x3 conv + ReLU
# adapters with near-zero init, and imitation off for the first 400 iterations.
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
        type='FGFI',
        student_channels=256, teacher_channels=256,
        num_levels=5,             # P2-P6, the RPN's levels (anchors: the student's rpn_head)
        psi=0.5,
        fpn_assign=True,          # False: every GT on every level (the single-map method per level)
        finest_scale=56,
        normalize='locations',    # 'elements' (x channels) reproduces the DeFeat code's FGFI baseline
        level_reduction='mean',   # per-level losses averaged, as the DeFeat code
        loss_weight=0.01,         # lambda
        adapter_kernel_size=3,
        adapter_relu=True,        # FGFI's adapter (its VGG conv5 target is post-ReLU); FPN outputs
                                  # are signed: adapter_relu=False lets the adapter match them fully
        adapter_init='near_zero', adapter_std=1e-4))

custom_hooks = [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=400)]
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
