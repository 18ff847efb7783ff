"""Anchor-to-GT assignment of an mmdet anchor head, and its per-level outputs as per-anchor rows.

Method-agnostic helpers for distillers that compare two dense detectors anchor by anchor on the
anchors a head assigns to each ground-truth box (Rank Mimicking, and any "positive anchors of a
GT" selection):

- :func:`levels_to_anchor_rows`: per-level head outputs ``[N, A * C, H_l, W_l]`` to one
  ``[N, sum_l H_l * W_l * A, C]`` tensor whose rows are in mmdet's anchor order (level, then
  ``h``, ``w``, then anchor), the order of ``prior_generator.grid_priors`` and of the targets of
  ``AnchorHead.loss_by_feat``.
- :func:`assign_anchors_to_gts`: for every image, the index of the GT each anchor is assigned to
  (``gt_inds [num_anchors]`` long: ``0`` negative or ignored, ``k + 1`` positive for GT ``k``),
  computed by the head's *own* machinery exactly as ``AnchorHead._get_targets_single`` does it:
  ``head.get_anchors`` (the head's ``prior_generator``; valid flags from ``pad_shape``),
  ``anchor_inside_flags`` with the head's ``train_cfg.allowed_border``, and the head's assigner
  (``head.assigner``, or one built from ``train_cfg.assigner`` through mmdet's ``TASK_UTILS``).
  Anchors outside the image (when ``allowed_border >= 0``) are never positive.

Everything runs under ``torch.no_grad()`` on the given device; the only loop is over images
(mmdet's assigners work per image).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

__all__ = ['levels_to_anchor_rows', 'box_centres', 'decode_dense_predictions', 'build_head_assigner',
           'assign_anchors_to_gts']


def levels_to_anchor_rows(mlvl: Sequence[Tensor], channels: int) -> Tensor:
    """``[N, A * C, H_l, W_l]`` per level -> ``[N, sum_l H_l W_l A, C]`` in mmdet's anchor order."""
    rows = []
    for level, t in enumerate(mlvl):
        if t.dim() != 4 or t.shape[1] % channels:
            raise ValueError(f'levels_to_anchor_rows: level {level} has shape {tuple(t.shape)}, '
                             f'expected [N, A * {channels}, H, W]')
        rows.append(t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, channels))
    return torch.cat(rows, dim=1)


