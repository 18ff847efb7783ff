"""RoI feature crops from FPN levels, the same way for a student and a teacher.

Built on the libraries, not re-implemented: the level of each RoI comes from mmdet's
:meth:`SingleRoIExtractor.map_roi_levels` (FPN rule: ``scale = sqrt(w * h)`` in input pixels,
level ``floor(log2(scale / finest_scale))`` clamped to the available levels; with
``finest_scale=56`` a RoI below 112 px goes to the first level, [112, 224) to the second,
[224, 448) to the third, larger to the fourth) and the crop from mmcv's ``RoIAlign`` run by
mmdet's :class:`SingleRoIExtractor` itself. The default configuration is exactly the
``bbox_roi_extractor`` of mmdet's Faster R-CNN FPN (RoIAlign 7x7, ``sampling_ratio=0``,
``aligned=True``, strides 4, 8, 16, 32), so a distiller that crops with it sees the features the
RoI head sees.

Shapes:
    feats: a sequence of ``[B, C, H_l, W_l]`` maps, finest first (e.g. a ``neck`` output); only
        the first ``len(featmap_strides)`` are used (Faster R-CNN's neck has a fifth, P6, level
        that its RoI head does not use either).
    rois: ``[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in pixels of the padded batch tensor
        (the frame of ``gt_instances.bboxes`` and of RPN proposals).
    output: ``[R, C, h, w]`` (``h, w`` = the RoI layer's ``output_size``).

Use :func:`boxes_to_rois` to turn per-image box lists (proposals or GT boxes) into ``rois``:
it clips to each image, drops degenerate boxes and detaches.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.structures.bbox import bbox2roi, get_box_tensor

#: mmdet's Faster R-CNN FPN ``bbox_roi_extractor.roi_layer`` (mmcv RoIAlign; ``aligned=True`` by default)
DEFAULT_ROI_LAYER = dict(type='RoIAlign', output_size=7, sampling_ratio=0)
#: the strides of the levels mmdet's Faster R-CNN FPN RoI head crops from (P2-P5)
DEFAULT_FEATMAP_STRIDES = (4, 8, 16, 32)


class RoIFeatureExtractor(nn.Module):
    """Crops RoI features from multi-level maps with mmdet's :class:`SingleRoIExtractor`.

    The extractor has no parameters. One :class:`SingleRoIExtractor` per channel count is built
    on first use (mmdet's allocates its output with a fixed ``out_channels``), all with the same
    RoI layer, strides and ``finest_scale``, so a student and a teacher with different widths are
    cropped identically.

    Args:
        roi_layer: an mmcv RoI op config (``type`` names a class in ``mmcv.ops``), as in mmdet's
            ``bbox_roi_extractor.roi_layer``. Default: ``RoIAlign`` 7x7, ``sampling_ratio=0``.
        featmap_strides: the stride of each level used, finest first (default 4, 8, 16, 32).
        finest_scale: the scale (``sqrt(w*h)`` in pixels) of the level-0 boundary (default 56,
            mmdet's and the FPN paper's).
    """

    def __init__(self, roi_layer: Optional[dict] = None,
                 featmap_strides: Sequence[int] = DEFAULT_FEATMAP_STRIDES, finest_scale: int = 56):
        super().__init__()
        self.roi_layer = dict(copy.deepcopy(DEFAULT_ROI_LAYER) if roi_layer is None else roi_layer)
        if 'type' not in self.roi_layer:
            raise KeyError(f"RoIFeatureExtractor: roi_layer needs a 'type' (e.g. 'RoIAlign'), got {self.roi_layer}")
        self.featmap_strides = [int(s) for s in featmap_strides]
        if not self.featmap_strides:
            raise ValueError('RoIFeatureExtractor: featmap_strides is empty')
        self.finest_scale = finest_scale
        # channels -> parameter-free SingleRoIExtractor; a plain dict: nothing to save or move
        self._extractors: dict[int, SingleRoIExtractor] = {}
        self._get(1)  # build now so that a wrong roi_layer fails at construction

    @classmethod
    def from_roi_extractor(cls, extractor: SingleRoIExtractor, roi_layer: dict) -> 'RoIFeatureExtractor':
        """The same configuration as a model's ``roi_head.bbox_roi_extractor`` (its ``roi_layer``
        config must be given: mmdet keeps only the built ops)."""
        return cls(roi_layer, extractor.featmap_strides, extractor.finest_scale)

    @property
    def num_levels(self) -> int:
        return len(self.featmap_strides)

    @property
    def output_size(self) -> tuple:
        return tuple(self._get(1).roi_layers[0].output_size)

    def _get(self, channels: int) -> SingleRoIExtractor:
        extractor = self._extractors.get(channels)
        if extractor is None:
            extractor = SingleRoIExtractor(roi_layer=copy.deepcopy(self.roi_layer), out_channels=channels,
                                           featmap_strides=list(self.featmap_strides),
                                           finest_scale=self.finest_scale)
            self._extractors[channels] = extractor
        return extractor

    def map_levels(self, rois: torch.Tensor) -> torch.Tensor:
        """The level index (0-based, into ``featmap_strides``) of each RoI: mmdet's rule."""
        return self._get(1).map_roi_levels(rois, self.num_levels)

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """``[R, C, h, w]`` crops of ``feats`` (first ``num_levels`` levels) at ``rois``.

        Differentiable w.r.t. ``feats``; with no RoIs the result is ``[0, C, h, w]`` and still
        depends on every level (mmdet adds ``0 * feat.sum()``), so DDP sees every parameter used.
        """
        if len(feats) < self.num_levels:
            raise ValueError(f'RoIFeatureExtractor: {self.num_levels} strides {self.featmap_strides} '
                             f'but only {len(feats)} feature levels were given')
        feats = tuple(feats[:self.num_levels])
        channels = feats[0].shape[1]
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f'RoIFeatureExtractor: rois must be [R, 5] (batch_index, x1, y1, x2, y2), '
                             f'got {tuple(rois.shape)}')
        return self._get(channels)(feats, rois.detach().to(feats[0].device))

    def extract_pair(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                     rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop both models' features at the same (detached) RoIs with the same levels; the
        teacher's crop is computed under ``no_grad``."""
        rois = rois.detach()
        student = self(student_feats, rois)
        with torch.no_grad():
            teacher = self([f.detach() for f in teacher_feats[:self.num_levels]], rois)
        return student, teacher


def boxes_to_rois(boxes: Sequence[Union[torch.Tensor, object]],
                  img_shapes: Optional[Sequence[Optional[Sequence[int]]]] = None,
                  min_size: float = 0.0, max_per_img: Optional[int] = None) -> torch.Tensor:
    """Per-image boxes (``[n_i, >=4]`` xyxy pixels, tensors or mmdet box structures) to ``[R, 5]``
    RoIs, detached.

    Per image: boxes are clipped to ``img_shapes[i] = (h, w)`` (the resized, unpadded image; None
    keeps them as they are), boxes with a non-finite coordinate or whose clipped width or height is
    not larger than ``min_size`` are dropped (degenerate, inverted or entirely outside boxes), and
    at most ``max_per_img`` are kept, the first ones (RPN proposals come sorted by score).
    """
    kept = []
    for i, b in enumerate(boxes):
        b = get_box_tensor(b).detach()[:, :4]
        shape = img_shapes[i] if img_shapes is not None else None
        if shape is not None:
            h, w = float(shape[0]), float(shape[1])
            b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h),
                             b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], dim=1)
        valid = torch.isfinite(b).all(dim=1) & ((b[:, 2] - b[:, 0]) > min_size) & ((b[:, 3] - b[:, 1]) > min_size)
        b = b[valid]
        if max_per_img is not None:
            b = b[:max_per_img]
        kept.append(b)
    if not kept:
        return torch.zeros(0, 5)
    return bbox2roi(kept)


def roi_head_predictions(detector: nn.Module, features: Sequence[torch.Tensor], rois: torch.Tensor,
                         roi_head: str = 'roi_head') -> tuple[torch.Tensor, torch.Tensor]:
    """A two-stage detector's box-head outputs on given RoIs, under ``no_grad``.

    ``features``: the detector's FPN levels; ``rois [R, 5]`` (batch index, x1, y1, x2, y2). Runs the
    detector's own ``bbox_roi_extractor`` (on its first ``num_inputs`` levels), shared head if any,
    and ``bbox_head``; returns ``(cls_score [R, classes + 1], bbox_pred [R, 4 * classes])`` detached.
    Used to run a teacher's RoI head on the student's RoIs (DeFeat's RoI KL, MasKD's RoI regression).
    """
    head = detector.get_submodule(roi_head)
    with torch.no_grad():
        extractor = head.bbox_roi_extractor
        feats = extractor(tuple(features)[:extractor.num_inputs], rois.detach())
        if getattr(head, 'with_shared_head', False):
            feats = head.shared_head(feats)
        cls_score, bbox_pred = head.bbox_head(feats)
    return cls_score.detach(), bbox_pred.detach()
