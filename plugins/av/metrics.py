"""Audio-visual metrics (mmengine ``BaseMetric``): video-level top-k and training-gallery retrieval.

:class:`VideoAccuracy` -- the official test protocol (``inference.py`` + ``eval_accuracy.py -k 1``):
the softmax scores ``pred_score`` [C] of the windows of a video are averaged,
``p_v = (1 / W) * sum_w pred_score_w``, and the video counts as correct at k when its label is
among the k largest entries of ``p_v``. Reported: ``<prefix>/top{k}`` (percent, over videos),
``<prefix>/clip_top1`` (percent, over windows) and ``<prefix>/num_videos``.

:class:`RetrievalMetric` -- the official ``retrieval/`` scripts: every validation video is a
query, the gallery is the *training* videos (from :class:`GalleryFeatureHook`). The feature of a
video is the mean of its windows' ``pred_feature`` (not normalised before averaging); similarity is
the cosine ``s(q, g) = q.g / (|q| |g|)``; the gallery is ranked by decreasing s (ties: lower
gallery index first).

* ``R@K`` (``get_retrieval_result_*.py``): the fraction of queries with at least one gallery
  video of the same label among the top K (percent).
* ``mAP@K`` (``mAP_result_*.py``, K = 500 in the official script): for a query whose top-K list
  has hits at 0-based ranks r_1 < ... < r_m (m >= 1),
  ``AP = (1 / m) * sum_i i / (r_i + 1)`` -- the precision at each hit averaged over the hits *in
  the list* (not over all relevant gallery videos); queries with no hit in the top K are
  skipped, as in the official script; the mean is over the other queries (percent; 0 when every
  query is skipped, where the official script would print nan). K larger than the gallery uses the
  whole gallery (the official ``topk`` would fail).

Labels come from the data samples (``gt_label``), not from video names (the official UCF mAP
script parses ``name.split('_')[1]``, and has the ActivityNet feature paths hard-coded: bugs).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from .hooks import _field, video_features

__all__ = ['VideoAccuracy', 'RetrievalMetric', 'retrieval_scores']


def _label(sample) -> int:
    label = _field(sample, 'gt_label')
    if label is None:
        raise KeyError('a data sample has no gt_label')
    return int(torch.as_tensor(label).reshape(-1)[0])


def _window_key(sample) -> tuple:
    vid = _field(sample, 'video_id')
    if vid is None:
        raise KeyError("a data sample has no metainfo 'video_id' (needed to average the windows of a video)")
    win = _field(sample, 'window_index')
    return str(vid), int(win) if win is not None else 0


class VideoAccuracy(BaseMetric):
    """Video-level top-k accuracy from window-averaged ``pred_score`` (see the module docstring).

    Args:
        topk: the k values (default (1,)).
        prefix: metric name prefix (default 'av').
    """

    default_prefix = 'av'

    def __init__(self, topk: Sequence[int] = (1,), collect_device: str = 'cpu', prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f'VideoAccuracy: topk must be positive integers, got {topk}')

    def process(self, data_batch, data_samples: Sequence) -> None:
        for s in data_samples:
            score = _field(s, 'pred_score')
            if score is None:
                raise KeyError('VideoAccuracy: a data sample has no pred_score (the student sets it in predict mode)')
            vid, win = _window_key(s)
            nw = _field(s, 'num_windows')
            self.results.append((vid, win, int(nw) if nw is not None else None,
                                 torch.as_tensor(score).detach().float().cpu().reshape(-1), _label(s)))

    def compute_metrics(self, results: list) -> dict:
        videos: OrderedDict[str, dict] = OrderedDict()
        clip_correct = 0
        for vid, win, nw, score, label in results:
            v = videos.setdefault(vid, dict(windows={}, num_windows=nw, label=label))
            if v['label'] != label:
                raise ValueError(f'VideoAccuracy: video {vid!r} has windows with labels {v["label"]} and {label}')
            if win in v['windows']:
                continue  # the same window twice (e.g. padding of a distributed sampler)
            v['windows'][win] = score
            clip_correct += int(score.argmax().item() == label)
        incomplete = [vid for vid, v in videos.items() if v['num_windows'] and len(v['windows']) != v['num_windows']]
        if incomplete:
            warnings.warn(f'VideoAccuracy: {len(incomplete)} videos have a number of windows different from '
                          f'their num_windows (first: {incomplete[:3]}); averaging the windows seen')
        if not videos:
            return {f'top{k}': 0.0 for k in self.topk}
        scores = torch.stack([torch.stack(list(v['windows'].values())).mean(0) for v in videos.values()])
        labels = torch.tensor([v['label'] for v in videos.values()])
        num_clips = sum(len(v['windows']) for v in videos.values())
        out = {}
        for k in self.topk:
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices
            out[f'top{k}'] = 100.0 * (top == labels[:, None]).any(1).float().mean().item()
        out['clip_top1'] = 100.0 * clip_correct / num_clips
        out['num_videos'] = len(videos)
        return out


def retrieval_scores(query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                     gallery_labels: torch.Tensor, topk: Sequence[int] = (1, 5, 10),
                     map_topk: int = 500) -> dict:
    """R@K (percent) for each K in ``topk`` and mAP@``map_topk`` (percent), official definitions."""
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f'retrieval: query {tuple(query.shape)} and gallery {tuple(gallery.shape)} must be '
                         f'[Q, D] and [G, D]')
    if gallery.shape[0] == 0:
        raise ValueError('retrieval: the gallery is empty')
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).t()  # [Q, G]
    order = torch.sort(sim, dim=1, descending=True, stable=True).indices
    hits = gallery_labels[order] == query_labels[:, None]  # [Q, G], by rank
    out = {}
    for k in topk:
        out[f'R@{k}'] = 100.0 * hits[:, :min(k, hits.shape[1])].any(1).float().mean().item()
    top = hits[:, :min(map_topk, hits.shape[1])].float()
    num_hits = top.sum(1)
    ranks = torch.arange(1, top.shape[1] + 1, dtype=torch.float32)
    precision_at_hit = top.cumsum(1) / ranks * top  # i / (r_i + 1) at the hits, 0 elsewhere
    keep = num_hits > 0
    ap = precision_at_hit[keep].sum(1) / num_hits[keep]
    out[f'mAP@{map_topk}'] = 100.0 * ap.mean().item() if keep.any() else 0.0
    return out


class RetrievalMetric(BaseMetric):
    """Validation videos queried against the training gallery (see the module docstring).

    Needs :class:`~kdtoolbox_plugins.av.hooks.GalleryFeatureHook` in ``custom_hooks`` (or a
    :meth:`set_gallery` call) before evaluation.

    Args:
        topk: K values of R@K (default (1, 5, 10)).
        map_topk: the list length of mAP (official 500).
        prefix: metric name prefix (default 'retrieval').
    """

    default_prefix = 'retrieval'

    def __init__(self, topk: Sequence[int] = (1, 5, 10), map_topk: int = 500, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1 or map_topk < 1:
            raise ValueError(f'RetrievalMetric: topk and map_topk must be positive, got {topk}, {map_topk}')
        self.map_topk = int(map_topk)
        self.gallery: Optional[tuple[torch.Tensor, torch.Tensor, list]] = None

    def set_gallery(self, features: torch.Tensor, labels: torch.Tensor, video_ids: Optional[list] = None) -> None:
        features, labels = torch.as_tensor(features).float(), torch.as_tensor(labels).long().reshape(-1)
        if features.dim() != 2 or features.shape[0] != labels.shape[0]:
            raise ValueError(f'RetrievalMetric.set_gallery: features {tuple(features.shape)} and labels '
                             f'{tuple(labels.shape)} do not match ([G, D] and [G])')
        self.gallery = (features, labels, list(video_ids) if video_ids is not None else None)

    def process(self, data_batch, data_samples: Sequence) -> None:
        for s in data_samples:
            feat = _field(s, 'pred_feature')
            if feat is None:
                raise KeyError('RetrievalMetric: a data sample has no pred_feature '
                               '(the student sets it in predict mode)')
            vid, _ = _window_key(s)
            self.results.append((vid, torch.as_tensor(feat).detach().float().cpu().reshape(-1), _label(s)))

    def compute_metrics(self, results: list) -> dict:
        if self.gallery is None:
            raise RuntimeError('RetrievalMetric: no gallery; add dict(type="GalleryFeatureHook", dataloader=...) '
                               'to custom_hooks (the training set with the test pipeline)')
        if self.gallery[0].shape[0] == 0:
            raise RuntimeError('RetrievalMetric: the gallery is empty (did GalleryFeatureHook run on rank 0?)')
        _, feats, labels = video_features(results)
        return retrieval_scores(feats, labels, self.gallery[0], self.gallery[1], self.topk, self.map_topk)


def register(registry) -> None:
    registry.metric(VideoAccuracy)
    registry.metric(RetrievalMetric)
