# The LiDAR teacher of the cross-modal demos, trained alone on the generated multi-modal scenes:
#   python tools/train.py configs/bev/demo/multimodal_centerpoint_pillar_teacher.py
# (work dir work_dirs/multimodal_centerpoint_pillar_teacher, read by the distillation demos).
_base_ = ['./_base_/multimodal_models.py']
model = {{_base_.teacher_model}}
