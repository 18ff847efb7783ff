"""Time FGD's vectorised box masks against the per-box loop of the official code.

    python tools/benchmark_fgd_masks.py [--device cpu|cuda] [--repeats 7] [--boxes 7 50]

COCO-like shapes: a batch of 2 images (800x1333 and 800x1067, padded to 800x1344), RetinaNet's
P3-P7 (100x168 ... 7x11), 256 channels, random COCO-like boxes. Each variant is timed for the
masks alone and for one forward and backward pass of the whole FGD loss (5 levels, the same
FGDLoss modules and features for every variant; only the masks differ):

- loop: the official code's way: every level's loss builds its own masks with a Python loop over
  images and boxes, slicing with 0-dim tensors (an implicit device-to-host copy per bound on CUDA);
- dense / scatter: kdtoolbox.ops.box_mask.fgd_masks, once per batch for all levels (its default,
  method='auto', is dense for these shapes on every device).

All variants use the official img_shape scaling (legacy_box_scaling=True), so the masks are
checked to be identical before timing. Figures are medians over --repeats runs after 2 warm-ups
(the variants take turns within each repeat), and ratios are against the loop.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kdtoolbox.engine.benchmark import cpu_name  # noqa: E402
from kdtoolbox.ops.box_mask import fgd_masks  # noqa: E402
from kdtoolbox_plugins.detection.fgd import FGDLoss  # noqa: E402

IMG_SHAPES = [(800, 1333), (800, 1067)]
BATCH_SHAPE = (800, 1344)  # padded to a multiple of 32
STRIDES = (8, 16, 32, 64, 128)
VARIANTS = ('loop', 'dense', 'scatter')


def level_sizes():
    sizes, (h, w) = [], BATCH_SHAPE
    for stride in STRIDES:  # conv arithmetic of the FPN (stride-2 convs round up)
        sizes.append((-(-h // stride), -(-w // stride)))
    return sizes


def coco_like_boxes(num, seed, device):
    """sqrt(area) log-uniform in [8, 640] px, aspect ratio log-uniform in [1/3, 3], clipped."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for h, w in IMG_SHAPES:
        scale = torch.exp(torch.empty(num).uniform_(torch.log(torch.tensor(8.)).item(),
                                                    torch.log(torch.tensor(640.)).item(), generator=g))
        ratio = torch.exp(torch.empty(num).uniform_(-1.0986, 1.0986, generator=g))
        bw, bh = scale * ratio.sqrt(), scale / ratio.sqrt()
        cx, cy = torch.rand(num, generator=g) * w, torch.rand(num, generator=g) * h
        b = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        b = torch.maximum(b, torch.zeros(4))
        b = torch.minimum(b, torch.tensor([w, h, w, h], dtype=torch.float32))
        boxes.append(b.to(device))
    return boxes


def loop_masks_one_level(boxes, h_l, w_l, device):
    """The official per-level mask loop (yzd-v/FGD mmdet/distillation/losses/fgd.py), restated."""
    n = len(boxes)
    fg = torch.zeros(n, h_l, w_l, device=device)
    bg = torch.ones(n, h_l, w_l, device=device)
    for i in range(n):
        img_h, img_w = IMG_SHAPES[i]
        scaled = torch.ones_like(boxes[i])
        scaled[:, 0] = boxes[i][:, 0] / img_w * w_l
        scaled[:, 2] = boxes[i][:, 2] / img_w * w_l
        scaled[:, 1] = boxes[i][:, 1] / img_h * h_l
        scaled[:, 3] = boxes[i][:, 3] / img_h * h_l
        wmin, wmax = torch.floor(scaled[:, 0]).int(), torch.ceil(scaled[:, 2]).int()
        hmin, hmax = torch.floor(scaled[:, 1]).int(), torch.ceil(scaled[:, 3]).int()
        area = 1.0 / (hmax.view(1, -1) + 1 - hmin.view(1, -1)) / (wmax.view(1, -1) + 1 - wmin.view(1, -1))
        for j in range(len(boxes[i])):
            fg[i][hmin[j]:hmax[j] + 1, wmin[j]:wmax[j] + 1] = torch.maximum(
                fg[i][hmin[j]:hmax[j] + 1, wmin[j]:wmax[j] + 1], area[0][j])
        bg[i] = torch.where(fg[i] > 0, 0, 1)
        if torch.sum(bg[i]):
            bg[i] /= torch.sum(bg[i])
    return fg, bg


