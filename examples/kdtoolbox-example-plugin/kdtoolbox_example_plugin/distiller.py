import torch.nn as nn
import torch.nn.functional as F

from kdtoolbox.engine import BaseDistiller


class NeckL1(BaseDistiller):
    """L1 between the first level of the student's and the teacher's neck outputs, the student's
    mapped to the teacher's channels by a learnable 1x1 conv (trained with the student)."""

    def __init__(self, student_channels=256, teacher_channels=256, loss_weight=1.0, init_cfg=None):
        super().__init__(student_recorders={'neck': 'neck'}, teacher_recorders={'neck': 'neck'}, init_cfg=init_cfg)
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        self.loss_weight = loss_weight

    def forward(self, student, teacher, context):  # Records, Records, DistillContext (GT boxes, shapes, iteration)
        s = self.adapter(student['neck'][0])
        return {'p0.loss_l1': self.loss_weight * F.l1_loss(s, teacher['neck'][0])}
