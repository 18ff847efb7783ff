"""The av plugin's metrics (video top-k from window-averaged scores, gallery retrieval R@K / mAP@K)
on tiny hand-computed cases, and the GalleryFeatureHook that feeds the gallery."""
import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.evaluator import Evaluator

from kdtoolbox_plugins.av.hooks import GalleryFeatureHook, video_features
from kdtoolbox_plugins.av.metrics import RetrievalMetric, VideoAccuracy, retrieval_scores
from kdtoolbox_plugins.av.structures import AVDataSample


def unit(deg, norm=1.0):
    r = math.radians(deg)
    return torch.tensor([math.cos(r), math.sin(r)]) * norm


def sample(vid, label, window=0, num_windows=1, score=None, feature=None):
    s = AVDataSample(metainfo=dict(video_id=vid, window_index=window, num_windows=num_windows))
    s.gt_label = label
    if score is not None:
        s.pred_score = torch.tensor(score, dtype=torch.float32)
    if feature is not None:
        s.pred_feature = feature
    return s


# Gallery: unit vectors at 0, 30, 60, 90, 180 degrees (norms differ: cosine ignores them),
# labels A B A B A (A=0, B=1).
GALLERY = torch.stack([unit(0, 2.0), unit(30, 0.5), unit(60, 3.0), unit(90, 1.0), unit(180, 1.5)])
GALLERY_LABELS = torch.tensor([0, 1, 0, 1, 0])
# Queries (angle, label) and their rankings by angular distance, worked out by hand:
#   q1 10 deg, A: g0(10) g1(20) g2(50) g3(80) g4(170) -> A B A B A: hits at ranks 1, 3, 5
#   q2 40 deg, B: g1(10) g2(20) g0(40) g3(50) g4(140) -> B A A B A: hits at ranks 1, 4
#   q3 70 deg, B: g2(10) g3(20) g1(40) g0(70) g4(110) -> A B B A A: hits at ranks 2, 3
#   q4 0 deg, label C=2 (absent from the gallery): no hit anywhere
QUERIES = [(10, 0), (40, 1), (70, 1), (0, 2)]
AP = [(1 / 1 + 2 / 3 + 3 / 5) / 3, (1 / 1 + 2 / 4) / 2, (1 / 2 + 2 / 3) / 2]  # q4 skipped


def _queries():
    return torch.stack([unit(a) for a, _ in QUERIES]), torch.tensor([l for _, l in QUERIES])


def test_retrieval_scores_by_hand():
    q, ql = _queries()
    out = retrieval_scores(q, ql, GALLERY, GALLERY_LABELS, topk=(1, 2, 5), map_topk=500)
    assert out['R@1'] == pytest.approx(100 * 2 / 4)  # q1, q2 hit at rank 1; q3 (A first), q4 miss
    assert out['R@2'] == pytest.approx(100 * 3 / 4)
    assert out['R@5'] == pytest.approx(100 * 3 / 4)  # q4 never hits
    assert out['mAP@500'] == pytest.approx(100 * sum(AP) / 3)


def test_map_is_truncated_to_the_top_k_list():
    q, ql = _queries()
    # top-2 lists: q1 A B -> hit at 1: AP 1; q2 B A -> AP 1; q3 A B -> hit at 2: AP 1/2; q4 skipped
    out = retrieval_scores(q, ql, GALLERY, GALLERY_LABELS, topk=(1,), map_topk=2)
    assert out['mAP@2'] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    # top-1 lists: q3's only entry misses: skipped as well (the official script skips no-hit queries)
    assert retrieval_scores(q, ql, GALLERY, GALLERY_LABELS, map_topk=1)['mAP@1'] == pytest.approx(100.0)
    # nobody hits: 0 instead of the official script's nan
    assert retrieval_scores(q[3:], ql[3:], GALLERY, GALLERY_LABELS)['mAP@500'] == 0.0


def test_retrieval_errors():
    with pytest.raises(ValueError, match='must be'):
        retrieval_scores(torch.zeros(2, 3), torch.zeros(2), GALLERY, GALLERY_LABELS)
    with pytest.raises(ValueError, match='gallery is empty'):
        retrieval_scores(torch.zeros(2, 2), torch.zeros(2), torch.zeros(0, 2), torch.zeros(0))


