"""Attention maps of kdtoolbox.ops.attention against plain loops."""
import math

import torch

from kdtoolbox.ops.attention import channel_attention, pixel_channel_attention, spatial_attention


def test_maps_against_loops():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    t = 0.5
    sp, ch, pc = spatial_attention(f, t), channel_attention(f, t), pixel_channel_attention(f, t)
    for n in range(2):
        z = sum(math.exp(f[n, :, y, x].abs().mean().item() / t) for y in range(4) for x in range(5))
        assert abs(sp[n, 1, 2].item() - 20 * math.exp(f[n, :, 1, 2].abs().mean().item() / t) / z) < 1e-4
        zc = sum(math.exp(f[n, c].abs().mean().item() / t) for c in range(3))
        assert abs(ch[n, 1].item() - 3 * math.exp(f[n, 1].abs().mean().item() / t) / zc) < 1e-4
        zp = sum(math.exp(f[n, c, 3, 4].abs().item() / t) for c in range(3))
        assert abs(pc[n, 2, 3, 4].item() - 3 * math.exp(f[n, 2, 3, 4].abs().item() / t) / zp) < 1e-4
    assert torch.allclose(sp.sum(dim=(1, 2)), torch.full((2,), 20.))
    assert torch.allclose(pc.sum(dim=1), torch.full((2, 4, 5), 3.))


def test_uniform_feature_gives_uniform_attention():
    f = torch.ones(1, 4, 2, 3)
    assert torch.allclose(spatial_attention(f, 0.8), torch.ones(1, 2, 3))
    assert torch.allclose(channel_attention(f, 0.8), torch.ones(1, 4))
    assert torch.allclose(pixel_channel_attention(f, 0.8), torch.ones(1, 4, 2, 3))
