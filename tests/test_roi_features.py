"""kdtoolbox.ops.roi_features: RoI crops from FPN levels, checked against values known by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdtoolbox.ops.roi_features import RoIFeatureExtractor, boxes_to_rois

STRIDES = (4, 8, 16, 32)


def cell_feats(size=512, channels=2, batch=2, seed=0):
    """Random per-cell values on each level of a ``size`` x ``size`` input (one value per cell)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in STRIDES]


def hand_level(w, h):
    """The FPN rule written out: sqrt(area) < 112 -> 0, < 224 -> 1, < 448 -> 2, else 3."""
    scale = math.sqrt(w * h)
    if scale < 112:
        return 0
    if scale < 224:
        return 1
    if scale < 448:
        return 2
    return 3


@pytest.mark.parametrize('level', [0, 1, 2, 3])
def test_roi_on_cell_boundaries_gives_the_block_averages(level):
    """A RoI starting on a cell corner whose 7 bins span 2x2 cells each: with aligned RoIAlign and
    sampling_ratio=0 (2 samples per bin side, each on a cell centre) every output is the mean of
    its 2x2 cells, i.e. avg_pool2d of the 14x14 block of cells."""
    feats = cell_feats()
    stride = STRIDES[level]
    cx, cy = 1, 2  # first cell of the RoI
    x1, y1 = cx * stride, cy * stride
    side = 14 * stride  # 56, 112, 224, 448 px: the smallest RoI of each level
    rois = torch.tensor([[1., x1, y1, x1 + side, y1 + side]])
    extractor = RoIFeatureExtractor()
    assert extractor.map_levels(rois).tolist() == [level] == [hand_level(side, side)]
    out = extractor(feats, rois)
    expected = F.avg_pool2d(feats[level][1:2, :, cy:cy + 14, cx:cx + 14], 2)
    assert out.shape == (1, 2, 7, 7)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_rectangular_roi_and_batch_index():
    """56 x 224 px on P3 (sqrt = 112 -> level 1): bins 1 cell wide (the cell value) and 4 cells
    high (the mean of 4 cells); the batch index selects the image."""
    feats = cell_feats()
    rois = torch.tensor([[0., 8 * 3, 8 * 1, 8 * 3 + 56, 8 * 1 + 224],
                         [1., 8 * 3, 8 * 1, 8 * 3 + 56, 8 * 1 + 224]])
    extractor = RoIFeatureExtractor()
    assert extractor.map_levels(rois).tolist() == [1, 1]
    out = extractor(feats, rois)
    for b in range(2):
        block = feats[1][b:b + 1, :, 1:1 + 28, 3:3 + 7]
        torch.testing.assert_close(out[b:b + 1], F.avg_pool2d(block, (4, 1)), rtol=0, atol=1e-6)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize('w,h', [(10, 10), (55, 55), (111, 111), (112, 112), (56, 224), (223, 223),
                                 (224, 224), (447, 447), (448, 448), (300, 900), (2000, 2000), (0, 0)])
def test_level_assignment_of_known_sizes(w, h):
    rois = torch.tensor([[0., 5., 7., 5. + w, 7. + h]])
    assert RoIFeatureExtractor().map_levels(rois).tolist() == [hand_level(w, h)]


def test_finest_scale_and_strides_are_configurable():
    ex = RoIFeatureExtractor(featmap_strides=(8, 16, 32), finest_scale=28)
    rois = torch.tensor([[0., 0., 0., 50., 50.], [0., 0., 0., 60., 60.], [0., 0., 0., 500., 500.]])
    assert ex.map_levels(rois).tolist() == [0, 1, 2]  # 50 < 56 <= 60; 500 clamped to the last level
    assert ex.num_levels == 3 and ex.output_size == (7, 7)
    assert RoIFeatureExtractor(roi_layer=dict(type='RoIAlign', output_size=(3, 5))).output_size == (3, 5)