def test_retrieval_metric_averages_windows_before_the_cosine():
    """Windows (3, 0) and (0, 1) average to (1.5, 0.5), 18.4 deg (the official mean of unnormalised
    clip features); averaging unit vectors instead would give 45 deg and another ranking."""
    gallery = torch.stack([unit(20), unit(45)])
    metric = RetrievalMetric(topk=(1,))
    metric.set_gallery(gallery, torch.tensor([0, 1]), ['g0', 'g1'])
    ev = Evaluator([metric])
    ev.process([sample('q', 0, 0, 2, feature=torch.tensor([3.0, 0.0])),
                sample('q', 0, 1, 2, feature=torch.tensor([0.0, 1.0]))])
    assert ev.evaluate(2)['retrieval/R@1'] == 100.0
    metric.set_gallery(gallery, torch.tensor([1, 0]))
    ev.process([sample('q', 0, 0, 2, feature=torch.tensor([3.0, 0.0])),
                sample('q', 0, 1, 2, feature=torch.tensor([0.0, 1.0]))])
    assert ev.evaluate(2)['retrieval/R@1'] == 0.0


def test_retrieval_metric_through_the_evaluator_matches_by_hand():
    metric = RetrievalMetric(topk=(1, 2), map_topk=500)
    metric.set_gallery(GALLERY, GALLERY_LABELS)
    ev = Evaluator([metric])
    samples = []
    for i, (angle, label) in enumerate(QUERIES):  # two windows per query, same direction, other norms
        samples += [sample(f'q{i}', label, 0, 2, feature=unit(angle, 1.0)),
                    sample(f'q{i}', label, 1, 2, feature=unit(angle, 4.0))]
    ev.process(samples)
    out = ev.evaluate(len(samples))
    assert out['retrieval/R@1'] == pytest.approx(50.0)
    assert out['retrieval/R@2'] == pytest.approx(75.0)
    assert out['retrieval/mAP@500'] == pytest.approx(100 * sum(AP) / 3)


def test_retrieval_metric_needs_a_gallery():
    ev = Evaluator([RetrievalMetric()])
    ev.process([sample('q', 0, feature=unit(0))])
    with pytest.raises(RuntimeError, match='GalleryFeatureHook'):
        ev.evaluate(1)
    ev = Evaluator([RetrievalMetric()])
    with pytest.raises(KeyError, match='pred_feature'):
        ev.process([sample('q', 0)])
    with pytest.raises(ValueError, match='do not match'):
        RetrievalMetric().set_gallery(torch.zeros(3, 2), torch.zeros(2))


def test_video_accuracy_averages_window_scores():
    # video a (label 0): windows [.6 .4 0] and [.1 .8 .1] -> mean [.35 .6 .05]: wrong (argmax 1), top-2 right
    # video b (label 2): windows [.5 .2 .3] and [.1 .1 .8] -> mean [.3 .15 .55]: right
    # video c (label 1): one window [.2 .7 .1] -> right
    # clip level: a0 right, a1 wrong, b0 wrong, b1 right, c right -> 3/5
    ev = Evaluator([VideoAccuracy(topk=(1, 2))])
    ev.process([sample('a', 0, 0, 2, score=[.6, .4, 0]), sample('b', 2, 0, 2, score=[.5, .2, .3]),
                sample('a', 0, 1, 2, score=[.1, .8, .1]), sample('c', 1, 0, 1, score=[.2, .7, .1]),
                sample('b', 2, 1, 2, score=[.1, .1, .8])])
    out = ev.evaluate(5)
    assert out['av/top1'] == pytest.approx(100 * 2 / 3)
    assert out['av/top2'] == pytest.approx(100.0)
    assert out['av/clip_top1'] == pytest.approx(100 * 3 / 5)
    assert out['av/num_videos'] == 3


def test_video_accuracy_duplicates_and_missing_windows():
    ev = Evaluator([VideoAccuracy()])
    # window 0 of 'a' twice (distributed padding): counted once; 'b' lacks one of its 2 windows
    ev.process([sample('a', 0, 0, 1, score=[.9, .1]), sample('a', 0, 0, 1, score=[.9, .1]),
                sample('b', 1, 0, 2, score=[.2, .8])])
    with pytest.warns(UserWarning, match='1 videos have a number of windows'):
        out = ev.evaluate(3)
    assert out['av/top1'] == 100.0 and out['av/num_videos'] == 2
    ev = Evaluator([VideoAccuracy()])
    with pytest.raises(KeyError, match='pred_score'):
        ev.process([sample('a', 0)])
    ev.process([sample('a', 0, 0, 2, score=[.9, .1]), sample('a', 1, 1, 2, score=[.9, .1])])
    with pytest.raises(ValueError, match="video 'a' has windows with labels 0 and 1"):
        ev.evaluate(2)
    with pytest.raises(ValueError, match='topk'):
        VideoAccuracy(topk=(0,))


