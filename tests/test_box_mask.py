"""kdtoolbox.ops.box_mask: FGD's box masks on feature grids, against masks drawn by hand and a
plain per-box loop written the way the official FGD code paints them."""
import pytest
import torch
from torch.overrides import TorchFunctionMode

from kdtoolbox.ops.box_mask import background_mask, box_cell_extents, fgd_masks, rasterize_boxes

METHODS = ['scatter', 'dense']


def official_loop_masks(boxes, img_shapes, sizes):
    """The official FGD mask loop (yzd-v/FGD mmdet/distillation/losses/fgd.py), restated plainly:
    per level, per image, per box; boxes normalised by each image's img_shape, multiplied by the
    level size, floor/ceil, painted inclusively with max(1 / (h_cells * w_cells))."""
    fgs, bgs = [], []
    for h_l, w_l in sizes:
        fg = torch.zeros(len(boxes), h_l, w_l)
        bg = torch.ones(len(boxes), h_l, w_l)
        for i, b in enumerate(boxes):
            img_h, img_w = img_shapes[i]
            scaled = torch.ones_like(b)
            scaled[:, 0] = b[:, 0] / img_w * w_l
            scaled[:, 2] = b[:, 2] / img_w * w_l
            scaled[:, 1] = b[:, 1] / img_h * h_l
            scaled[:, 3] = b[:, 3] / img_h * h_l
            wmin, wmax = torch.floor(scaled[:, 0]).int(), torch.ceil(scaled[:, 2]).int()
            hmin, hmax = torch.floor(scaled[:, 1]).int(), torch.ceil(scaled[:, 3]).int()
            area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
            for j in range(len(b)):
                region = fg[i, hmin[j]:hmax[j] + 1, wmin[j]:wmax[j] + 1]
                fg[i, hmin[j]:hmax[j] + 1, wmin[j]:wmax[j] + 1] = torch.maximum(region, area[j])
            bg[i] = torch.where(fg[i] > 0, 0, 1)
            if torch.sum(bg[i]):
                bg[i] /= torch.sum(bg[i])
        fgs.append(fg)
        bgs.append(bg)
    return fgs, bgs


