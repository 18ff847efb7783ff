"""Box-to-grid rasterisation: paint ground-truth boxes on feature grids, all levels at once.

Method-agnostic building blocks for GT-guided feature distillers (FGD's focal masks, binary
object masks, ...). Everything runs under ``torch.no_grad()`` on the device of the boxes, with
no Python loop over boxes (the per-image box tensors are concatenated once, and every level is
computed from the same ``[L, B, 4]`` extents) and no device-to-host synchronisation per box.

Box to grid (:func:`box_cell_extents`). A box ``(x1, y1, x2, y2)`` in pixels of a frame of size
``(H_src, W_src)`` maps to level ``l`` of size ``(H_l, W_l)`` as ``x * W_l / W_src`` and takes the
*inclusive* cell extent ``[floor(x1'), ceil(x2')] x [floor(y1'), ceil(y2')]`` (FGD's convention:
a box whose edges fall inside cells covers those cells, and an edge on a cell boundary still
covers the next cell). The extent is returned unclipped; painting clips it to the grid, so a box
partly outside the grid paints its visible part and a box fully outside paints nothing. A
zero-width (or zero-height) box on a cell boundary covers one column (row); an inverted box
(``x2 < x1`` by more than a cell) covers nothing.

``src`` is the frame the boxes are normalised by: the padded batch (``batch_input_shape``,
geometrically correct: the feature grid covers the padded batch) or, to reproduce the official
FGD code, each image's own ``img_shape`` (resized, unpadded), which stretches boxes by
``pad / img`` (see :func:`fgd_masks`).

Painting (:func:`paint_boxes_max`): each cell takes the largest value of the boxes covering it
(0 where no box). Two exact implementations, equal bit for bit:

- ``'dense'``: per level, broadcasts row and column interval tests over boxes padded per image and
  reduces with ``amax`` over boxes, in chunks of boxes so that at most ``max_elements`` elements
  ``[N, m, H, W]`` exist at once. Work O(N * M * H * W), no synchronisation at all.
- ``'scatter'``: enumerates exactly the covered cells (``sum of box areas`` elements, chunked to
  ``max_elements``) and reduces them with one ``scatter_reduce_(amax)`` into a buffer holding all
  levels. Memory and work O(covered cells), whatever the number of boxes. Needs the number of
  covered cells on the host: one device-to-host copy per call (not per box, not per level).
- ``'auto'`` (default): dense on accelerators (a handful of kernels, where a synchronisation would
  stall the queue); on CPU dense while ``N * M_max * sum_l H_l * W_l <= dense_limit`` (COCO-like
  batches), scatter beyond (crowded images).

:func:`fgd_masks` builds FGD's foreground mask (weight ``1 / (h_cells * w_cells)`` of the
unclipped extent, the larger weight where boxes overlap) and background mask (1 where the
foreground is 0, normalised to sum 1 per image; all zeros for an all-foreground image).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ['box_cell_extents', 'paint_boxes_max', 'background_mask', 'rasterize_boxes', 'fgd_masks']

Shape = Union[Sequence[int], torch.Size]

#: default bound on the elements one chunk materialises (both methods)
MAX_ELEMENTS = 1 << 22
#: 'auto' on CPU: dense up to this many box-cell pairs N * M_max * sum(H_l * W_l), scatter beyond
DENSE_LIMIT = 1 << 23


def _h2d(t: Tensor, device) -> Tensor:
    """Copy a small host tensor to ``device`` without blocking: from pinned memory,
    asynchronously (a copy from pageable memory would wait for the device's queue)."""
    device = torch.device(device)
    if device.type == 'cpu':
        return t
    if device.type == 'cuda':
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _sizes(feat_sizes: Sequence[Shape]) -> list[tuple[int, int]]:
    sizes = [(int(s[-2]), int(s[-1])) for s in feat_sizes]
    if not sizes:
        raise ValueError('feat_sizes: at least one level is needed')
    return sizes


@torch.no_grad()
def box_cell_extents(boxes: Tensor, src_hw: Tensor, feat_sizes: Sequence[Shape],
                     reciprocal_scaling: bool = False) -> Tensor:
    """Inclusive, unclipped cell extents of boxes on every level.

    Args:
        boxes: ``[B, 4]`` xyxy pixels (computed in float32).
        src_hw: ``[B, 2]`` (H, W) of the frame each box is normalised by.
        feat_sizes: ``L`` level sizes ``(H_l, W_l)`` (or any shapes ending with them).
        reciprocal_scaling: compute ``x * (1 / W_src)`` instead of ``x / W_src``: the arithmetic
            of PyTorch's CUDA kernel when the divisor is a Python number (as in the official FGD
            code); only for bit-exact reproduction of that code on CUDA.

    Returns:
        ``[L, B, 4]`` int64 ``(x_min, y_min, x_max, y_max)`` cell indices, inclusive:
        ``floor(x1 / W_src * W_l)``, ``floor(y1 / H_src * H_l)``, ``ceil(x2 / W_src * W_l)``,
        ``ceil(y2 / H_src * H_l)`` (float32 arithmetic in this order, as the official code).
    """
    sizes = _sizes(feat_sizes)
    boxes = boxes.reshape(-1, 4).float()
    src = src_hw.to(dtype=torch.float32).reshape(-1, 2)
    src = src.to(boxes.device) if src.device.type != 'cpu' else _h2d(src, boxes.device)
    # [B, 4] divisor (W, H, W, H) and [L, 1, 4] multiplier (W_l, H_l, W_l, H_l). Not
    # ``src[:, [1, 0, 1, 0]]``: a Python list index becomes an index tensor copied to the device
    # with a blocking (synchronising) copy on CUDA.
    src = src.flip(-1).repeat(1, 2)
    grid = _h2d(torch.tensor([[w, h, w, h] for h, w in sizes], dtype=torch.float32), boxes.device)
    norm = boxes * torch.reciprocal(src) if reciprocal_scaling else boxes / src
    scaled = norm.unsqueeze(0) * grid.unsqueeze(1)  # [L, B, 4]
    return torch.cat([scaled[..., :2].floor(), scaled[..., 2:].ceil()], dim=-1).long()


def _layout(counts: Sequence[int], device) -> tuple[Tensor, Tensor, int]:
    """Image index ``[B]`` and position within its image ``[B]`` of concatenated boxes (built on
    the host from the per-image counts, then copied: no synchronisation)."""
    counts_t = torch.as_tensor(list(counts), dtype=torch.long)
    image = torch.repeat_interleave(torch.arange(len(counts_t)), counts_t)
    starts = torch.cumsum(counts_t, 0) - counts_t
    position = torch.arange(int(counts_t.sum())) - starts[image]
    return _h2d(image, device), _h2d(position, device), int(counts_t.max()) if len(counts_t) else 0


@torch.no_grad()
def paint_boxes_max(extents: Tensor, values: Tensor, counts: Sequence[int],
                    feat_sizes: Sequence[Shape], method: str = 'auto',
                    max_elements: int = MAX_ELEMENTS, dense_limit: int = DENSE_LIMIT) -> list[Tensor]:
    """Paint boxes on every level; each cell keeps the largest value of the boxes covering it.

    Args:
        extents: ``[L, B, 4]`` inclusive cell extents (see :func:`box_cell_extents`), unclipped.
        values: ``[L, B]`` (or ``[B]``, the same on every level) non-negative value of each box.
        counts: number of boxes of each image (``sum(counts) == B``; boxes are concatenated in
            image order). ``len(counts)`` is the batch size N.
        feat_sizes: the ``L`` level sizes.
        method: 'dense', 'scatter' or 'auto'; see the module docstring.
        max_elements: bound on the elements a chunk materialises.
        dense_limit: the CPU threshold of 'auto'.

    Returns:
        ``L`` float tensors ``[N, H_l, W_l]`` (dtype of ``values``), 0 where no box.
    """
    sizes = _sizes(feat_sizes)
    num_images = len(counts)
    device = extents.device
    dtype = values.dtype if values.is_floating_point() else torch.float32
    values = values.to(dtype).reshape(-1, extents.shape[1]).expand(len(sizes), -1)
    if method == 'auto':
        pairs = num_images * max(counts, default=0) * sum(h * w for h, w in sizes)
        method = 'scatter' if device.type == 'cpu' and pairs > dense_limit else 'dense'
    if method not in ('scatter', 'dense'):
        raise ValueError(f"paint_boxes_max: method must be 'scatter', 'dense' or 'auto', got {method!r}")
    if sum(counts) != extents.shape[1]:
        raise ValueError(f'paint_boxes_max: {extents.shape[1]} boxes but counts sum to {sum(counts)}')
    if extents.shape[1] == 0 or num_images == 0:
        return [torch.zeros(num_images, h, w, dtype=dtype, device=device) for h, w in sizes]
    if method == 'scatter':
        return _paint_scatter(extents, values, counts, sizes, max_elements)
    return _paint_dense(extents, values, counts, sizes, max_elements)


def _paint_scatter(extents, values, counts, sizes, max_elements):
    device, dtype = extents.device, values.dtype
    num_images, num_levels, num_boxes = len(counts), len(sizes), extents.shape[1]
    image, _, _ = _layout(counts, device)
    hs = _h2d(torch.tensor([h for h, _ in sizes], dtype=torch.long), device)
    ws = _h2d(torch.tensor([w for _, w in sizes], dtype=torch.long), device)
    numel = [num_images * h * w for h, w in sizes]
    offsets = _h2d(torch.tensor(np.concatenate([[0], np.cumsum(numel)[:-1]]), dtype=torch.long), device)
    # clipped extents and covered-cell counts, [L, B]
    x0 = extents[..., 0].clamp(min=0)
    y0 = extents[..., 1].clamp(min=0)
    x1 = torch.minimum(extents[..., 2], ws[:, None] - 1)
    y1 = torch.minimum(extents[..., 3], hs[:, None] - 1)
    wc = (x1 - x0 + 1).clamp(min=0)
    hc = (y1 - y0 + 1).clamp(min=0)
    cells = (wc * hc).reshape(-1)
    # top-left cell of each (level, box) in the flat all-levels buffer
    base = (offsets[:, None] + image[None, :] * (hs * ws)[:, None] + y0 * ws[:, None] + x0).reshape(-1)
    wc = wc.reshape(-1).clamp(min=1)
    row = ws[:, None].expand(num_levels, num_boxes).reshape(-1)
    vals = values.reshape(-1)
    out = torch.zeros(int(sum(numel)), dtype=dtype, device=device)
    # the single synchronisation: how many cells each (level, box) covers
    host_cells = np.asarray(cells.cpu())
    cum = np.cumsum(host_cells)
    total = int(cum[-1]) if len(cum) else 0
    if total > 0:
        # chunks of consecutive (level, box) entries holding at most max_elements cells (a single
        # entry larger than that is a chunk of its own)
        bounds = [0]
        while bounds[-1] < len(cum):
            done = cum[bounds[-1] - 1] if bounds[-1] > 0 else 0
            nxt = int(np.searchsorted(cum, done + max_elements, side='right'))
            bounds.append(max(nxt, bounds[-1] + 1))
        for start, stop in zip(bounds[:-1], bounds[1:]):
            before = cum[start - 1] if start > 0 else 0
            k = int(cum[stop - 1] - before)
            if k == 0:
                continue
            c = cells[start:stop]
            entry = torch.repeat_interleave(torch.arange(stop - start, device=device), c, output_size=k)
            first = torch.cumsum(c, 0) - c
            local = torch.arange(k, device=device) - first[entry]
            width = wc[start:stop][entry]
            dy = torch.div(local, width, rounding_mode='floor')
            dx = local - dy * width
            index = base[start:stop][entry] + dy * row[start:stop][entry] + dx
            out.scatter_reduce_(0, index, vals[start:stop][entry], reduce='amax', include_self=True)
    masks, start = [], 0
    for (h, w), n in zip(sizes, numel):
        masks.append(out[start:start + n].view(num_images, h, w))
        start += n
    return masks


def _paint_dense(extents, values, counts, sizes, max_elements):
    device, dtype = extents.device, values.dtype
    num_images = len(counts)
    image, position, max_boxes = _layout(counts, device)
    slot = image * max_boxes + position  # place of each box in the [N, M] padded layout
    masks = []
    for level, (h, w) in enumerate(sizes):
        # padded boxes: empty extents (min 1 > max 0) and value 0
        ext = torch.zeros(num_images * max_boxes, 4, dtype=torch.long, device=device)
        ext[:, :2] = 1
        ext = ext.index_copy(0, slot, extents[level]).view(num_images, max_boxes, 4)
        val = torch.zeros(num_images * max_boxes, dtype=dtype, device=device)
        val = val.index_copy(0, slot, values[level]).view(num_images, max_boxes)
        rows = torch.arange(h, device=device)
        cols = torch.arange(w, device=device)
        mask = torch.zeros(num_images, h, w, dtype=dtype, device=device)
        step = max(1, max_elements // max(1, num_images * h * w))
        for m0 in range(0, max_boxes, step):
            e = ext[:, m0:m0 + step]
            in_rows = (rows >= e[..., 1:2]) & (rows <= e[..., 3:4])  # [N, m, H]
            in_cols = (cols >= e[..., 0:1]) & (cols <= e[..., 2:3])  # [N, m, W]
            painted = (in_rows * val[:, m0:m0 + step, None]).unsqueeze(-1) * in_cols.unsqueeze(-2)
            mask = torch.maximum(mask, painted.amax(dim=1))
        masks.append(mask)
    return masks


@torch.no_grad()
def background_mask(fg: Tensor) -> Tensor:
    """1 where ``fg == 0``, normalised to sum 1 over the last two dims; zeros if there is none."""
    bg = (fg == 0).to(fg.dtype)
    total = bg.sum(dim=(-2, -1), keepdim=True)
    return bg / total.clamp(min=1)


def _src_shapes(num_images: int, batch_input_shape, img_shapes, legacy: bool) -> Tensor:
    if legacy:
        if img_shapes is None or len(img_shapes) != num_images:
            raise ValueError('legacy_box_scaling=True needs one img_shape per image')
        return torch.tensor([[float(s[0]), float(s[1])] for s in img_shapes], dtype=torch.float32)
    if batch_input_shape is None:
        raise ValueError('batch_input_shape (H, W) of the padded batch is needed to map boxes to the grid')
    h, w = (float(s) for s in batch_input_shape[-2:])
    return torch.tensor([[h, w]], dtype=torch.float32).repeat(num_images, 1)


@torch.no_grad()
def rasterize_boxes(boxes: Sequence[Tensor], feat_sizes: Sequence[Shape],
                    batch_input_shape: Optional[Shape] = None, img_shapes: Optional[Sequence[Shape]] = None,
                    weight: str = 'area', legacy_box_scaling: bool = False, method: str = 'auto',
                    max_elements: int = MAX_ELEMENTS, device: Optional[torch.device] = None) -> list[Tensor]:
    """Paint every image's boxes on every level (max over overlapping boxes).

    Args:
        boxes: per image, ``[M_i, 4]`` xyxy pixels (M_i may be 0).
        feat_sizes: the level sizes ``(H_l, W_l)``.
        batch_input_shape: ``(H, W)`` of the padded batch: boxes map as ``x * W_l / W``.
        img_shapes: per image ``(H_i, W_i)``; used instead when ``legacy_box_scaling``.
        weight: 'area' (``1 / (h_cells * w_cells)`` of the unclipped extent, FGD) or 'binary' (1).
        legacy_box_scaling: normalise by each image's ``img_shape`` (the official FGD code).
        method, max_elements: see :func:`paint_boxes_max`.
        device: where the masks live (default: the boxes' device).

    Returns:
        ``L`` float32 tensors ``[N, H_l, W_l]``.
    """
    sizes = _sizes(feat_sizes)
    if device is None:
        device = boxes[0].device if len(boxes) else torch.device('cpu')
    boxes = [b.detach().reshape(-1, 4).to(dtype=torch.float32) for b in boxes]
    boxes = [b.to(device) if b.device.type != 'cpu' else _h2d(b, device) for b in boxes]
    counts = [len(b) for b in boxes]
    num_images = len(boxes)
    if sum(counts) == 0:
        return [torch.zeros(num_images, h, w, device=device) for h, w in sizes]
    flat = torch.cat(boxes)
    src = _src_shapes(num_images, batch_input_shape, img_shapes, legacy_box_scaling)
    image, _, _ = _layout(counts, device)
    src_hw = _h2d(src, device)[image]
    # the official code divides by a Python number; on CUDA PyTorch does that as a product with
    # the reciprocal, which the legacy mode reproduces for bit-exact masks on either device
    extents = box_cell_extents(flat, src_hw, sizes,
                               reciprocal_scaling=legacy_box_scaling and torch.device(device).type == 'cuda')
    if weight == 'area':
        # (1 / h_cells) / w_cells of the unclipped extent, float32, the official order of operations
        hc = (extents[..., 3] + 1 - extents[..., 1]).float()
        wc = (extents[..., 2] + 1 - extents[..., 0]).float()
        values = torch.reciprocal(hc) / wc
        # an inverted box paints nothing; keep its value finite and non-negative anyway
        values = torch.where((hc > 0) & (wc > 0), values, torch.zeros_like(values))
    elif weight == 'binary':
        values = torch.ones(extents.shape[:2], device=device)
    else:
        raise ValueError(f"rasterize_boxes: weight must be 'area' or 'binary', got {weight!r}")
    return paint_boxes_max(extents, values, counts, sizes, method=method, max_elements=max_elements)


@torch.no_grad()
def fgd_masks(boxes: Sequence[Tensor], feat_sizes: Sequence[Shape],
              batch_input_shape: Optional[Shape] = None, img_shapes: Optional[Sequence[Shape]] = None,
              legacy_box_scaling: bool = False, method: str = 'auto', max_elements: int = MAX_ELEMENTS,
              device: Optional[torch.device] = None) -> tuple[list[Tensor], list[Tensor]]:
    """FGD's foreground and background masks for every level (Yang et al., CVPR 2022).

    ``fg[n, h, w] = max over boxes j of image n covering (h, w) of 1 / (h_cells_j * w_cells_j)``
    (0 elsewhere; not normalised: it sums to about the number of objects), and
    ``bg[n] = 1[fg[n] == 0] / sum(1[fg[n] == 0])`` (zeros if the image is all foreground).

    With ``legacy_box_scaling=True`` boxes are normalised by each image's ``img_shape`` and
    multiplied by the (padded) level size, as the official code does: the masks then equal the
    official ones bit for bit (for boxes inside the image; the official slicing wraps negative
    indices around, these masks clip them at 0). Otherwise ``batch_input_shape`` is used.

    Returns:
        ``(fg, bg)``: two lists of ``L`` float32 tensors ``[N, H_l, W_l]``.
    """
    fg = rasterize_boxes(boxes, feat_sizes, batch_input_shape, img_shapes, weight='area',
                         legacy_box_scaling=legacy_box_scaling, method=method,
                         max_elements=max_elements, device=device)
    return fg, [background_mask(m) for m in fg]
