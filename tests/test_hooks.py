"""The distillation loss schedule, checked at points whose value is known by hand."""
import math

import pytest

from kdtoolbox.engine.hooks import DistillLossScheduleHook, distill_scale


def test_constant_and_warmup():
    assert distill_scale(0, 0) == 1.0
    assert distill_scale(9, 0, warmup_iters=10) == 0.0
    assert distill_scale(10, 0, warmup_iters=10) == 1.0


def test_linear_warmup_as_frs():
    # FRS's Increase_Hook: the weight is iteration / 500 during the first 500 iterations
    assert distill_scale(0, 0, warmup_iters=500, warmup_mode='linear') == 0.0
    assert distill_scale(125, 0, warmup_iters=500, warmup_mode='linear') == pytest.approx(0.25)
    assert distill_scale(499, 0, warmup_iters=500, warmup_mode='linear') == pytest.approx(0.998)
    assert distill_scale(500, 0, warmup_iters=500, warmup_mode='linear') == 1.0
    with pytest.raises(ValueError, match='warmup_mode'):
        DistillLossScheduleHook(warmup_iters=5, warmup_mode='exp')


def test_linear_decay():
    kw = dict(decay='linear', decay_begin_iter=100, decay_end_iter=200)
    assert distill_scale(50, 0, **kw) == 1.0
    assert distill_scale(150, 0, **kw) == pytest.approx(0.5)
    assert distill_scale(200, 0, **kw) == 0.0
    assert distill_scale(500, 0, **kw) == 0.0
    assert distill_scale(150, 0, min_scale=0.2, **kw) == pytest.approx(0.2 + 0.8 * 0.5)


def test_cosine_decay():
    kw = dict(decay='cosine', decay_begin_iter=0, decay_end_iter=100)
    assert distill_scale(0, 0, **kw) == 1.0
    assert distill_scale(50, 0, **kw) == pytest.approx(0.5)
    assert distill_scale(25, 0, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert distill_scale(100, 0, **kw) == pytest.approx(0.0)


def test_stop_epoch():
    assert distill_scale(1000, 4, stop_epoch=5) == 1.0
    assert distill_scale(1000, 5, stop_epoch=5) == 0.0


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match='decay_end_iter'):
        DistillLossScheduleHook(decay='linear')
    with pytest.raises(ValueError, match="'linear', 'cosine'"):
        DistillLossScheduleHook(decay='step', decay_end_iter=10)
