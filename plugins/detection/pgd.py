"""PGD: Prediction-Guided Distillation for dense object detection (Yang et al., ECCV 2022).

Official code: ChenhongyiYang/PGD (mmdet 2.x): ``mmdet/distillation/losses/pgd_{cls,reg}.py``,
``mmdet/models/dense_heads/pgd_heads/utils/pgw_anchor_based.py``, ``background_weight.py``,
``distillers/distill_pgd.py``, ``work_configs/pgd_gfl_r101_r50_1x.py``.

**Features.** Per FPN level ``l``, the output of the FIRST conv (ConvModule: conv, norm, act) of
the head's classification tower and of its regression tower, student ``S`` and teacher ``T``
``[N, C, H, W]`` (mmdet 3.x: ``bbox_head.cls_convs.0`` / ``bbox_head.reg_convs.0``, called once per
level; the official code inserts an identity module at that point). Same channels, no adapter.

**Prediction-guided weights (PGW)**, per image, teacher predictions under ``no_grad``, all levels'
priors ``p`` (``P = sum_l H_l W_l A``) concatenated, for each GT ``g`` (box ``b_g``, label ``c_g``):

- quality ``q[p, g] = sigmoid(cls_T[p, c_g])^(1 - alpha) * IoU(box_T[p], b_g)^alpha`` ``[P, G]``,
  ``box_T`` the teacher's box decoded by the head's own ``prior_generator`` and ``bbox_coder``
  (GFL: ``distance2bbox(anchor centre, integral(pred) * stride_l)``; anchor heads:
  ``bbox_coder.decode(anchor, delta)``); ``alpha = alpha_cls`` (0.8) for the cls map, ``alpha_reg``
  (0.6) for the reg map;
- the ``K = topk`` (30) priors of largest ``q`` (``min(K, P)``); a 2-D Gaussian fitted to their
  centres ``x_k`` by maximum likelihood: ``mu = mean_k x_k``,
  ``Sigma = mean_k (x_k - mu)(x_k - mu)^T + cov_eps * I``;
- ``w[p, g] = exp(-1/2 (x_p - mu)^T Sigma^-1 (x_p - mu))`` for those K priors, 0 for the others
  and 0 where the prior centre is not strictly inside ``b_g``; ``v[p] = max_g w[p, g]``.
- background ``b[p] = 1`` where the prior centre is inside no GT (all ones without GT).

With ``A`` anchors per location (RetinaNet: 9) the maps are reduced to ``[N, H, W]`` by the max
over the location's anchors (see deviations).

**Cls loss** per level, ``M_fg = v / #nonzero(v)`` and ``M_bg = b / #nonzero(b)`` per image
``[N, H, W]``, ``A_S(F) = HW softmax_hw(mean_c |F| / T)`` ``[N, H, W]``, per-pixel channel
attention ``A_C(F) = C softmax_c(|F| / T)`` ``[N, C, H, W]`` (:mod:`kdtoolbox.ops.attention`)::

    loss_fg = w_l * alpha * sum(M_fg * A_S(T) * A_C(T) * (S - T)^2) / N
    loss_bg = w_l * beta  * sum(M_bg * A_S(T) * A_C(T) * (S - T)^2) / N
    loss_at = delta * (sum|A_C(S) - A_C(T)| / (N H W) + sum|A_S(S) - A_S(T)| / N)

**Reg loss** per level over the ``n_pos`` positions with ``v_reg != 0`` (all images together),
``s, t`` ``[n_pos, C]``, ``A_C`` per position::

    loss_feat = gamma * mean_pos(v_reg * mean_c(A_C(t) * (s - t)^2))
    loss_at   = delta * sum|A_C(s) - A_C(t)| / n_pos          (both 0 without a position)

Keys: ``cls{l}.loss_fg``, ``cls{l}.loss_bg``, ``cls{l}.loss_at``, ``reg{l}.loss_feat``,
``reg{l}.loss_at``. Hyper-parameters of ``pgd_gfl_r101_r50_1x.py`` (the defaults): ``T = 0.8``
(spatial and channel), ``alpha = 0.04``, ``beta = 0.02``, ``gamma = 0.064``, ``delta = 8e-4``,
level weights ``w_l = 1.0, 1.25, 1.5, 1.75, 2.0`` (P3 -> P7, cls fg/bg terms only), ``topk = 30``,
``alpha_cls = 0.8``, ``alpha_reg = 0.6``; student neck and head initialised from the teacher.

Supported heads (``head_type``; the teacher's raw predictions are recorded from its prediction
layers because mmdet's ``_forward`` calls ``bbox_head.forward`` directly, which bypasses hooks):
``GFLHead`` (``gfl_cls``, ``scales.{l}``), ``ATSSHead`` (``atss_cls``, ``scales.{l}``; the
centerness branch is not used, as the official ATSS-IoU head does not use its IoU branch),
``RetinaHead`` (``retina_cls``, ``retina_reg``); other sigmoid anchor heads through
``teacher_pred_modules``. Anchor-free heads with point priors (FCOS, AutoAssign) are not supported.

Deviations from the official code:

- Covariance regularisation: the official code adds uniform jitter ``U(-0.05, 0.05)`` px to the K
  centres before the fit (random, and it evaluates un-jittered centres against the jittered
  mean); here ``Sigma + cov_eps * I`` with ``cov_eps = 0.1^2 / 12`` (the jitter's expected
  covariance), deterministic.
- Official GFL bug avoided: ``GFLDistillHead._get_target_single`` gets the per-level ``strides``
  list through ``multi_apply`` zipped with the images, so image ``i`` decodes the teacher's
  distances of every level with the stride of level ``i`` (8 for the first image, 16 for the
  second, ...); here each level is decoded with its own stride.
- ``A > 1`` anchors per location: the official distiller reshapes each level's map to
  ``[N, 1, H, W]``, which only works for one anchor per location (all its heads: GFL, ATSS, DDOD);
  here the top-K and the Gaussian run over all anchors and a location takes the max over its
  anchors (background is identical for all anchors of a location).
- ``K`` is clamped to the number of valid priors (the official ``topk`` fails below K priors).
- As officially, priors outside each image's ``pad_shape`` (the head's ``valid_flags``; only
  batches of differently sized images have them) are excluded: weight 0, background 0. GT boxes
  to ignore are not supported (the official ``ignore_iof_thr`` is -1 in every config).
- The five terms are returned separately (the official loss returns their sum per level).
- Not applicable here (anchor-free heads are unsupported) but noted: the official anchor-free PGW
  (``pgw_anchor_free.py``, ``get_back_weight_anchorfree``; FCOS, AutoAssign) reads the points as
  ``(y, x)`` while mmdet's are ``(x, y)``, so its inside-GT test and background map are transposed.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from kdtoolbox.engine import BaseDistiller, DistillContext, Records
from kdtoolbox.ops.attention import pixel_channel_attention, spatial_attention
from kdtoolbox.ops.dense_assign import box_centres, decode_dense_predictions
from kdtoolbox.ops.imitation_masks import gt_bboxes_from_samples

#: the official jitter U(-0.05, 0.05) has variance 0.1^2 / 12 per coordinate
COV_EPS = 0.1 ** 2 / 12

#: the teacher's prediction layers per head type: '{}' is the level (one recorder per level),
#: otherwise one recorder called once per level
HEAD_PREDICTIONS = {
    'GFLHead': dict(cls='gfl_cls', reg='scales.{}'),
    'ATSSHead': dict(cls='atss_cls', reg='scales.{}'),
    'RetinaHead': dict(cls='retina_cls', reg='retina_reg'),
}

#: the defaults: work_configs/pgd_gfl_r101_r50_1x.py
LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)


# --------------------------------------------------------------------- prediction-guided weights
def centres_inside(centres: Tensor, gt_boxes: Tensor) -> Tensor:
    """``[P, G]`` bool: centre ``p`` strictly inside box ``g``."""
    x, y = centres[:, 0:1], centres[:, 1:2]
    return (x > gt_boxes[:, 0]) & (y > gt_boxes[:, 1]) & (x < gt_boxes[:, 2]) & (y < gt_boxes[:, 3])


def score_and_iou(cls_logits: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """``sigmoid(cls[p, label_g])`` and ``IoU(box_p, gt_g)``, both ``[P, G]``."""
    from mmdet.structures.bbox import bbox_overlaps
    return cls_logits[:, gt_labels].sigmoid(), bbox_overlaps(boxes, gt_boxes)


def prediction_quality(cls_logits: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                       alpha: float) -> Tensor:
    """``sigmoid(cls[p, label_g])^(1 - alpha) * IoU(box_p, gt_g)^alpha``: ``[P, G]``."""
    score, iou = score_and_iou(cls_logits, boxes, gt_boxes, gt_labels)
    return score ** (1 - alpha) * iou ** alpha


def gaussian_weights(points: Tensor, cov_eps: float = COV_EPS) -> Tensor:
    """``exp(-1/2 d^T Sigma^-1 d)`` of each of ``points [G, K, 2]`` under the Gaussian fitted to its
    row by maximum likelihood (``Sigma`` = biased covariance ``+ cov_eps * I``): ``[G, K]``."""
    d = points - points.mean(dim=1, keepdim=True)
    cov = torch.einsum('gki,gkj->gij', d, d) / points.shape[1]
    cov = cov + cov_eps * torch.eye(2, dtype=cov.dtype, device=cov.device)
    a, b, c, e = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 0], cov[:, 1, 1]
    det = (a * e - b * c)[:, None]
    # d^T Sigma^-1 d with the closed-form 2x2 inverse [[e, -b], [-c, a]] / det
    dx, dy = d[..., 0], d[..., 1]
    maha = (e[:, None] * dx * dx - (b + c)[:, None] * dx * dy + a[:, None] * dy * dy) / det
    return torch.exp(-0.5 * maha)


def pgw_weights(centres: Tensor, quality: Tensor, inside: Tensor, topk: int,
                cov_eps: float = COV_EPS) -> Tensor:
    """PGW of one image: ``[P]``, the max over GTs of the Gaussian weights at each GT's top-K priors
    (by ``quality [P, G]``), zero where the centre is not inside the GT (``inside [P, G]``)."""
    num_priors, num_gts = quality.shape
    if num_gts == 0 or num_priors == 0:
        return quality.new_zeros(num_priors)
    k = min(int(topk), num_priors)
    top = quality.topk(k, dim=0).indices                       # [K, G]
    weights = gaussian_weights(centres[top.t()], cov_eps)      # [G, K]
    w = quality.new_zeros(num_priors, num_gts).scatter_(0, top, weights.t().to(quality.dtype))
    return (w * inside.to(w.dtype)).amax(dim=1)


def background_weights(inside: Tensor) -> Tensor:
    """``[P]``: 1 where the prior centre is inside no GT."""
    return (~inside.any(dim=1)).to(torch.float32)


@torch.no_grad()
def pgd_value_maps(head: Any, cls_preds: Sequence[Tensor], reg_preds: Sequence[Tensor],
                   gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor],
                   pad_shapes: Optional[Sequence[Sequence[int]]] = None, alpha_cls: float = 0.8,
                   alpha_reg: float = 0.6, topk: int = 30, cov_eps: float = COV_EPS
                   ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """PGD's cls value, reg value and background maps, one ``[N, H_l, W_l]`` list each.

    Args:
        head: the teacher's dense head (``prior_generator``, ``bbox_coder``, ``cls_out_channels``).
        cls_preds, reg_preds: its raw outputs per level ``[N, A * C, H, W]``, ``[N, A * R, H, W]``.
        gt_boxes, gt_labels: per image, xyxy boxes ``[G, 4]`` and labels ``[G]``.
        pad_shapes: per image, the padded image size: priors beyond it get no weight (None: all
            priors are valid).
    """
    priors, logits, boxes = decode_dense_predictions(head, cls_preds, reg_preds, where='PGD')
    sizes = [tuple(p.shape[-2:]) for p in cls_preds]
    counts = [a.shape[0] for a in priors]
    centres = box_centres(torch.cat(priors))
    device = logits.device
    maps = ([], [], [])
    for i in range(logits.shape[0]):
        valid = torch.ones(centres.shape[0], dtype=torch.bool, device=device)
        if pad_shapes is not None:
            valid = torch.cat(head.prior_generator.valid_flags(sizes, tuple(pad_shapes[i][:2]), device))
        gts = gt_boxes[i].to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = gt_labels[i].to(device=device, dtype=torch.long).reshape(-1)
        v_centres = centres[valid]
        inside = centres_inside(v_centres, gts)
        score, iou = score_and_iou(logits[i][valid], boxes[i][valid], gts, labels)
        image_maps = [pgw_weights(v_centres, score ** (1 - alpha) * iou ** alpha, inside, topk, cov_eps)
                      for alpha in (alpha_cls, alpha_reg)]
        image_maps.append(background_weights(inside))
        for out, values in zip(maps, image_maps):
            full = values.new_zeros(centres.shape[0])
            full[valid] = values.to(full.dtype)
            out.append(full)
    return tuple(_to_levels(torch.stack(m), counts, sizes) for m in maps)


def _to_levels(values: Tensor, counts: Sequence[int], sizes: Sequence[tuple]) -> list[Tensor]:
    """``[N, P]`` -> per level ``[N, H, W]``, the max over a location's anchors."""
    n = values.shape[0]
    return [v.reshape(n, h, w, -1).amax(dim=3)
            for v, (h, w) in zip(values.split(list(counts), dim=1), sizes)]


