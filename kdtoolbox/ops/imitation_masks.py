"""Ground-truth imitation masks on FPN grids: which feature locations a student must imitate.

Method-agnostic building blocks shared by GT-guided feature distillers (DeFeat, FGFI, ...):

- :func:`map_gt_levels`: one FPN level per GT box by the RoI-scale rule
  ``floor(log2(sqrt((w + 1) * (h + 1)) / finest_scale + 1e-6))`` clamped to ``[0, L - 1]``
  (the rule of mmdet's RoI extractor with the legacy ``+1`` pixel convention that DeFeat's code
  uses; level 0 is the finest level given, e.g. P2 of Faster R-CNN or P3 of RetinaNet).
- :func:`gt_level_masks`: DeFeat's binary per-level GT mask. On level ``l`` (stride ``s``) a box
  marks ``[int(y1/s):int(y2/s), int(x1/s):int(x2/s)]`` (truncation toward zero, exclusive end;
  start clamped at 0, end clamped at the grid size); a box whose truncated extent is empty in x or
  y (a degenerate or sub-cell box) marks the single cell ``(int(y1/s), int(x1/s))``.
- :func:`anchor_iou_masks`: FGFI's imitation mask. For each GT, the IoU with *every* anchor of the
  level (border-crossing anchors included) is compared with ``psi`` times that GT's best IoU; a
  location is marked when any of its anchors exceeds the threshold of any GT.

Boxes are xyxy pixels in the padded batch frame (mmdet 3.x ``gt_instances.bboxes``: the resized
image sits at the top-left of the padded batch, so its pixel coordinates are those of the batch).
Everything runs under ``torch.no_grad()`` on the device of the boxes (or ``device=``), loops over
levels only (plus one copy per image into a padded ``[B, K, 4]`` tensor), never over boxes, and
returns float masks ``[B, H_l, W_l]`` of 0/1.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ['gt_bboxes_from_samples', 'pad_gt_bboxes', 'map_gt_levels', 'gt_level_masks',
           'anchor_iou_masks', 'build_anchor_generator', 'find_prior_generator']

Size = Union[Sequence[int], torch.Size]


def gt_bboxes_from_samples(data_samples: Sequence[Any]) -> list[Tensor]:
    """The GT boxes ``[K_i, 4]`` (xyxy tensors) of each mmdet ``DetDataSample``."""
    from mmdet.structures.bbox import get_box_tensor
    boxes = []
    for i, sample in enumerate(data_samples or []):
        gt = getattr(sample, 'gt_instances', None)
        if gt is None or 'bboxes' not in gt:
            raise KeyError(f'data sample {i} has no gt_instances.bboxes')
        boxes.append(get_box_tensor(gt.bboxes).reshape(-1, 4))
    return boxes


def pad_gt_bboxes(bboxes_list: Sequence[Tensor], device: Optional[torch.device] = None
                  ) -> tuple[Tensor, Tensor]:
    """Stack per-image boxes into ``[B, K, 4]`` (float32, zero padded) and ``valid [B, K]``
    where ``K`` is the largest box count of the batch (0 when no image has a box)."""
    if device is None:
        device = next((b.device for b in bboxes_list if isinstance(b, Tensor)), torch.device('cpu'))
    num = len(bboxes_list)
    k = max((int(b.shape[0]) for b in bboxes_list), default=0)
    boxes = torch.zeros(num, k, 4, dtype=torch.float32, device=device)
    valid = torch.zeros(num, k, dtype=torch.bool, device=device)
    for i, b in enumerate(bboxes_list):  # one copy per image, not per box
        n = int(b.shape[0])
        if n:
            boxes[i, :n] = b.reshape(-1, 4).to(device=device, dtype=torch.float32)
            valid[i, :n] = True
    return boxes, valid


def map_gt_levels(bboxes: Tensor, num_levels: int, finest_scale: float = 56.0,
                  plus_one: bool = True) -> Tensor:
    """The FPN level (long, same leading shape as ``bboxes[..., 0]``) of each xyxy box.

    ``floor(log2(sqrt((w + 1) * (h + 1)) / finest_scale + 1e-6))`` clamped to ``[0, L - 1]``
    (``plus_one=False`` drops the legacy ``+1`` as mmdet 3.x's RoI extractor does). Degenerate
    or inverted boxes go to level 0.
    """
    one = 1.0 if plus_one else 0.0
    area = ((bboxes[..., 2] - bboxes[..., 0] + one).clamp(min=0)
            * (bboxes[..., 3] - bboxes[..., 1] + one).clamp(min=0))
    lvl = torch.floor(torch.log2(torch.sqrt(area) / finest_scale + 1e-6))
    return lvl.clamp(min=0, max=num_levels - 1).long()


def _pair(stride: Any) -> tuple[float, float]:
    """(stride_w, stride_h) from an int or an mmdet ``(w, h)`` pair."""
    if isinstance(stride, (tuple, list)):
        return float(stride[0]), float(stride[1])
    return float(stride), float(stride)


def _selection(boxes: Tensor, valid: Tensor, num_levels: int, assign_levels: bool,
               finest_scale: float) -> Tensor:
    """``[L, B, K]`` bool: which boxes take part on each level."""
    if not assign_levels:
        return valid.unsqueeze(0).expand(num_levels, *valid.shape)
    lvl = map_gt_levels(boxes, num_levels, finest_scale)
    levels = torch.arange(num_levels, device=boxes.device).view(-1, 1, 1)
    return valid.unsqueeze(0) & (lvl.unsqueeze(0) == levels)


@torch.no_grad()
def gt_level_masks(bboxes_list: Sequence[Tensor], featmap_sizes: Sequence[Size],
                   strides: Sequence[Any], finest_scale: float = 56.0, assign_levels: bool = True,
                   device: Optional[torch.device] = None) -> list[Tensor]:
    """DeFeat's binary GT masks, one ``[B, H_l, W_l]`` float tensor per level.

    Args:
        bboxes_list: per image, xyxy boxes ``[K_i, 4]`` (pixels of the padded batch).
        featmap_sizes: ``(H_l, W_l)`` per level.
        strides: per level, an int or an mmdet ``(stride_w, stride_h)`` pair.
        finest_scale: the RoI-scale rule's canonical size (56, as DeFeat).
        assign_levels: each box marks only its level (DeFeat); False marks every level.
        device: where the masks live (default: the boxes' device).
    """
    if len(strides) < len(featmap_sizes):
        raise ValueError(f'gt_level_masks: {len(featmap_sizes)} levels but {len(strides)} strides')
    boxes, valid = pad_gt_bboxes(bboxes_list, device)
    num_levels = len(featmap_sizes)
    sel = _selection(boxes, valid, num_levels, assign_levels, finest_scale)
    masks = []
    for level, size in enumerate(featmap_sizes):
        h, w = int(size[0]), int(size[1])
        sw, sh = _pair(strides[level])
        # int() of the official code: truncation toward zero; start >= 0, end <= grid size
        lx = torch.trunc(boxes[..., 0] / sw).clamp(min=0)
        rx = torch.trunc(boxes[..., 2] / sw).clamp(max=w)
        ly = torch.trunc(boxes[..., 1] / sh).clamp(min=0)
        ry = torch.trunc(boxes[..., 3] / sh).clamp(max=h)
        single = (lx == rx) | (ly == ry)  # an empty extent marks the one cell (ly, lx)
        rx = torch.where(single, lx + 1, rx)
        ry = torch.where(single, ly + 1, ry)
        ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
        xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
        rows = (ys >= ly[..., None]) & (ys < ry[..., None]) & sel[level][..., None]  # [B, K, H]
        cols = (xs >= lx[..., None]) & (xs < rx[..., None])                           # [B, K, W]
        # a cell is marked when some box covers both its row and its column (a batched matmul)
        hits = torch.einsum('bkh,bkw->bhw', rows.to(boxes.dtype), cols.to(boxes.dtype))
        masks.append((hits > 0).to(torch.float32))
    return masks


def build_anchor_generator(cfg: Any) -> Any:
    """An mmdet anchor generator from a config dict (a built one is returned as is)."""
    if isinstance(cfg, dict):
        from mmdet.registry import TASK_UTILS
        return TASK_UTILS.build(dict(cfg))
    return cfg


@torch.no_grad()
def anchor_iou_masks(bboxes_list: Sequence[Tensor], featmap_sizes: Sequence[Size], anchor_generator: Any,
                     psi: float = 0.5, assign_levels: bool = False, finest_scale: float = 56.0,
                     device: Optional[torch.device] = None) -> list[Tensor]:
    """FGFI's imitation masks, one ``[B, H_l, W_l]`` float tensor per level.

    For every GT ``k`` (of the level, when ``assign_levels``) and every anchor ``a`` of location
    ``(h, w)`` of the level: ``IoU(a, k) > psi * max_{h', w', a'} IoU(., k)`` marks ``(h, w)``.
    All anchors count, those crossing the image border included (as in the official code). A GT
    that overlaps no anchor (degenerate, or outside the grid) marks nothing.

    Args:
        bboxes_list: per image, xyxy boxes ``[K_i, 4]`` (pixels of the padded batch).
        featmap_sizes: ``(H_l, W_l)`` per level; level ``l`` uses the generator's level ``l``.
        anchor_generator: an mmdet anchor generator (e.g. the student's
            ``bbox_head.prior_generator`` / ``rpn_head.prior_generator``) or its config.
        psi: the relative threshold (0.5 in FGFI).
        assign_levels: each GT only on its level by the RoI-scale rule (the FPN variant of the
            DeFeat code); False: every GT on every level (the original single-map method, per map).
        finest_scale: the RoI-scale rule's canonical size.
    """
    from mmdet.structures.bbox import bbox_overlaps
    gen = build_anchor_generator(anchor_generator)
    if gen.num_levels < len(featmap_sizes):
        raise ValueError(f'anchor_iou_masks: {len(featmap_sizes)} levels but the anchor generator '
                         f'has {gen.num_levels}')
    boxes, valid = pad_gt_bboxes(bboxes_list, device)
    num_imgs, num_gts = boxes.shape[:2]
    sel = _selection(boxes, valid, len(featmap_sizes), assign_levels, finest_scale)
    masks = []
    for level, size in enumerate(featmap_sizes):
        h, w = int(size[0]), int(size[1])
        # only the level's GTs: move them to the front of each row and keep as many columns as
        # the image with the most of them needs (one host sync per level, none per box)
        keep = int(sel[level].sum(dim=1).max()) if num_gts else 0
        if keep == 0:
            masks.append(boxes.new_zeros(num_imgs, h, w))
            continue
        order = torch.sort(sel[level].to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :keep]
        level_boxes = torch.gather(boxes, 1, order.unsqueeze(-1).expand(-1, -1, 4))
        level_sel = torch.gather(sel[level], 1, order)
        anchors = gen.single_level_grid_priors((h, w), level, dtype=boxes.dtype, device=boxes.device)
        num_anchors = anchors.shape[0] // (h * w)  # mmdet orders anchors (h, w, a)
        iou = bbox_overlaps(anchors.unsqueeze(0).expand(num_imgs, -1, -1), level_boxes)  # [B, HWA, K_l]
        iou = iou * level_sel.unsqueeze(1)  # padding: IoU 0, never marked
        thr = psi * iou.amax(dim=1, keepdim=True)  # [B, 1, K]: relative to each GT's best anchor
        hit = (iou > thr).any(dim=2)               # [B, HWA]
        masks.append(hit.view(num_imgs, h, w, num_anchors).any(dim=3).to(torch.float32))
    return masks


def find_prior_generator(detector: Any) -> Any:
    """The anchor/prior generator of an mmdet detector: its RPN's (two-stage) or its dense head's.

    Raises ``AttributeError`` naming what was looked for when there is none (anchor-free heads
    have point generators without anchors: pass an anchor generator config instead)."""
    if detector is not None and hasattr(detector, 'module') and not hasattr(detector, 'rpn_head') \
            and not hasattr(detector, 'bbox_head'):
        detector = detector.module  # a DDP wrapper
    for head in ('rpn_head', 'bbox_head'):
        gen = getattr(getattr(detector, head, None), 'prior_generator', None)
        if gen is not None and hasattr(gen, 'single_level_grid_priors') and hasattr(gen, 'strides'):
            return gen
    raise AttributeError(f'{type(detector).__name__} has no rpn_head.prior_generator or '
                         f'bbox_head.prior_generator: give the strides / anchor generator explicitly')
