"""Teacher-guided initialisation (TGI) of SparseKD: the teacher's weights, narrowed to the student's width.

Official code: CVMI-Lab/SparseKD ``pcdet/utils/kd_utils/kd_tgi_utils.py`` (``REMAP_PRETRAIN``, the
released configs use ``WAY: FNAV2``). FNAV2 keeps, along every dimension of every tensor, the first
``n`` indices, where ``n`` is the student's size of that dimension (``tensor.narrow(d, 0, n)``): conv
and linear weights ``[out, in, ...]``, spconv 2 weights ``[out, kD, kH, kW, in]`` (spconv 1 layouts
``[kD, kH, kW, in, out]`` are permuted first, as the official code does), biases, BatchNorm affine
parameters and running statistics. Inputs that are a concatenation of several tensors need index
bookkeeping, because "the first n channels" of a concatenation are not the concatenation of each
part's first channels:

- the dense head's input: the neck (SECONDFPN) concatenates its upsampling branches
  ``[t_0, t_1, ...]`` channels; a student with ``[s_0, s_1, ...]`` keeps, of the consumer's input
  dimension, ``[0, s_0) U [t_0, t_0 + s_1) U ...``. :func:`secondfpn_concat_inputs` finds these
  segments for an mmdet3d detector (``pts_neck`` / ``neck`` of type SECONDFPN feeding
  ``<head>.shared_conv``);
- the BEV map of mmdet3d's ``SparseEncoder`` is ``dense().view(N, C * D, H, W)``: channel ``c * D + d``.
  A student with ``C_s < C_t`` channels and the same ``D`` keeps channels ``c < C_s``, i.e. indices
  ``[0, C_s * D)``: exactly the first ones, so plain narrowing is right there. (OpenPCDet's
  HeightCompression is the same view; the official code re-indexes it as ``d * C + c``, which is
  not the layout of that view; here the layout of the view is followed.)

``mode='first'`` is FNAV2. The official alternatives OFA (largest L1 norm of output channels) and
BN_SCALE (largest |gamma|) need the order in which layers feed each other; they are not implemented
(a clear error says so).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log

#: the TGI modes implemented (the official FNAV2); OFA / BN_SCALE are refused with a clear error
TGI_MODES = ('first',)


def concat_index(teacher_segments: Sequence[int], student_segments: Sequence[int],
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Indices into a concatenation of ``teacher_segments`` channels that keep the first
    ``student_segments[i]`` channels of each part ``i``: ``[sum_i s_i]`` long."""
    if len(teacher_segments) != len(student_segments):
        raise ValueError(f'TGI: a concatenation of {len(teacher_segments)} parts in the teacher but '
                         f'{len(student_segments)} in the student')
    parts, offset = [], 0
    for t, s in zip(teacher_segments, student_segments):
        if s > t:
            raise ValueError(f'TGI: a student part of {s} channels is wider than the teacher part ({t})')
        parts.append(torch.arange(offset, offset + s, device=device))
        offset += t
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=device)


def narrow_tensor(value: torch.Tensor, shape: Sequence[int], key: str = '',
                  index: Optional[Mapping[int, torch.Tensor]] = None) -> torch.Tensor:
    """``value`` cut to ``shape``: along dimension ``d`` the indices ``index[d]`` when given, else the
    first ``shape[d]`` (FNAV2). Raises when a dimension of the target is larger or the ranks differ."""
    if value.dim() != len(shape):
        raise ValueError(f'TGI: {key!r} has {value.dim()} dimensions in the teacher and {len(shape)} in the student')
    out = value
    for d, size in enumerate(shape):
        if index is not None and d in index:
            idx = index[d].to(out.device)
            if len(idx) != size:
                raise ValueError(f'TGI: {key!r} dimension {d}: {len(idx)} indices for a size of {size}')
            out = out.index_select(d, idx)
        elif size > out.shape[d]:
            raise ValueError(f'TGI: {key!r} dimension {d} is {size} in the student but only {out.shape[d]} in '
                             f'the teacher: the student must not be wider than the teacher')
        else:
            out = out.narrow(d, 0, size)
    return out.contiguous()