# --------------------------------------------------------------------- losses
def count_normalised(mask: Tensor) -> Tensor:
    """``mask / #nonzero(mask)`` per image (``[N, H, W]``; an all-zero image stays zero)."""
    count = (mask != 0).flatten(1).sum(dim=1).clamp(min=1).to(mask.dtype)
    return mask / count.view(-1, 1, 1)


def pgd_cls_loss(student: Tensor, teacher: Tensor, value: Tensor, background: Tensor, temp: float = 0.8,
                 alpha: float = 0.04, beta: float = 0.02, delta: float = 8e-4,
                 level_weight: float = 1.0) -> dict[str, Tensor]:
    """PGD's cls-tower loss on one level (see the module docstring): features ``[N, C, H, W]``,
    value and background maps ``[N, H, W]``; returns weighted ``loss_fg``, ``loss_bg``, ``loss_at``."""
    _check_pair(student, teacher)
    teacher = teacher.detach()
    n, _, h, w = student.shape
    spatial_t, spatial_s = spatial_attention(teacher, temp), spatial_attention(student, temp)
    channel_t, channel_s = pixel_channel_attention(teacher, temp), pixel_channel_attention(student, temp)
    per_cell = (channel_t * (student - teacher) ** 2).sum(dim=1) * spatial_t   # [N, H, W]
    loss_fg = (per_cell * count_normalised(value.to(per_cell.dtype))).sum() / n
    loss_bg = (per_cell * count_normalised(background.to(per_cell.dtype))).sum() / n
    loss_at = (channel_s - channel_t).abs().sum() / (n * h * w) + (spatial_s - spatial_t).abs().sum() / n
    return dict(loss_fg=level_weight * alpha * loss_fg, loss_bg=level_weight * beta * loss_bg,
                loss_at=delta * loss_at)


