# DeFeat (Guo et al., CVPR 2021): RetinaNet R101-FPN teacher -> RetinaNet R50-FPN student, COCO
# (paper: student 36.5 -> 39.7 mAP). One-stage: the decoupled neck loss only (P3-P7), with the
# official weights and adapters. Student data pipeline and 1x schedule: mmdet's
# retinanet_r50_fpn_1x_coco (the 36.5 baseline); teacher: mmdet's retinanet_r101_fpn_2x_coco
# (38.9 box AP in the model zoo).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']

# The teacher's model dict from mmdet's model-zoo config (mmengine.hub.get_config resolves 'mmdet::'
# paths; the import comes after _base_ so that mmengine parses this file as a plain config).
from mmengine.hub import get_config as __zoo_config  # noqa: E402

__teacher = __zoo_config('mmdet::retinanet/retinanet_r101_fpn_2x_coco.py').model
__teacher._scope_ = 'mmdet'

model = dict(
    _delete_=True,
    type='kdtoolbox.DistillationModel',
    student={{_base_.model}},
    teacher=__teacher,
    teacher_checkpoint='https://download.openmmlab.com/mmdetection/v2.0/retinanet/retinanet_r101_fpn_2x_coco/'
                       'retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
    distiller=dict(
        type='DeFeat',
        student_channels=256, teacher_channels=256,
        num_levels=5,                    # P3-P7
        strides=[8, 16, 32, 64, 128],    # the RetinaHead anchor strides
        finest_scale=56,
        hint_neck_w=3.0,
        hint_neck_back_w=12.0,
        adapter_kernel_size=3, adapter_init='near_zero', adapter_std=1e-4))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
