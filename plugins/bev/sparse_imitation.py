"""Sparse voxel feature imitation on mmdet3d's ``SparseEncoder`` middle features.

The student imitates the teacher's sparse voxel features stage by stage: for each recorded stage ``i``
(the outputs of ``<encoder>.encoder_layers.encoder_layer{i+1}``, spconv ``SparseConvTensor``s at
strides 1, 2, 4, 8 for the usual 4 stages; the same tensors that ``SparseEncoder(return_middle_feats=True)``
returns, recorded by forward hooks so the student's model and config stay unchanged),

- the student's tensor goes through its stage adapter (default :class:`kdtoolbox.adapters.SparseLinearAdapter`,
  ``nn.Linear(C_s, C_t)`` on every active site; ``dict(type='SubMConvAdapter', ...)`` for a bias-free
  3x3x3 submanifold conv);
- :func:`kdtoolbox.ops.sparse_imitation.gather_matched_features` pairs the student's active sites with
  the teacher's: equal grids match by site key (row order never matters), a student grid coarser by an
  integer ratio gets the teacher's features averaged onto its cells, other grids resample the densified
  teacher at the student's sites;
- ``L_i = mean_{m, c} (adapt(f_S)_{m,c} - f_T_{m,c})^2`` over the ``M`` matched sites (``0`` that still
  depends on the student when no site matches);
- ``sparse_imitation.loss_stage{i} = w_i * L_i``.

This is the voxel-level imitation described in the SparseKD paper's analysis and by PointDistiller-like
methods (``bev_kd.md`` 9.2), not the released SparseKD recipe (whose ``FEATURE_KD`` is disabled). It
works for students on the same voxel grid (any width) or a coarser one (e.g. twice the voxel size:
give the teacher its own voxelisation with ``teacher_preprocessor='teacher'``). The teacher runs in
``loss`` mode (mmdet3d's ``MVXTwoStageDetector._forward`` runs nothing) and stops after its middle
encoder.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.nn as nn

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.engine.distiller import build_adapter
from kdtoolbox.ops.sparse_imitation import gather_matched_features, sparse_imitation_loss
from kdtoolbox.ops.spconv_compat import import_spconv


def _per_stage(value, n: int, what: str) -> list:
    values = [value] * n if isinstance(value, (int, float)) else list(value)
    if len(values) != n:
        raise ValueError(f'SparseVoxelImitation: {n} stages but {len(values)} {what}')
    return values


class SparseVoxelImitation(BaseDistiller):
    """Stage-wise imitation of SparseEncoder features with per-stage adapters (see the module docstring).

    Args:
        student_channels, teacher_channels: output channels of each distilled stage.
        stages: 0-based indices of the encoder stages (``encoder_layer{i+1}``).
        encoder: the SparseEncoder's path in both models (``'pts_middle_encoder'`` for CenterPoint,
            ``'middle_encoder'`` for VoxelNet / SECOND).
        loss_weight: one weight, or one per stage.
        adapter: the adapter config without channels (``type`` and extra arguments), built per stage
            with ``in_channels`` / ``out_channels``.
        ratio: ``(rz, ry, rx)`` teacher cells per student cell (default: inferred per stage).
        resample_mode: interpolation of the fallback path when the grids have no integer ratio.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 stages: Sequence[int] = (0, 1, 2, 3), encoder: str = 'pts_middle_encoder',
                 loss_weight: Union[float, Sequence[float]] = 1.0,
                 adapter: Optional[dict] = None, ratio: Optional[Sequence[int]] = None,
                 resample_mode: str = 'trilinear', init_cfg=None):
        self.stages = [int(s) for s in stages]
        if not self.stages or min(self.stages) < 0:
            raise ValueError(f'SparseVoxelImitation: stages must be non-negative indices, got {stages}')
        recorders = {f'stage{i}': f'{encoder}.encoder_layers.encoder_layer{i + 1}' for i in self.stages}
        super().__init__(student_recorders=recorders, teacher_recorders=dict(recorders), init_cfg=init_cfg)
        import_spconv()  # the SparseEncoder's CPU backward needs the fix
        n = len(self.stages)
        s_ch = _per_stage(student_channels, n, 'student channel counts')
        t_ch = _per_stage(teacher_channels, n, 'teacher channel counts')
        self.loss_weights = [float(w) for w in _per_stage(loss_weight, n, 'loss weights')]
        self.encoder = encoder
        self.ratio = None if ratio is None else tuple(int(r) for r in ratio)
        self.resample_mode = resample_mode
        adapter = dict(adapter or dict(type='SparseLinearAdapter'))
        self.adapters = nn.ModuleList(
            build_adapter(dict(adapter, in_channels=s, out_channels=t), where=f'distiller.adapter (stage {i})')
            for i, s, t in zip(self.stages, s_ch, t_ch))

    def check_models(self, student: nn.Module, teacher: nn.Module) -> None:
        for owner, model in (('student', student), ('teacher', teacher)):
            try:
                enc = model.get_submodule(self.encoder)
            except AttributeError:
                raise ValueError(f'SparseVoxelImitation: the {owner} has no module {self.encoder!r} '
                                 f'(set encoder=...)') from None
            layers = getattr(enc, 'encoder_layers', None)
            if layers is None:
                raise ValueError(f'SparseVoxelImitation: the {owner} module {self.encoder!r} '
                                 f'({type(enc).__name__}) has no encoder_layers (not a SparseEncoder)')
            if max(self.stages) >= len(layers):
                raise ValueError(f'SparseVoxelImitation: stage {max(self.stages)} asked for, but the {owner} '
                                 f'encoder has {len(layers)} stages')

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        losses = {}
        for i, adapter, w in zip(self.stages, self.adapters, self.loss_weights):
            s_tensor = adapter(student[f'stage{i}'])
            fs, ft, _ = gather_matched_features(s_tensor, teacher[f'stage{i}'], self.ratio, self.resample_mode)
            if fs.shape[-1] != ft.shape[-1]:
                raise ValueError(f'SparseVoxelImitation stage {i}: the adapted student has {fs.shape[-1]} '
                                 f'channels, the teacher {ft.shape[-1]} (check teacher_channels)')
            losses[f'sparse_imitation.loss_stage{i}'] = w * sparse_imitation_loss(fs, ft.detach())
        return losses


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(SparseVoxelImitation)