def coco_like_boxes(img_shapes, num, seed):
    """Random boxes inside each image (sizes 1..400 px, some thin, some on cell boundaries)."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for h, w in img_shapes:
        xy = torch.rand(num, 2, generator=g) * torch.tensor([w, h])
        wh = torch.rand(num, 2, generator=g) ** 2 * 400
        b = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], 1)
        b[: num // 4] = b[: num // 4].round()  # integer pixels: edges on cell boundaries
        boxes.append(b)
    return boxes


# --- by hand -------------------------------------------------------------------------------
A, B = 1 / 12, 1 / 16
HAND_8x8 = [
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, A, A, A, 0, 0, 0, 0],
    [0, A, A, A, 0, 0, 0, 0],
    [0, A, A, A, B, B, 0, 0],
    [0, A, A, A, B, B, 0, 0],
    [0, 0, B, B, B, B, 0, 0],
    [0, 0, B, B, B, B, 0, 0],
]
C = 1 / 9
HAND_4x4 = [  # the same boxes at stride 16: box 1 -> cols 0-2 rows 1-3 (1/9), box 2 -> cols 1-3 rows 2-4 (1/9)
    [0, 0, 0, 0],
    [C, C, C, 0],
    [C, C, C, C],
    [C, C, C, C],
]


@pytest.mark.parametrize('method', METHODS)
def test_two_overlapping_boxes_drawn_by_hand(method):
    # 64x64 px batch; level 0 is 8x8 (8 px cells), level 1 is 4x4 (16 px cells).
    # box 1: x 8..24 -> cells 1..3 (3 wide), y 16..40 -> cells 2..5 (4 high): 1/12
    # box 2: x 20..36 -> 2.5..4.5 -> cells 2..5 (4), y 36..52 -> 4.5..6.5 -> cells 4..7 (4): 1/16
    # where they overlap the larger weight (1/12) stays.
    boxes = [torch.tensor([[8., 16., 24., 40.], [20., 36., 36., 52.]])]
    fg, bg = fgd_masks(boxes, [(8, 8), (4, 4)], batch_input_shape=(64, 64), method=method)
    assert torch.allclose(fg[0][0], torch.tensor(HAND_8x8), rtol=0, atol=1e-8)
    assert torch.allclose(fg[1][0], torch.tensor(HAND_4x4), rtol=0, atol=1e-8)
    # 64 - (12 + 16 - 4 overlapping) = 40 background cells on the 8x8 grid
    assert torch.allclose(bg[0][0], (torch.tensor(HAND_8x8) == 0).float() / 40)
    assert torch.allclose(bg[1][0], (torch.tensor(HAND_4x4) == 0).float() / 5)
    assert fg[0].dtype == torch.float32 and fg[0].shape == (1, 8, 8)


@pytest.mark.parametrize('method', METHODS)
def test_edge_cases(method):
    s = 64  # 8x8 grid, 8 px cells
    images = [
        torch.zeros(0, 4),                                    # 0: no boxes
        torch.tensor([[0., 0., 64., 64.]]),                   # 1: the whole image
        torch.tensor([[-16., -16., 16., 16.], [56., 56., 80., 80.], [100., 100., 120., 120.]]),  # 2: outside
        torch.tensor([[16., 8., 16., 40.], [44., 60., 52., 60.], [20., 20., 20., 20.],
                      [40., 40., 30., 30.]]),                 # 3: degenerate
    ]
    fg, bg = fgd_masks(images, [(8, 8)], batch_input_shape=(s, s), method=method)
    fg, bg = fg[0], bg[0]
    # no boxes: no foreground, uniform background
    assert torch.count_nonzero(fg[0]) == 0
    assert torch.allclose(bg[0], torch.full((8, 8), 1 / 64))
    # the whole image: x2 = 64 px -> ceil(8) = 8: extent 0..8 (9 cells, unclipped) -> 1/81
    # everywhere; the background is empty and stays zeros (no division by zero)
    assert torch.allclose(fg[1], torch.full((8, 8), 1 / 81))
    assert torch.count_nonzero(bg[1]) == 0 and torch.isfinite(bg[1]).all()
    # partly outside: -16..16 -> cells -2..2 (5x5, weight 1/25) clipped to 0..2; 56..80 -> 7..10
    # (4x4, 1/16) clipped to cell 7; fully outside (100..120 px): nothing
    expected = torch.zeros(8, 8)
    expected[0:3, 0:3] = 1 / 25
    expected[7, 7] = 1 / 16
    assert torch.allclose(fg[2], expected)
    assert torch.allclose(bg[2], (expected == 0).float() / 54)
    # degenerate: zero width on a cell boundary (x 16 -> 2..2, y 8..40 -> 1..5): one column of 5
    # cells, 1/5; zero height inside a cell (y 60 -> 7.5 -> 7..8, x 44..52 -> 5.5..6.5 -> 5..7):
    # 2x3 cells unclipped, 1/6, clipped to row 7; a point at 20 px (2.5) -> cells 2..3 x 2..3, 1/4;
    # an inverted box (x2 < x1): nothing
    expected = torch.zeros(8, 8)
    expected[1:6, 2] = 1 / 5
    expected[7, 5:8] = 1 / 6
    expected[2:4, 2:4] = torch.maximum(expected[2:4, 2:4], torch.tensor(1 / 4))
    assert torch.allclose(fg[3], expected)
    assert torch.allclose(bg[3].sum(), torch.tensor(1.0))


@pytest.mark.parametrize('method', METHODS)
def test_images_of_different_sizes_in_one_batch(method):
    # a 64x64 padded batch holding a 64x64 image and a 32x48 one, the same box in both
    boxes = [torch.tensor([[8., 8., 16., 16.]])] * 2
    img_shapes = [(64, 64), (32, 48)]
    fg, _ = fgd_masks(boxes, [(8, 8)], batch_input_shape=(64, 64), img_shapes=img_shapes, method=method)
    # correct geometry: the same pixels are the same cells in both images (x, y 1..2: 2x2, 1/4)
    expected = torch.zeros(8, 8)
    expected[1:3, 1:3] = 1 / 4
    assert torch.allclose(fg[0][0], expected) and torch.allclose(fg[0][1], expected)
    # legacy: the second image's box is normalised by its own 32x48 size and stretched to the
    # padded grid: x 8/48*8 = 1.33 -> 1, 16/48*8 = 2.67 -> 3; y 8/32*8 = 2, 16/32*8 = 4
    fg, _ = fgd_masks(boxes, [(8, 8)], batch_input_shape=(64, 64), img_shapes=img_shapes,
                      legacy_box_scaling=True, method=method)
    legacy = torch.zeros(8, 8)
    legacy[2:5, 1:4] = 1 / 9
    assert torch.allclose(fg[0][0], expected) and torch.allclose(fg[0][1], legacy)


# --- against the official per-box loop ---------------------------------------------------------
@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('num', [1, 7, 50])
def test_legacy_scaling_equals_the_official_loop_bit_for_bit(method, num):
    img_shapes = [(800, 1199), (800, 1067), (608, 800)]  # padded to an 800x1216 batch
    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    boxes = coco_like_boxes(img_shapes, num, seed=num)
    boxes[1] = boxes[1][:0]  # an image without boxes in the middle of the batch
    ref_fg, ref_bg = official_loop_masks(boxes, img_shapes, sizes)
    # small chunks too, so that the chunked paths run
    for max_elements in (1 << 22, 997):
        fg, bg = fgd_masks(boxes, sizes, img_shapes=img_shapes, legacy_box_scaling=True, method=method,
                           max_elements=max_elements)
        for level in range(len(sizes)):
            assert torch.equal(fg[level], ref_fg[level]), (level, max_elements)
            assert torch.equal(bg[level], ref_bg[level]), (level, max_elements)


@pytest.mark.parametrize('method', METHODS)
def test_batch_input_shape_scaling_equals_the_loop_with_the_batch_shape(method):
    img_shapes = [(800, 1199), (800, 1067)]
    batch = (800, 1216)
    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    boxes = coco_like_boxes(img_shapes, 20, seed=3)
    ref_fg, ref_bg = official_loop_masks(boxes, [batch, batch], sizes)
    fg, bg = fgd_masks(boxes, sizes, batch_input_shape=batch, method=method)
    assert all(torch.equal(a, b) for a, b in zip(fg, ref_fg))
    assert all(torch.equal(a, b) for a, b in zip(bg, ref_bg))


def test_scatter_and_dense_agree_with_boxes_outside_and_degenerate():
    g = torch.Generator().manual_seed(7)
    boxes = []
    for n in (0, 13, 40):
        xy = torch.rand(n, 2, generator=g) * 300 - 50  # some start outside the 256x192 image
        wh = torch.rand(n, 2, generator=g) * 200 * (torch.rand(n, 1, generator=g) > 0.2)  # some 0x0
        boxes.append(torch.cat([xy, xy + wh], 1))
    sizes = [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    a = fgd_masks(boxes, sizes, batch_input_shape=(192, 256), method='scatter', max_elements=101)
    b = fgd_masks(boxes, sizes, batch_input_shape=(192, 256), method='dense', max_elements=101)
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(x, y)


# --- API details -------------------------------------------------------------------------------
def test_extents_are_inclusive_floor_ceil_and_unclipped():
    ext = box_cell_extents(torch.tensor([[-8., 4., 20., 64.]]), torch.tensor([[64., 64.]]), [(8, 8), (4, 4)])
    assert ext.shape == (2, 1, 4) and ext.dtype == torch.int64
    assert ext[0, 0].tolist() == [-1, 0, 3, 8]  # x -1..2.5, y 0.5..8
    assert ext[1, 0].tolist() == [-1, 0, 2, 4]


def test_binary_weight_and_no_autograd():
    boxes = [torch.tensor([[8., 16., 24., 40.], [20., 36., 36., 52.]], requires_grad=True)]
    (mask,) = rasterize_boxes(boxes, [(8, 8)], batch_input_shape=(64, 64), weight='binary')
    assert not mask.requires_grad
    assert torch.equal(mask[0], (torch.tensor(HAND_8x8) > 0).float())


def test_background_mask_normalises_each_image():
    fg = torch.zeros(3, 2, 2)
    fg[1, 0, 0] = 0.5
    fg[2] = 1.0
    bg = background_mask(fg)
    assert torch.allclose(bg.sum(dim=(1, 2)), torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(bg[1], torch.tensor([[0, 1 / 3], [1 / 3, 1 / 3]]))


def test_errors():
    with pytest.raises(ValueError, match='batch_input_shape'):
        fgd_masks([torch.zeros(1, 4)], [(4, 4)])
    with pytest.raises(ValueError, match='img_shape'):
        fgd_masks([torch.zeros(1, 4)], [(4, 4)], legacy_box_scaling=True)
    with pytest.raises(ValueError, match='method'):
        fgd_masks([torch.zeros(1, 4)], [(4, 4)], batch_input_shape=(8, 8), method='loop')


class _HostDataMode(TorchFunctionMode):
    """What would copy host data to the GPU with a blocking (synchronising) copy on CUDA, seen on
    CPU: an index given as a Python sequence (``x[:, [1, 0]]`` builds the index tensor from host
    data), and a tensor built on the host (``torch.tensor``, ``torch.arange`` without device, ...)
    meeting a device tensor without going through ``_h2d`` (the pinned, non-blocking copy)."""
    HOST_FACTORIES = {torch.tensor, torch.as_tensor, torch.from_numpy, torch.arange, torch.zeros,
                      torch.ones, torch.full, torch.empty}

    def __init__(self):
        super().__init__()
        self.problems = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, list) for i in index):
                self.problems.append(f'{func.__name__} with a Python list index')
        if func in self.HOST_FACTORIES and 'device' not in kwargs and isinstance(out, torch.Tensor):
            out._host_made = True
        elif func is torch.Tensor.to:
            pass  # _h2d's copy (patched below) and dtype casts: the result is on the device, or the input's
        elif func is not torch.Tensor.pin_memory:
            flat = [x for a in list(args) + list(kwargs.values()) for x in (a if isinstance(a, (tuple, list)) else (a,))]
            tensors = [a for a in flat if isinstance(a, torch.Tensor) and a.dim()]
            host = [t for t in tensors if getattr(t, '_host_made', False)]
            if host and len(host) < len(tensors):
                self.problems.append(f'{getattr(func, "__name__", func)} mixes a host-built tensor with device ones')
            elif host and isinstance(out, torch.Tensor):
                out._host_made = True
        return out


@pytest.mark.parametrize('legacy', [True, False])
def test_dense_path_copies_host_data_only_through_h2d(monkeypatch, legacy):
    """The CPU stand-in for the CUDA no-synchronisation test below: in the dense path, host data
    reaches the boxes' device only through ``_h2d`` (pinned, non-blocking), never as a Python list
    index or a host tensor used directly with device tensors."""
    import kdtoolbox.ops.box_mask as box_mask
    copies = []

    def h2d(t, device):  # the CUDA branch of _h2d: a real copy, whose result lives on the device
        copies.append(tuple(t.shape))
        moved = t.clone()
        moved._host_made = False
        return moved
    monkeypatch.setattr(box_mask, '_h2d', h2d)
    img_shapes = [(64, 96), (48, 80)]
    boxes = coco_like_boxes(img_shapes, 7, seed=3)
    mode = _HostDataMode()
    with mode:
        fgd_masks(boxes, [(8, 12), (4, 6)], batch_input_shape=(64, 96), img_shapes=img_shapes,
                  legacy_box_scaling=legacy, method='dense')
    assert copies, '_h2d was not used'
    assert mode.problems == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_dense_path_never_synchronises_and_matches_cpu():
    img_shapes = [(800, 1199), (800, 1067)]
    sizes = [(100, 168), (50, 84), (25, 42), (13, 21), (7, 11)]
    boxes = coco_like_boxes(img_shapes, 50, seed=11)
    ref_fg, _ = official_loop_masks(boxes, img_shapes, sizes)
    cuda_boxes = [b.cuda() for b in boxes]
    fgd_masks(cuda_boxes, sizes, img_shapes=img_shapes, legacy_box_scaling=True, method='dense')  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        fg, bg = fgd_masks(cuda_boxes, sizes, img_shapes=img_shapes, legacy_box_scaling=True, method='dense')
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert fg[0].device.type == 'cuda'
    # the CPU reference divides on the CPU; on CUDA the legacy mode multiplies by the reciprocal,
    # as the official code does there: allow a cell of difference at exact boundaries only
    for a, b in zip(fg, ref_fg):
        assert (a.cpu() != b).float().mean() < 1e-3


def test_auto_picks_dense_for_coco_like_batches_and_scatter_for_crowded_ones_on_cpu(monkeypatch):
    import kdtoolbox.ops.box_mask as box_mask
    used = []
    for name in ('_paint_dense', '_paint_scatter'):
        real = getattr(box_mask, name)
        monkeypatch.setattr(box_mask, name, lambda *a, real=real, name=name: used.append(name) or real(*a))
    boxes = coco_like_boxes([(64, 64)], 3, seed=0)
    fgd_masks(boxes, [(8, 8)], batch_input_shape=(64, 64))
    fgd_masks(boxes, [(8, 8)], batch_input_shape=(64, 64), method='dense')
    assert used == ['_paint_dense', '_paint_dense']
    dense = box_mask.rasterize_boxes(boxes, [(8, 8)], batch_input_shape=(64, 64))
    (crowded,) = box_mask.paint_boxes_max(
        box_mask.box_cell_extents(boxes[0], torch.tensor([[64., 64.]]).expand(3, 2), [(8, 8)]),
        torch.ones(3), [3], [(8, 8)], dense_limit=3 * 64 - 1)
    assert used[-1] == '_paint_scatter'
    assert torch.equal(crowded > 0, dense[0] > 0)