def _spconv1_to_spconv2(value: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """A 5-D sparse-conv weight in spconv 1 / mmcv layout ``[k, k, k, in, out]`` permuted to spconv 2's
    ``[out, k, k, k, in]`` when the kernel dimensions say so (as the official ``_narrow_weight``)."""
    if value.dim() == 5 and tuple(value.shape[1:4]) != tuple(shape[1:4]) and tuple(value.shape[:3]) == tuple(shape[1:4]):
        return value.permute(4, 0, 1, 2, 3)
    return value


def narrow_state_dict(teacher_state: Mapping[str, torch.Tensor], student_state: Mapping[str, torch.Tensor],
                      concat_inputs: Optional[Mapping[str, tuple]] = None, mode: str = 'first',
                      ) -> tuple[dict, list, list]:
    """The teacher's tensors narrowed to the student's shapes (TGI).

    Args:
        teacher_state: the teacher's ``state_dict()`` (a checkpoint's, ``module.`` stripped).
        student_state: the student's ``state_dict()``: only its shapes are read.
        concat_inputs: key -> ``(dim, teacher_segments, student_segments)`` for tensors whose
            dimension ``dim`` indexes a concatenation (see :func:`secondfpn_concat_inputs`).
        mode: 'first' (FNAV2).

    Returns:
        ``(state, missing, skipped)``: the narrowed tensors keyed like the student; the student's keys
        the teacher lacks; the teacher's keys the student lacks.
    """
    if mode not in TGI_MODES:
        raise ValueError(f"TGI: mode {mode!r} is not implemented (implemented: {TGI_MODES}; the official "
                         f"OFA and BN_SCALE need the layer graph; FNAV2, 'first', is what the released "
                         f"SparseKD configs use)")
    concat_inputs = dict(concat_inputs or {})
    state, missing = {}, []
    for key, target in student_state.items():
        if key not in teacher_state:
            missing.append(key)
            continue
        value = teacher_state[key]
        shape = tuple(target.shape)
        value = _spconv1_to_spconv2(value, shape)
        index = None
        if key in concat_inputs:
            dim, t_seg, s_seg = concat_inputs[key]
            if sum(t_seg) != value.shape[dim] or sum(s_seg) != shape[dim]:
                raise ValueError(f'TGI: {key!r} dimension {dim} is {value.shape[dim]} (teacher) / {shape[dim]} '
                                 f'(student) but the concatenation segments sum to {sum(t_seg)} / {sum(s_seg)}')
            index = {dim: concat_index(t_seg, s_seg)}
        state[key] = narrow_tensor(value, shape, key, index).to(dtype=target.dtype)
    skipped = [k for k in teacher_state if k not in student_state]
    return state, missing, skipped


def secondfpn_concat_inputs(student: nn.Module, teacher: nn.Module, head: str = 'pts_bbox_head',
                            neck: Optional[str] = None) -> dict:
    """``concat_inputs`` for an mmdet3d detector whose SECONDFPN neck feeds ``<head>.shared_conv``:
    ``{'<head>.shared_conv.conv.weight': (1, teacher out_channels, student out_channels)}``; empty when
    the models have no SECONDFPN neck or the two necks have the same widths."""
    names = [neck] if neck else ['pts_neck', 'neck']
    for name in names:
        s_neck, t_neck = getattr(student, name, None), getattr(teacher, name, None)
        if s_neck is None or t_neck is None or type(s_neck).__name__ != 'SECONDFPN':
            continue
        s_seg = [len_of(b) for b in s_neck.deblocks]
        t_seg = [len_of(b) for b in t_neck.deblocks]
        if s_seg == t_seg:
            return {}
        return {f'{head}.shared_conv.conv.weight': (1, t_seg, s_seg)}
    return {}


def len_of(block: nn.Module) -> int:
    """Output channels of a SECONDFPN deblock (its last BatchNorm's width)."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError('TGI: a SECONDFPN deblock without a norm layer: cannot read its width')
    return norms[-1].num_features


def teacher_guided_init(student: nn.Module, teacher_state: Mapping[str, torch.Tensor],
                        concat_inputs: Optional[Mapping[str, tuple]] = None, mode: str = 'first',
                        strict: bool = False) -> dict:
    """Load the teacher's weights narrowed to the student's width into ``student`` (in place).

    Returns ``{'loaded': n, 'missing': [...], 'skipped': [...]}``; ``strict`` raises when the student
    has keys the teacher lacks.
    """
    state, missing, skipped = narrow_state_dict(teacher_state, student.state_dict(), concat_inputs, mode)
    if strict and missing:
        raise KeyError(f'TGI: the teacher has no weights for {len(missing)} student keys, e.g. {missing[:5]}')
    # copied in place, not through load_state_dict: mmdet3d's spconv-2 loading hook permutes 5-D
    # weights of a state dict without spconv-2 version metadata (it takes them for spconv 1 layouts)
    targets = student.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in state.items():
            targets[key].copy_(value)
    print_log(f'TGI ({mode}): {len(state)} student tensors initialised from the teacher'
              f'{f", {len(missing)} kept (not in the teacher)" if missing else ""}', logger='current')
    return {'loaded': len(state), 'missing': missing, 'skipped': skipped}