def pgd_reg_loss(student: Tensor, teacher: Tensor, value: Tensor, temp: float = 0.8,
                 gamma: float = 0.064, delta: float = 8e-4) -> dict[str, Tensor]:
    """PGD's reg-tower loss on one level over the positions with ``value != 0``: features
    ``[N, C, H, W]``, value map ``[N, H, W]``; returns weighted ``loss_feat``, ``loss_at``."""
    _check_pair(student, teacher)
    pos = value != 0
    if not bool(pos.any()):
        zero = student.sum() * 0.0  # keeps the graph (and DDP) happy
        return dict(loss_feat=zero, loss_at=zero)
    s = student.permute(0, 2, 3, 1)[pos]             # [n_pos, C]
    t = teacher.detach().permute(0, 2, 3, 1)[pos]
    channel_s = pixel_channel_attention(s[:, :, None, None], temp)[:, :, 0, 0]
    channel_t = pixel_channel_attention(t[:, :, None, None], temp)[:, :, 0, 0]
    loss_feat = ((channel_t * (s - t) ** 2).mean(dim=1) * value[pos].to(s.dtype)).mean()
    loss_at = (channel_s - channel_t).abs().sum() / s.shape[0]
    return dict(loss_feat=gamma * loss_feat, loss_at=delta * loss_at)


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f'PGD: student feature {tuple(student.shape)} and teacher feature '
                         f'{tuple(teacher.shape)} differ (PGD has no adapter: the head towers must '
                         f'have the same channels)')


