"""RKD distance and angle potentials against hand-computed values and plain loops."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtoolbox.losses.relation import (angle_potentials, normalised_distances, pairwise_distances,
                                       rkd_angle_loss, rkd_distance_loss)


def test_distances_of_a_right_triangle():
    x = torch.tensor([[0., 0.], [3., 0.], [0., 4.]])
    d = pairwise_distances(x)
    expected = torch.tensor([[0., 3., 4.], [3., 0., 5.], [4., 5., 0.]])
    assert torch.allclose(d, expected, atol=1e-5)
    mu = (3 + 4 + 5) * 2 / 6  # mean over the 6 ordered pairs i != j
    assert torch.allclose(normalised_distances(x), expected / mu, atol=1e-5)


def test_distance_loss_by_hand():
    s = torch.tensor([[0., 0.], [3., 0.], [0., 4.]])   # distances 3, 4, 5 -> mu 4
    t = torch.tensor([[0., 0.], [1., 0.], [2., 0.]])   # distances 1, 2, 1 -> mu 4/3
    ps = torch.tensor([3., 4., 5.]) / 4
    pt = torch.tensor([1., 2., 1.]) / (4 / 3)
    diff = (ps - pt).abs()
    huber = torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5)
    total = 2 * huber.sum()  # each unordered pair appears twice
    assert torch.allclose(rkd_distance_loss(s, t, pairs='all'), total / 9, atol=1e-6)
    assert torch.allclose(rkd_distance_loss(s, t, pairs='off_diagonal'), total / 6, atol=1e-6)


def test_scale_invariance_and_zero_for_equal_structure():
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert rkd_distance_loss(x, 7.5 * x).item() == pytest.approx(0, abs=1e-6)
    assert rkd_angle_loss(x, 3 * x).item() == pytest.approx(0, abs=1e-6)


def test_angle_potential_is_the_cosine_at_the_middle_point():
    x = torch.tensor([[1., 0.], [0., 0.], [0., 2.]])
    a = angle_potentials(x)
    assert a[1, 0, 2].item() == pytest.approx(0.0, abs=1e-6)   # right angle at x_1
    # angle at x_0 between x_1 - x_0 = (-1, 0) and x_2 - x_0 = (-1, 2): cos = 1 / sqrt(5)
    assert a[0, 1, 2].item() == pytest.approx(1 / math.sqrt(5), abs=1e-6)


def test_angle_loss_matches_a_triple_loop():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 6, generator=g)

    def cos_at(x, i, j, k):
        a, b = x[i] - x[j], x[k] - x[j]
        if a.norm() == 0 or b.norm() == 0:
            return torch.tensor(0.)
        return torch.dot(a, b) / (a.norm() * b.norm())

    terms = [F.smooth_l1_loss(cos_at(s, i, j, k), cos_at(t, i, j, k))
             for i in range(4) for j in range(4) for k in range(4)]
    assert torch.allclose(rkd_angle_loss(s, t), torch.stack(terms).mean(), atol=1e-6)


def test_teacher_gets_no_gradient_and_small_sets_give_zero():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    (rkd_distance_loss(s, t) + rkd_angle_loss(s, t)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    one = torch.randn(1, 3, requires_grad=True)
    assert rkd_distance_loss(one, torch.randn(1, 3)).item() == 0
    assert rkd_angle_loss(torch.randn(2, 3), torch.randn(2, 3)).item() == 0
    with pytest.raises(ValueError, match='same R'):
        rkd_distance_loss(torch.randn(3, 2), torch.randn(4, 2))