def masks_for(variant, boxes, sizes, device):
    if variant == 'loop':
        per_level = [loop_masks_one_level(boxes, h, w, device) for h, w in sizes]
        return [m[0] for m in per_level], [m[1] for m in per_level]
    return fgd_masks(boxes, sizes, img_shapes=IMG_SHAPES, legacy_box_scaling=True, method=variant, device=device)


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed(fns, device, repeats, warmup=2):
    """Median milliseconds of each function; the functions take turns in every repeat, so that a
    change in the machine's load affects them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts) * 1e3, min(ts) * 1e3) for name, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu' (default) or 'cuda'")
    parser.add_argument('--repeats', type=int, default=7, help='repeats of the whole loss (forward + backward)')
    parser.add_argument('--mask-repeats', type=int, default=51, help='repeats of the masks alone')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s; 1 is steadier on a shared machine)')
    parser.add_argument('--boxes', type=int, nargs='+', default=[7, 50], help='boxes per image')
    parser.add_argument('--channels', type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: CUDA is not available')
    sizes = level_sizes()
    torch.manual_seed(0)
    losses = [FGDLoss(args.channels, args.channels).to(device) for _ in sizes]
    student = [torch.randn(2, args.channels, h, w, device=device, requires_grad=True) for h, w in sizes]
    teacher = [torch.randn(2, args.channels, h, w, device=device) for h, w in sizes]
    params = [p for m in losses for p in m.parameters()]

    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'
    print(f'FGD mask benchmark | device: {device} ({name}) | torch {torch.__version__}')
    print(f'batch 2 (img_shape {IMG_SHAPES[0]}, {IMG_SHAPES[1]}; batch {BATCH_SHAPE}), levels P3-P7 {sizes}, '
          f'C={args.channels}; median (min) of {args.mask_repeats} runs for the masks, {args.repeats} for the '
          f'loss, after 2 warm-ups')
    header = (f'{"boxes/img":>9} | {"variant":<8} | {"masks, ms":>16} | {"vs loop":>7} | '
              f'{"FGD loss fwd+bwd, ms":>22} | {"vs loop":>7}')
    print(header)
    print('-' * len(header))
    for num in args.boxes:
        boxes = coco_like_boxes(num, seed=num, device=device)
        reference = masks_for('loop', boxes, sizes, device)
        mask_fns, loss_fns = {}, {}
        for variant in VARIANTS:
            fg, bg = masks_for(variant, boxes, sizes, device)
            assert all(torch.equal(a, b) for a, b in zip(fg + bg, reference[0] + reference[1])), variant

            def masks_only(variant=variant):
                masks_for(variant, boxes, sizes, device)

            def loss_step(variant=variant):
                for t in student + params:
                    t.grad = None
                if variant == 'loop':  # the official way: each level's loss builds its masks
                    total = 0
                    for level, (h, w) in enumerate(sizes):
                        fg_l, bg_l = loop_masks_one_level(boxes, h, w, device)
                        total = total + sum(losses[level](student[level], teacher[level], fg_l, bg_l).values())
                else:  # once per batch for all levels
                    fg, bg = masks_for(variant, boxes, sizes, device)
                    total = sum(sum(losses[level](student[level], teacher[level], fg[level], bg[level]).values())
                                for level in range(len(sizes)))
                total.backward()

            mask_fns[variant], loss_fns[variant] = masks_only, loss_step
        mask_ms = timed(mask_fns, device, args.mask_repeats)
        loss_ms = timed(loss_fns, device, args.repeats)
        results = {v: (mask_ms[v], loss_ms[v]) for v in VARIANTS}
        base_mask, base_loss = results['loop'][0][0], results['loop'][1][0]
        for variant, ((mask_med, mask_min), (loss_med, loss_min)) in results.items():
            print(f'{num:>9} | {variant:<8} | {mask_med:>7.2f} ({mask_min:>6.2f}) | {base_mask / mask_med:>6.2f}x | '
                  f'{loss_med:>11.1f} ({loss_min:>7.1f}) | {base_loss / loss_med:>6.2f}x')
    print('masks: identical in every variant (asserted); "vs loop" = median loop time / median variant time '
          '(>1: faster)')


if __name__ == '__main__':
    main()