class PGDClsLoss(torch.nn.Module):
    """:func:`pgd_cls_loss` as a module (official ``PGDClsLoss``)."""

    def __init__(self, temp: float = 0.8, alpha: float = 0.04, beta: float = 0.02, delta: float = 8e-4,
                 level_weight: float = 1.0):
        super().__init__()
        self.temp, self.alpha, self.beta, self.delta, self.level_weight = temp, alpha, beta, delta, level_weight

    def forward(self, preds_S: Tensor, preds_T: Tensor, mask_fg: Tensor, mask_bg: Tensor) -> dict:
        return pgd_cls_loss(preds_S, preds_T, mask_fg, mask_bg, self.temp, self.alpha, self.beta,
                            self.delta, self.level_weight)


class PGDRegLoss(torch.nn.Module):
    """:func:`pgd_reg_loss` as a module (official ``PGDRegLoss``)."""

    def __init__(self, temp: float = 0.8, gamma: float = 0.064, delta: float = 8e-4):
        super().__init__()
        self.temp, self.gamma, self.delta = temp, gamma, delta

    def forward(self, preds_S: Tensor, preds_T: Tensor, mask_fg: Tensor) -> dict:
        return pgd_reg_loss(preds_S, preds_T, mask_fg, self.temp, self.gamma, self.delta)