def test_video_features_groups_windows():
    ids, feats, labels = video_features([('x', torch.tensor([1., 0.]), 3), ('y', torch.tensor([0., 2.]), 1),
                                         ('x', torch.tensor([3., 2.]), 3)])
    assert ids == ['x', 'y'] and labels.tolist() == [3, 1]
    assert torch.equal(feats, torch.tensor([[2., 1.], [0., 2.]]))
    with pytest.raises(ValueError, match='different labels'):
        video_features([('x', torch.zeros(2), 0), ('x', torch.zeros(2), 1)])


class _ToyModel(torch.nn.Module):
    """val_step -> samples whose pred_feature is the batch's 'feat' input (records its mode)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.modes = []

    def val_step(self, data):
        self.modes.append(self.training)
        out = []
        for feat, s in zip(data['inputs'], data['data_samples']):
            s.pred_feature = feat
            out.append(s)
        return out


def test_gallery_hook_feeds_the_metric():
    windows = [(unit(0, 1.0), 'g0', 0), (unit(0, 3.0), 'g0', 0), (unit(30), 'g1', 1), (unit(60), 'g2', 0),
               (unit(90), 'g3', 1), (unit(180), 'g4', 0)]
    batches = [{'inputs': [w[0] for w in windows[i:i + 2]],
                'data_samples': [sample(w[1], w[2]) for w in windows[i:i + 2]]} for i in range(0, 6, 2)]
    loader = _Loader(batches)
    metric, acc = RetrievalMetric(topk=(1, 2)), VideoAccuracy()
    model = _ToyModel().train()
    runner = SimpleNamespace(model=model, seed=0, val_loop=SimpleNamespace(evaluator=Evaluator([metric, acc])),
                             test_loop=SimpleNamespace(evaluator=Evaluator([RetrievalMetric()])))
    hook = GalleryFeatureHook(dataloader=loader, on_test=False)
    hook.before_val_epoch(runner)
    assert model.modes == [False] * 3 and model.training  # eval during the pass, train mode restored
    feats, labels, ids = metric.gallery
    assert ids == ['g0', 'g1', 'g2', 'g3', 'g4'] and labels.tolist() == [0, 1, 0, 1, 0]
    assert torch.allclose(feats[0], unit(0, 2.0)) and torch.allclose(feats[3], unit(90))
    hook.before_test_epoch(runner)  # on_test=False: nothing
    assert runner.test_loop.evaluator.metrics[0].gallery is None
    # the metric with this gallery gives the hand-computed numbers
    ev = runner.val_loop.evaluator
    ev.process([sample(f'q{i}', l, feature=unit(a), score=[.5, .5, 0]) for i, (a, l) in enumerate(QUERIES)])
    out = ev.evaluate(4)
    assert out['retrieval/R@1'] == pytest.approx(50.0)
    assert out['retrieval/mAP@500'] == pytest.approx(100 * sum(AP) / 3)


def test_gallery_hook_requires_pred_feature():
    class NoFeature(_ToyModel):
        def val_step(self, data):
            return list(data['data_samples'])
    hook = GalleryFeatureHook(dataloader=_Loader([{'inputs': [unit(0)], 'data_samples': [sample('g', 0)]}]))
    runner = SimpleNamespace(model=NoFeature(), seed=0,
                             val_loop=SimpleNamespace(evaluator=Evaluator([RetrievalMetric()])))
    with pytest.raises(KeyError, match='pred_feature'):
        hook.before_val_epoch(runner)
    assert runner.model.training  # restored even after the error
    with pytest.raises(ValueError, match='dataloader is required'):
        GalleryFeatureHook(dataloader=None)


class _Loader:
    def __init__(self, batches):
        self.batches = batches
        self.dataset = [None] * sum(len(b['data_samples']) for b in batches)

    def __iter__(self):
        return iter(self.batches)
