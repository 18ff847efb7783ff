# The camera student alone (the baseline of the cross-modal distillation demos).
_base_ = ['./_base_/multimodal_models.py']
model = {{_base_.student_model}}
