"""``GalleryFeatureHook``: the training-set gallery of the retrieval metric.

Before each validation (and test) epoch, the hook runs the model in ``predict`` mode
(``model.val_step``) over its own dataloader -- the *training* videos through the *test*
pipeline and windows (the official ``retrieval/get_retrieval_feature.py`` on the training
subset) -- averages the ``pred_feature`` of the windows of each video (the official video feature:
the mean of its clip features, not normalised) and hands ``(features [G, D], labels [G],
video_ids)`` to every :class:`~kdtoolbox_plugins.av.metrics.RetrievalMetric` of the evaluator
(``metric.set_gallery``). Distributed: each rank predicts its shard; the parts are gathered with
``mmengine.dist.collect_results`` (metrics are computed on rank 0). The model's train/eval mode is
restored afterwards.

Config::

    custom_hooks = [dict(type='GalleryFeatureHook', dataloader=dict(
        batch_size=8, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='AVFrameFolderDataset', ..., subset='training', test_mode=True,
                     pipeline=test_pipeline)))]
"""
from __future__ import annotations

from collections import OrderedDict
import torch
from mmengine.dist import collect_results
from mmengine.hooks import Hook

__all__ = ['GalleryFeatureHook', 'video_features']


def _field(sample, key):
    if isinstance(sample, dict):
        value = sample.get(key)
        if value is None:
            value = sample.get(f'_{key}')
        if value is None and key in ('video_id', 'window_index', 'num_windows'):
            value = sample.get('metainfo', {}).get(key) if isinstance(sample.get('metainfo'), dict) else None
        return value
    if key in ('video_id', 'window_index', 'num_windows'):
        return sample.metainfo.get(key)
    return getattr(sample, key, None)


def video_features(items: list[tuple[str, torch.Tensor, int]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Average the window features of each video: ``(video_ids, features [V, D], labels [V])``
    (videos in order of first appearance)."""
    groups: OrderedDict[str, list] = OrderedDict()
    labels: dict[str, int] = {}
    for vid, feat, label in items:
        groups.setdefault(vid, []).append(feat.float().reshape(-1))
        if labels.setdefault(vid, label) != label:
            raise ValueError(f'video {vid!r} has windows with different labels ({labels[vid]} and {label})')
    if not groups:
        return [], torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    ids = list(groups)
    feats = torch.stack([torch.stack(groups[v]).mean(0) for v in ids])
    return ids, feats, torch.tensor([labels[v] for v in ids], dtype=torch.long)


class GalleryFeatureHook(Hook):
    """Compute the retrieval gallery before validation/test (see the module docstring).

    Args:
        dataloader: the gallery dataloader config (or a built DataLoader).
        metric_types: class names of the metrics that receive the gallery.
        on_val, on_test: compute before validation / test epochs.
    """

    priority = 'NORMAL'

    def __init__(self, dataloader, metric_types=('RetrievalMetric',), on_val: bool = True, on_test: bool = True):
        if dataloader is None:
            raise ValueError('GalleryFeatureHook: dataloader is required (the training set with the test pipeline)')
        self.dataloader_cfg = dataloader
        self.metric_types = tuple(metric_types)
        self.on_val, self.on_test = on_val, on_test
        self._loader = None

    def _get_loader(self, runner):
        if self._loader is None:
            if isinstance(self.dataloader_cfg, dict):
                from mmengine.runner import Runner
                self._loader = Runner.build_dataloader(self.dataloader_cfg, seed=runner.seed)
            else:
                self._loader = self.dataloader_cfg
        return self._loader

    def _metrics(self, evaluator) -> list:
        metrics = getattr(evaluator, 'metrics', None) or []
        return [m for m in metrics if any(c.__name__ in self.metric_types for c in type(m).__mro__)]

    def compute_gallery(self, model, loader) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Run ``model.val_step`` over ``loader``: per-video mean features and labels."""
        was_training = model.training
        model.eval()
        items = []
        try:
            with torch.no_grad():
                for data in loader:
                    for sample in model.val_step(data):
                        feat, label = _field(sample, 'pred_feature'), _field(sample, 'gt_label')
                        vid = _field(sample, 'video_id')
                        if feat is None:
                            raise KeyError('GalleryFeatureHook: the predict output has no pred_feature (the student '
                                           'must set data_sample.pred_feature, the pooled feature)')
                        if vid is None or label is None:
                            raise KeyError('GalleryFeatureHook: a gallery sample lacks video_id (metainfo) or gt_label')
                        items.append((str(vid), feat.detach().cpu(), int(torch.as_tensor(label).reshape(-1)[0])))
        finally:
            model.train(was_training)
        size = len(loader.dataset) if hasattr(loader, 'dataset') else len(items)
        gathered = collect_results(items, size, device='cpu')
        if gathered is None:  # not rank 0 under distributed: the metric is computed on rank 0
            return [], torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return video_features(gathered)

    def _run(self, runner, evaluator) -> None:
        metrics = self._metrics(evaluator)
        if not metrics:
            return
        ids, feats, labels = self.compute_gallery(runner.model, self._get_loader(runner))
        for metric in metrics:
            metric.set_gallery(feats, labels, ids)

    def before_val_epoch(self, runner) -> None:
        if self.on_val:
            self._run(runner, runner.val_loop.evaluator)

    def before_test_epoch(self, runner) -> None:
        if self.on_test:
            self._run(runner, runner.test_loop.evaluator)
