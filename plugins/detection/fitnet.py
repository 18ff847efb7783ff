"""FitNet hint learning on detector neck features (Romero et al., ICLR 2015; for detectors as in
Chen et al., NeurIPS 2017).

Per FPN level l, a 1x1 conv adapter r_l maps the student feature S_l ``[N, C_s, H_l, W_l]`` to
the teacher's channels, and the hint loss is the squared error to the teacher feature
T_l ``[N, C_t, H_l, W_l]``::

    L = loss_weight * sum_l  reduce((r_l(S_l) - T_l)^2)

``reduction='mean'`` (default) averages over N * C * H_l * W_l, as ``F.mse_loss`` and mdistiller
do: every level weighs the same whatever its size, and the loss is O(feature variance), so
``loss_weight`` around 1 is on the scale of the detection losses. ``reduction='sum_per_image'``
is the paper's ``1/2 ||u - r(v)||^2`` per image (summed over C, H, W, averaged over N); it is
~C*H*W times larger, so its weight must be ~1e-4..1e-6 (FGD-like scales).
The teacher features are detached; the adapters belong to the distiller (trained with the
student, not exported with it).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn

from kdtoolbox.adapters import ConvAdapter
from kdtoolbox.engine import BaseDistiller, DistillContext, FeaturePair, Records
from kdtoolbox.losses import feature_mse


class FitNet(BaseDistiller):
    """FitNet hint loss on every level of a tuple-valued module output (default: ``neck``).

    Args:
        student_channels: channels of the student's levels (an int for all levels).
        teacher_channels: channels of the teacher's levels.
        num_levels: number of levels used (the first ``num_levels`` of the recorded tuple).
        student_module, teacher_module: the recorded modules; their output is a tuple of levels.
        kernel_size: of the adapters (1 in FitNet-for-detection; 3 is also common).
        adapter_init: see :func:`kdtoolbox.adapters.init_adapter_weights`.
        loss_weight, reduction: see the module docstring.
    """

    def __init__(self, student_channels: Union[int, Sequence[int]] = 256,
                 teacher_channels: Union[int, Sequence[int]] = 256, num_levels: int = 5,
                 student_module: str = 'neck', teacher_module: str = 'neck', kernel_size: int = 1,
                 adapter_init: str = 'default', loss_weight: float = 1.0, reduction: str = 'mean',
                 init_cfg=None):
        super().__init__(student_recorders={'features': student_module},
                         teacher_recorders={'features': teacher_module}, init_cfg=init_cfg)
        s_ch = [student_channels] * num_levels if isinstance(student_channels, int) else list(student_channels)
        t_ch = [teacher_channels] * num_levels if isinstance(teacher_channels, int) else list(teacher_channels)
        if len(s_ch) != num_levels or len(t_ch) != num_levels:
            raise ValueError(f'FitNet: {num_levels} levels but {len(s_ch)} student / {len(t_ch)} '
                             f'teacher channel counts')
        self.num_levels = num_levels
        self.adapters = nn.ModuleList(
            ConvAdapter(s, t, kernel_size=kernel_size, init=adapter_init) for s, t in zip(s_ch, t_ch))
        feature_mse(torch.zeros(1), torch.zeros(1), reduction)  # validate the reduction now
        self.loss_weight = loss_weight
        self.reduction = reduction

    def feature_pairs(self, student: Records, teacher: Records) -> list[FeaturePair]:
        """Per level, the student's feature through its adapter against the teacher's; a mismatch
        names the level's ``student_channels`` / ``teacher_channels`` entry that builds the adapter."""
        s_levels, t_levels = student['features'], teacher['features']
        pairs = []
        for level, adapter in enumerate(self.adapters[:min(len(s_levels), len(t_levels))]):
            key = (f'distiller.student_channels / teacher_channels (level {level}: ConvAdapter '
                   f'{adapter.conv.in_channels} -> {adapter.conv.out_channels})')
            pairs.extend(FeaturePair.from_values(f'features[{level}]', f'features[{level}]', s_levels[level],
                                                 t_levels[level], student_adapter=adapter, student_adapter_key=key,
                                                 where=f'distiller (FitNet, fpn{level})'))
        return pairs

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_levels, t_levels = student['features'], teacher['features']
        if len(s_levels) < self.num_levels or len(t_levels) < self.num_levels:
            raise ValueError(f'FitNet: expected {self.num_levels} levels, the student gave '
                             f'{len(s_levels)} and the teacher {len(t_levels)}')
        losses = {}
        for level, adapter in enumerate(self.adapters):
            s = adapter(s_levels[level])
            losses[f'fpn{level}.loss_hint'] = self.loss_weight * feature_mse(
                s, t_levels[level].detach(), self.reduction)
        return losses


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(FitNet)