def box_centres(priors: Tensor) -> Tensor:
    """Centres ``[P, 2]`` (x, y) of xyxy priors ``[P, 4]``."""
    return torch.stack(((priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2), dim=1)


def decode_dense_predictions(head: Any, cls_preds: Sequence[Tensor], reg_preds: Sequence[Tensor],
                             where: str = 'decode_dense_predictions') -> tuple[list[Tensor], Tensor, Tensor]:
    """An anchor head's raw outputs decoded with its own prior generator and box coder.

    ``cls_preds`` / ``reg_preds``: per level ``[N, A * C, H_l, W_l]`` / ``[N, A * R, H_l, W_l]``.
    Returns the priors of every level ``[H_l W_l A, 4]`` and, all levels concatenated in mmdet's
    anchor order, the class logits ``[N, P, C]`` and the decoded xyxy boxes ``[N, P, 4]`` (float32).
    GFL-style heads (an ``integral`` over ``reg_max + 1`` bins per side) decode distances from the
    anchor centres in units of each level's stride; other heads decode ``bbox_coder`` deltas.
    """
    sizes = [tuple(p.shape[-2:]) for p in cls_preds]
    device = cls_preds[0].device
    priors = head.prior_generator.grid_priors(sizes, dtype=torch.float32, device=device)
    if priors[0].shape[-1] != 4:
        raise TypeError(f'{where}: {type(head).__name__} has point priors: only anchor-based heads '
                        f'(GFLHead, ATSSHead, RetinaHead, ...) are supported')
    n = cls_preds[0].shape[0]
    logits = levels_to_anchor_rows([p.float() for p in cls_preds], head.cls_out_channels)
    boxes = []
    integral = getattr(head, 'integral', None)
    for level, (anchors, reg) in enumerate(zip(priors, reg_preds)):
        if integral is not None:  # GFL: a distribution per side, integrated, in stride units
            bins = 4 * (head.reg_max + 1)
            stride = head.prior_generator.strides[level][0]
            dist = integral(levels_to_anchor_rows([reg.float()], bins).reshape(-1, bins))
            level_boxes = head.bbox_coder.decode(box_centres(anchors).repeat(n, 1), dist * stride)
        else:
            size = head.bbox_coder.encode_size
            deltas = levels_to_anchor_rows([reg.float()], size).reshape(-1, size)
            level_boxes = head.bbox_coder.decode(anchors.repeat(n, 1), deltas)
        boxes.append(getattr(level_boxes, 'tensor', level_boxes).reshape(n, -1, 4))
    return priors, logits, torch.cat(boxes, dim=1)


def build_head_assigner(head: Any, assigner: Optional[Any] = None, where: str = 'head') -> Any:
    """The assigner to use: ``assigner`` (a config dict or a built one), else ``head.assigner``,
    else one built from ``head.train_cfg['assigner']``."""
    from mmdet.registry import TASK_UTILS
    if assigner is None:
        assigner = getattr(head, 'assigner', None)
    if assigner is None:
        train_cfg = getattr(head, 'train_cfg', None) or {}
        assigner = train_cfg.get('assigner') if hasattr(train_cfg, 'get') else None
        if assigner is None:
            raise ValueError(f'{where}: {type(head).__name__} has no assigner and no '
                             f"train_cfg['assigner']: give the assigner config explicitly")
    if isinstance(assigner, dict):
        assigner = TASK_UTILS.build(dict(assigner))
    return assigner


@torch.no_grad()
def assign_anchors_to_gts(head: Any, featmap_sizes: Sequence[Sequence[int]], data_samples: Sequence[Any],
                          device: torch.device, assigner: Optional[Any] = None,
                          allowed_border: Optional[float] = None) -> list[Tensor]:
    """Per image, ``gt_inds [num_anchors]`` (long): 0 for negative/ignored anchors, ``k + 1`` for
    anchors positive to GT ``k`` of ``data_samples[i].gt_instances``.

    Args:
        head: an mmdet anchor head with ``get_anchors`` (e.g. ``RetinaHead``, ``AnchorHead``).
        featmap_sizes: ``(H_l, W_l)`` per level.
        data_samples: ``DetDataSample`` s with ``gt_instances`` (``bboxes``, ``labels``), optional
            ``ignored_instances``, and ``metainfo`` with ``img_shape`` and ``pad_shape``.
        device: where the anchors and the result live.
        assigner: overrides the head's assigner (config dict or built).
        allowed_border: overrides ``head.train_cfg['allowed_border']`` (default -1: every anchor).
    """
    from mmdet.models.task_modules.prior_generators import anchor_inside_flags
    from mmdet.structures.bbox import get_box_tensor
    from mmengine.structures import InstanceData

    if not hasattr(head, 'get_anchors'):
        raise TypeError(f'assign_anchors_to_gts: {type(head).__name__} has no get_anchors() '
                        f'(an anchor head such as RetinaHead is needed)')
    assigner = build_head_assigner(head, assigner)
    if allowed_border is None:
        train_cfg = getattr(head, 'train_cfg', None) or {}
        allowed_border = train_cfg.get('allowed_border', -1) if hasattr(train_cfg, 'get') else -1
    metas = [s.metainfo for s in data_samples]
    sizes = [tuple(int(v) for v in s[-2:]) for s in featmap_sizes]
    anchor_list, valid_list = head.get_anchors(sizes, metas, device=device)
    result = []
    for img, sample in enumerate(data_samples):
        anchors = get_box_tensor(torch.cat([get_box_tensor(a) for a in anchor_list[img]]))
        valid = torch.cat(valid_list[img])
        inside = anchor_inside_flags(anchors, valid, metas[img]['img_shape'][:2], allowed_border)
        gt_inds = torch.zeros(anchors.shape[0], dtype=torch.long, device=device)
        gt = sample.gt_instances
        if len(gt) > 0 and bool(inside.any()):
            ignored = getattr(sample, 'ignored_instances', None)
            assign = assigner.assign(InstanceData(priors=anchors[inside]), gt.to(device),
                                     ignored.to(device) if ignored is not None and len(ignored) else None)
            gt_inds[inside] = assign.gt_inds.clamp(min=0).to(torch.long)
        result.append(gt_inds)
    return result