# --------------------------------------------------------------------- distiller
def gt_labels_from_samples(data_samples: Sequence[Any]) -> list[Tensor]:
    """Each data sample's ``gt_instances.labels``."""
    labels = []
    for i, sample in enumerate(data_samples or []):
        gt = getattr(sample, 'gt_instances', None)
        if gt is None or 'labels' not in gt:
            raise KeyError(f'PGD: data sample {i} has no gt_instances.labels')
        labels.append(gt.labels.reshape(-1))
    return labels


class PGD(BaseDistiller):
    """Prediction-guided distillation of the first conv of a dense head's cls and reg towers.

    Args:
        head_type: the teacher head's mmdet type: 'GFLHead', 'ATSSHead' or 'RetinaHead' (picks the
            prediction layers to record); a subclass of one of them works with its base's name.
        num_levels: FPN levels (one level weight each).
        cls_module, reg_module: the recorded tower convs in both models (relative to ``head``).
        head: the dense head's attribute path in both models ('bbox_head').
        teacher_pred_modules: override of :data:`HEAD_PREDICTIONS` for another sigmoid anchor
            head: ``dict(cls=..., reg=...)`` relative to ``head``, '{}' for one module per level.
        temp, alpha, beta, gamma, delta, level_weights: the loss weights (see the module docstring).
        alpha_cls, alpha_reg, topk, cov_eps: the prediction-guided weighting.
    """

    def __init__(self, head_type: str = 'GFLHead', num_levels: int = 5,
                 cls_module: str = 'cls_convs.0', reg_module: str = 'reg_convs.0', head: str = 'bbox_head',
                 teacher_pred_modules: Optional[Mapping[str, str]] = None, temp: float = 0.8,
                 alpha: float = 0.04, beta: float = 0.02, gamma: float = 0.064, delta: float = 8e-4,
                 level_weights: Sequence[float] = LEVEL_WEIGHTS, alpha_cls: float = 0.8,
                 alpha_reg: float = 0.6, topk: int = 30, cov_eps: float = COV_EPS, init_cfg=None):
        if teacher_pred_modules is None:
            if head_type not in HEAD_PREDICTIONS:
                raise KeyError(f'PGD: head_type {head_type!r} is not supported (known: '
                               f'{", ".join(HEAD_PREDICTIONS)}; or give teacher_pred_modules)')
            teacher_pred_modules = HEAD_PREDICTIONS[head_type]
        if set(teacher_pred_modules) != {'cls', 'reg'}:
            raise KeyError(f'PGD: teacher_pred_modules needs the keys cls and reg, got {sorted(teacher_pred_modules)}')
        if len(level_weights) != num_levels:
            raise ValueError(f'PGD: {num_levels} levels but {len(level_weights)} level_weights')
        if topk < 1 or temp <= 0:
            raise ValueError(f'PGD: topk must be >= 1 and temp > 0, got topk={topk}, temp={temp}')
        features = dict(cls_feat=f'{head}.{cls_module}', reg_feat=f'{head}.{reg_module}')
        teacher_recorders = dict(features)
        for kind, path in teacher_pred_modules.items():
            if '{}' in path:
                for level in range(num_levels):
                    teacher_recorders[f'{kind}_pred{level}'] = f'{head}.{path.format(level)}'
            else:
                teacher_recorders[f'{kind}_pred'] = f'{head}.{path}'
        super().__init__(student_recorders=features, teacher_recorders=teacher_recorders, init_cfg=init_cfg)
        self.teacher_pred_modules = dict(teacher_pred_modules)
        self.head_type, self.head, self.num_levels = head_type, head, num_levels
        self.temp, self.alpha, self.beta, self.gamma, self.delta = temp, alpha, beta, gamma, delta
        self.level_weights = [float(w) for w in level_weights]
        self.alpha_cls, self.alpha_reg, self.topk, self.cov_eps = alpha_cls, alpha_reg, int(topk), cov_eps

    def _levels(self, records: Records, name: str, owner: str) -> list[Tensor]:
        if f'{name}0' in list(records):  # one recorder per level
            return [records[f'{name}{level}'] for level in range(self.num_levels)]
        values = records.calls(name)
        if len(values) != self.num_levels:
            raise ValueError(f'PGD: {owner} record {name!r} has {len(values)} calls, expected one per '
                             f'level ({self.num_levels}): check num_levels / level_weights')
        return list(values)

    def teacher_head(self, context: DistillContext) -> Any:
        if context.teacher is None:
            raise RuntimeError('PGD needs context.teacher (DistillationModel sets it) to decode its boxes')
        head = context.teacher.get_submodule(self.head)
        bases = [c.__name__ for c in type(head).__mro__]
        if self.head_type not in bases:
            raise TypeError(f"PGD(head_type={self.head_type!r}): the teacher's {self.head} is a "
                            f"{type(head).__name__}; set head_type to its type")
        if not getattr(head, 'use_sigmoid_cls', True):
            raise TypeError(f'PGD: the teacher {self.head} ({type(head).__name__}) has softmax '
                            f'classification; PGW needs sigmoid scores')
        return head

    def value_maps(self, teacher: Records, context: DistillContext
                   ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """The batch's cls value, reg value and background maps per level ``[N, H, W]``."""
        samples = context.data_samples
        if not samples:
            raise ValueError('PGD needs the data samples (gt_instances) in the context')
        head = self.teacher_head(context)
        cls_preds = self._levels(teacher, 'cls_pred', 'teacher')
        reg_preds = self._levels(teacher, 'reg_pred', 'teacher')
        boxes, labels = gt_bboxes_from_samples(samples), gt_labels_from_samples(samples)
        for i, lab in enumerate(labels):
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= head.cls_out_channels):
                raise ValueError(f'PGD: data sample {i} has labels outside [0, {head.cls_out_channels})')
        pad_shapes = [s.metainfo.get('pad_shape', context.batch_input_shape) for s in samples]
        if any(p is None for p in pad_shapes):
            pad_shapes = None
        return pgd_value_maps(head, cls_preds, reg_preds, boxes, labels, pad_shapes, self.alpha_cls,
                              self.alpha_reg, self.topk, self.cov_eps)

    def forward(self, student: Records, teacher: Records, context: DistillContext) -> dict:
        s_cls = self._levels(student, 'cls_feat', 'student')
        s_reg = self._levels(student, 'reg_feat', 'student')
        t_cls = self._levels(teacher, 'cls_feat', 'teacher')
        t_reg = self._levels(teacher, 'reg_feat', 'teacher')
        cls_maps, reg_maps, bg_maps = self.value_maps(teacher, context)
        losses = {}
        for level in range(self.num_levels):
            if cls_maps[level].shape[-2:] != t_cls[level].shape[-2:]:
                raise ValueError(f'PGD: level {level}: predictions {tuple(cls_maps[level].shape[-2:])} '
                                 f'and features {tuple(t_cls[level].shape[-2:])} differ in size')
            cls = pgd_cls_loss(s_cls[level], t_cls[level], cls_maps[level], bg_maps[level], self.temp,
                               self.alpha, self.beta, self.delta, self.level_weights[level])
            reg = pgd_reg_loss(s_reg[level], t_reg[level], reg_maps[level], self.temp, self.gamma, self.delta)
            losses.update({f'cls{level}.{k}': v for k, v in cls.items()})
            losses.update({f'reg{level}.{k}': v for k, v in reg.items()})
        return losses


def register(registry):
    """Register this module's components with the plugin's registrar."""
    registry.distiller(PGD)
    registry.loss(PGDClsLoss)
    registry.loss(PGDRegLoss)
