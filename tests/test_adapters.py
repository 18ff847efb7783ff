"""Adapters: shapes and the initialisation schemes the papers use."""
import pytest
import torch

import kdtoolbox


def build(**cfg):
    return kdtoolbox.ADAPTERS.build(cfg)


def test_conv_adapters_map_channels_and_keep_the_grid():
    x = torch.randn(2, 8, 5, 7)
    for k in (1, 3):
        assert build(type='ConvAdapter', in_channels=8, out_channels=16, kernel_size=k)(x).shape == (2, 16, 5, 7)
    assert build(type='ConvNormActAdapter', in_channels=8, out_channels=4)(x).shape == (2, 4, 5, 7)


def test_near_zero_init_is_truncated_at_two_std_and_bias_zero():
    a = build(type='ConvAdapter', in_channels=64, out_channels=64, kernel_size=3, init='near_zero', std=1e-4)
    w = a.conv.weight
    assert w.abs().max() <= 2e-4 + 1e-12
    assert 0.5e-4 < w.std().item() < 1.5e-4  # truncation shrinks the std a little
    assert torch.count_nonzero(a.conv.bias) == 0


def test_zeros_init_gives_zero_output_and_relu_clips():
    a = build(type='ConvAdapter', in_channels=3, out_channels=3, init='zeros')
    assert torch.count_nonzero(a(torch.randn(1, 3, 4, 4))) == 0
    r = build(type='ConvAdapter', in_channels=3, out_channels=3, relu=True)
    assert (r(torch.randn(1, 3, 4, 4)) >= 0).all()


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="adapter init 'ones'"):
        build(type='ConvAdapter', in_channels=3, out_channels=3, init='ones')


def test_mlp_and_identity_and_resize():
    assert build(type='MLPAdapter', in_channels=6, out_channels=2, hidden_channels=[5])(torch.randn(4, 6)).shape == (4, 2)
    x = torch.randn(1, 2, 3, 3)
    assert build(type='IdentityAdapter')(x) is x
    assert build(type='ResizeAdapter')(x, target=torch.zeros(1, 2, 6, 5)).shape == (1, 2, 6, 5)
    assert build(type='ResizeAdapter', size=(2, 2))(x).shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match='needs a fixed size'):
        build(type='ResizeAdapter')(x)