def test_default_is_the_faster_rcnn_roi_extractor():
    """The default crops exactly as mmdet's Faster R-CNN FPN RoI head does."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    import mmdet
    import os
    base = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', '_base_', 'models',
                        'faster-rcnn_r50_fpn.py')
    roi_cfg = Config.fromfile(base).model.roi_head.bbox_roi_extractor
    roi_cfg.out_channels = 2
    reference = MODELS.build(roi_cfg)
    feats = cell_feats(size=512, seed=1)
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(40, 2, generator=g) * 200
    wh = torch.exp(torch.empty(40, 2).uniform_(math.log(4), math.log(500), generator=g))  # every level
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy, xy + wh], dim=1)
    rois = torch.cat([rois, torch.tensor([[0., 3., 9., 503., 480.], [1., 50., 20., 300., 310.]])])
    ours = RoIFeatureExtractor()
    assert ours.map_levels(rois).unique().tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(ours(feats, rois), reference(tuple(feats), rois), rtol=0, atol=0)
    extra = feats + [torch.randn(2, 2, 4, 4)]  # a neck's fifth level (P6) is ignored, as the RoI head does
    torch.testing.assert_close(ours(extra, rois), reference(tuple(feats), rois), rtol=0, atol=0)


def test_extract_pair_same_levels_different_channels_teacher_without_grad():
    g = torch.Generator().manual_seed(3)
    s_feats = [torch.randn(2, 3, 64 // s * 4, 64 // s * 4, generator=g).requires_grad_() for s in STRIDES]
    t_feats = [torch.randn(2, 5, 64 // s * 4, 64 // s * 4, generator=g).requires_grad_() for s in STRIDES]
    rois = torch.tensor([[0., 10., 10., 50., 60.], [1., 0., 0., 200., 180.], [1., 30., 30., 250., 250.]],
                        requires_grad=True)
    ex = RoIFeatureExtractor()
    s, t = ex.extract_pair(s_feats, t_feats, rois)
    assert s.shape == (3, 3, 7, 7) and t.shape == (3, 5, 7, 7)
    assert s.requires_grad and not t.requires_grad
    torch.testing.assert_close(t, ex(t_feats, rois))
    torch.testing.assert_close(s, ex(s_feats, rois))
    (s.sum() + t.sum()).backward()
    assert all(f.grad is None for f in t_feats)
    assert rois.grad is None
    used = set(ex.map_levels(rois).tolist())
    for level, f in enumerate(s_feats):
        assert f.grad is not None
        assert (f.grad.abs().sum() > 0) == (level in used)


def test_no_rois_gives_an_empty_crop_that_still_backpropagates():
    feats = [f.requires_grad_() for f in cell_feats(size=128)]
    out = RoIFeatureExtractor()(feats, torch.zeros(0, 5))
    assert out.shape == (0, 2, 7, 7)
    out.sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() == 0 for f in feats)


def test_bad_inputs_are_named():
    feats = cell_feats(size=128)
    with pytest.raises(ValueError, match='4 strides'):
        RoIFeatureExtractor()(feats[:3], torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r'\[R, 5\]'):
        RoIFeatureExtractor()(feats, torch.zeros(1, 4))
    with pytest.raises(KeyError, match='type'):
        RoIFeatureExtractor(roi_layer=dict(output_size=7))


def test_boxes_to_rois_clips_drops_and_caps():
    boxes = [
        torch.tensor([[10., 20., 60., 90.],        # kept
                      [-20., 100., 80., 300.],      # partly outside: clipped to (0, 100, 80, 256)
                      [30., 30., 30., 80.],         # zero width: dropped
                      [50., 40., 60., 40.],         # zero height: dropped
                      [70., 70., 40., 90.],         # inverted: dropped
                      [300., 10., 400., 50.],       # entirely outside (right): empty after clipping
                      [float('nan'), 0., 5., 5.]]),  # non-finite: dropped
        torch.zeros(0, 4),                          # an image without boxes
        torch.tensor([[0., 0., 256., 256.], [5., 5., 9., 9.], [100., 150., 250., 250.]]),
    ]
    shapes = [(256, 256), (128, 128), (200, 180)]  # (h, w): images of different sizes
    rois = boxes_to_rois(boxes, shapes)
    expected = torch.tensor([[0., 10., 20., 60., 90.], [0., 0., 100., 80., 256.],
                             [2., 0., 0., 180., 200.], [2., 5., 5., 9., 9.], [2., 100., 150., 180., 200.]])
    torch.testing.assert_close(rois, expected)
    capped = boxes_to_rois(boxes, shapes, max_per_img=1)
    torch.testing.assert_close(capped, expected[[0, 2]])
    big = boxes_to_rois(boxes, shapes, min_size=10)  # the 4 x 4 box goes
    torch.testing.assert_close(big, expected[[0, 1, 2, 4]])
    unclipped = boxes_to_rois([boxes[0][:2]], None)
    torch.testing.assert_close(unclipped, torch.tensor([[0., 10., 20., 60., 90.], [0., -20., 100., 80., 300.]]))
    assert boxes_to_rois([torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 5)


def test_boxes_to_rois_detaches_and_accepts_mmdet_boxes():
    from mmdet.structures.bbox import HorizontalBoxes
    b = torch.tensor([[1., 2., 30., 40., 0.9]], requires_grad=True)  # a score column is ignored
    rois = boxes_to_rois([b, HorizontalBoxes(torch.tensor([[3., 4., 5., 6.]]))], [(64, 64), (64, 64)])
    assert not rois.requires_grad
    torch.testing.assert_close(rois, torch.tensor([[0., 1., 2., 30., 40.], [1., 3., 4., 5., 6.]]))
