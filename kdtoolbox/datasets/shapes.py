"""A small generated detection dataset in COCO format: the default data, no download needed.

:func:`make_shapes_dataset` draws filled circles, squares and triangles in random saturated
colours on a grey, textured background and writes::

    root/train/000000.png ...      root/annotations/train.json
    root/val/000000.png ...        root/annotations/val.json
    root/VERSION                   (the generator's arguments: a marker)

Everything is a deterministic function of the arguments: every image has its own random stream,
seeded from ``(seed, split, index)`` through :class:`numpy.random.SeedSequence` and drawn with the
legacy :class:`numpy.random.RandomState` (both are stable across numpy versions), and the shapes
are rasterised with numpy (pixel centres inside the shape), so the same arguments give the same
bytes. Growing ``num_train``/``num_val`` keeps the existing images unchanged (image ``i`` of a split
does not depend on how many follow it).

Boxes are the tight boxes of each shape's *visible* pixels (COCO's convention: a later shape may
hide part of an earlier one; placements that would hide more than 40 % of an earlier shape are
rejected). The background has low colour saturation (max - min channel <= 12) and the shapes high
saturation (>= 60), so a test can find the shape pixels without knowing the background.

A harder variant (the benchmark data of ``tools/demo.py``) comes from the optional arguments
(:data:`VARIANT_DEFAULTS`): ``min_size``/``max_size`` (shape extent as a fraction of the side),
``min_visible`` (how much of an earlier shape must stay visible), ``clutter`` (up to that many
unlabelled distractors per image: elongated ellipses and rectangles, which look like circles and
squares at a glance, drawn under the labelled shapes), ``shape_noise`` (amplitude of the per-pixel
colour noise on shapes) and ``min_saturation`` (lower: shapes closer to the grey background). At
their defaults the generator draws exactly the same random numbers as before they existed (same
bytes), and the marker lists only the arguments that differ from their defaults, so datasets
written before keep matching.

Generation happens in a temporary sibling folder that is renamed into place when complete, under a
file lock, so a crash never leaves a half dataset that looks complete and concurrent processes
(e.g. distributed ranks) generate it once. A dataset whose marker does not match the requested
arguments is regenerated; a non-empty ``root`` with no marker is never deleted (error instead).

:class:`ShapesDataset` is mmdet's ``CocoDataset`` with the three classes that generates the data
on first use; configs name it ``type='kdtoolbox.ShapesDataset'`` (see
``configs/demo/_base_/shapes_detection.py``).
"""
from __future__ import annotations

import colorsys
import json
import os
import os.path as osp
from typing import Optional

import cv2
import numpy as np
from mmdet.datasets import CocoDataset

from ..registry import DATASETS
from .generated import MARKER, generate_once, is_current

__all__ = ['CLASSES', 'PALETTE', 'FORMAT_VERSION', 'VARIANT_DEFAULTS', 'make_shapes_dataset', 'shapes_dataset_is_current',
           'shapes_marker', 'ShapesDataset']

CLASSES = ('circle', 'square', 'triangle')
PALETTE = [(220, 20, 60), (0, 130, 230), (20, 170, 60)]
# Bump when the drawing changes, so datasets written by an older generator are regenerated.
FORMAT_VERSION = 1
GENERATOR = 'kdtoolbox.datasets.shapes'
SPLITS = ('train', 'val')
_SPLIT_CODE = {'train': 0, 'val': 1}

_MIN_SIZE, _MAX_SIZE = 0.12, 0.40  # shape extent, as a fraction of the image side
_MIN_VISIBLE = 0.6  # an earlier shape keeps at least this fraction of its pixels visible
_PLACEMENT_TRIES = 30
# The optional generator arguments and their defaults (the original drawing).
VARIANT_DEFAULTS = dict(min_size=_MIN_SIZE, max_size=_MAX_SIZE, min_visible=_MIN_VISIBLE, clutter=0,
                        shape_noise=8, min_saturation=0.6)
_CLUTTER_ASPECT = (1.7, 3.0)  # distractors' long/short side: never a circle or a square


# ----------------------------------------------------------------------------------- drawing
def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small 2-D grid to ``size x size`` (numpy only: deterministic)."""
    g0, g1 = grid.shape
    ys, xs = np.linspace(0, g0 - 1, size), np.linspace(0, g1 - 1, size)
    rows = np.stack([np.interp(xs, np.arange(g1), grid[i]) for i in range(g0)])  # (g0, size)
    return np.stack([np.interp(ys, np.arange(g0), rows[:, j]) for j in range(size)], axis=1)


def _background(rng: np.random.RandomState, size: int) -> np.ndarray:
    """Grey texture: smooth blobs + a gradient + finer noise, with a little chroma noise (BGR uint8)."""
    base = rng.uniform(70, 185)
    blobs = _upsample(rng.uniform(-1, 1, (6, 6)), size) * rng.uniform(15, 40)
    fine = _upsample(rng.uniform(-1, 1, (max(2, size // 8),) * 2), size) * rng.uniform(5, 15)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0, 50)
    grain = rng.normal(0, 5, (size, size))
    grey = base + blobs + fine + gradient + grain
    img = grey[..., None] + rng.randint(-6, 7, (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _colour(rng: np.random.RandomState, min_saturation: float = 0.6) -> np.ndarray:
    """A saturated colour (HSV saturation >= ``min_saturation``, value >= 0.55), BGR."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(min_saturation, 1.0), rng.uniform(0.55, 1.0))
    return np.array([b, g, r]) * 255


def _shape_mask(rng: np.random.RandomState, kind: str, size: int, min_size: float = _MIN_SIZE,
                max_size: float = _MAX_SIZE) -> np.ndarray:
    """A random ``kind`` shape fully inside a ``size x size`` image, as a boolean mask; its extent
    is ``uniform(min_size, max_size) * size``."""
    extent = rng.uniform(min_size, max_size) * size
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    if kind == 'circle':
        r = extent / 2
        cx, cy = rng.uniform(r, size - r, 2)
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == 'square':
        side = extent
        x0, y0 = rng.uniform(0, size - side, 2)
        return (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
    if kind == 'triangle':
        # A random (roughly equilateral) triangle of the given extent, rotated at random.
        theta = rng.uniform(0, 2 * np.pi)
        angles = theta + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.25, 0.25, 3)
        radius = extent / np.sqrt(3) * rng.uniform(0.95, 1.15)
        px, py = radius * np.cos(angles), radius * np.sin(angles)
        cx = rng.uniform(-px.min(), size - px.max())
        cy = rng.uniform(-py.min(), size - py.max())
        px, py = px + cx, py + cy
        inside = np.ones((size, size), bool)
        orientation = np.sign((px[1] - px[0]) * (py[2] - py[0]) - (py[1] - py[0]) * (px[2] - px[0]))
        for i in range(3):
            j = (i + 1) % 3
            edge = (px[j] - px[i]) * (yy - py[i]) - (py[j] - py[i]) * (xx - px[i])
            inside &= edge * orientation >= 0
        return inside
    raise ValueError(kind)


def _distractor_mask(rng: np.random.RandomState, size: int, min_size: float, max_size: float) -> np.ndarray:
    """An unlabelled clutter shape: an axis-aligned ellipse or rectangle whose sides differ by a
    factor of 1.7-3 (so it is neither a circle nor a square), fully inside the image."""
    long_side = rng.uniform(min_size, max_size) * size
    short_side = long_side / rng.uniform(*_CLUTTER_ASPECT)
    w, h = (long_side, short_side) if rng.randint(2) else (short_side, long_side)
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if rng.randint(2):
        return ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
    return (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)


def _draw_clutter(rng: np.random.RandomState, img: np.ndarray, count: int, min_size: float, max_size: float,
                  noise: int, min_saturation: float) -> None:
    """Paint up to ``count`` distractors onto ``img`` (in place), under the shapes drawn later."""
    size = img.shape[0]
    for _ in range(rng.randint(0, count + 1)):
        mask = _distractor_mask(rng, size, min_size, max_size)
        colour = _colour(rng, min_saturation)
        grain = rng.randint(-noise, noise + 1, (int(mask.sum()), 3))
        img[mask] = np.clip(np.rint(colour + grain), 0, 255).astype(np.uint8)


def _render_image(rng: np.random.RandomState, size: int, max_shapes: int,
                  variant: Optional[dict] = None) -> tuple[np.ndarray, list[dict]]:
    """One image (BGR uint8) and its objects: ``{'category_id', 'bbox' (xywh), 'area'}``.

    ``variant``: the optional generator arguments (:data:`VARIANT_DEFAULTS` for missing keys).
    """
    v = {**VARIANT_DEFAULTS, **(variant or {})}
    img = _background(rng, size)
    if v['clutter']:  # only then: the default drawing consumes the same random numbers as ever
        _draw_clutter(rng, img, int(v['clutter']), v['min_size'], v['max_size'], int(v['shape_noise']),
                      v['min_saturation'])
    noise = int(v['shape_noise'])
    grain = rng.randint(-noise, noise + 1, (size, size, 3))
    owner = np.full((size, size), -1, np.int32)  # index of the shape that owns each pixel
    kinds: list[int] = []
    areas: list[int] = []
    colours: list[np.ndarray] = []
    for _ in range(rng.randint(1, max_shapes + 1)):
        for _try in range(_PLACEMENT_TRIES):
            label = rng.randint(len(CLASSES))
            mask = _shape_mask(rng, CLASSES[label], size, v['min_size'], v['max_size'])
            colour = _colour(rng, v['min_saturation'])
            if mask.sum() < 16:
                continue
            candidate = owner.copy()
            candidate[mask] = len(kinds)
            if all((candidate == k).sum() >= v['min_visible'] * areas[k] for k in range(len(kinds))):
                owner = candidate
                kinds.append(label)
                areas.append(int(mask.sum()))
                colours.append(colour)
                break
    objects = []
    for k, label in enumerate(kinds):
        visible = owner == k
        pixels = np.clip(np.rint(colours[k] + grain[visible]), 0, 255).astype(np.uint8)
        img[visible] = pixels
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append({'category_id': label + 1, 'bbox': [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        'area': float(visible.sum())})
    return img, objects


def _image_rng(seed: int, split: str, index: int) -> np.random.RandomState:
    state = np.random.SeedSequence([seed, _SPLIT_CODE[split], index]).generate_state(4)
    return np.random.RandomState(state)


# ------------------------------------------------------------------------------- the dataset
def _check_variant(variant: dict) -> dict:
    """``variant`` with its values typed, its keys and ranges checked (a clear error names the key)."""
    unknown = sorted(set(variant) - set(VARIANT_DEFAULTS))
    if unknown:
        raise TypeError(f'unknown shapes generator argument(s) {unknown}; known: {sorted(VARIANT_DEFAULTS)}')
    v = {k: (int(val) if isinstance(VARIANT_DEFAULTS[k], int) else float(val)) for k, val in variant.items()}
    full = {**VARIANT_DEFAULTS, **v}
    if not 0 < full['min_size'] <= full['max_size'] <= 0.9:
        raise ValueError(f'need 0 < min_size <= max_size <= 0.9, got min_size={full["min_size"]}, '
                         f'max_size={full["max_size"]}')
    if not 0 <= full['min_visible'] <= 1:
        raise ValueError(f'min_visible must be in [0, 1], got {full["min_visible"]}')
    if full['clutter'] < 0 or full['shape_noise'] < 0:
        raise ValueError(f'clutter and shape_noise must be >= 0, got {full["clutter"]}, {full["shape_noise"]}')
    if not 0 <= full['min_saturation'] <= 1:
        raise ValueError(f'min_saturation must be in [0, 1], got {full["min_saturation"]}')
    return v


def shapes_marker(num_train: int = 64, num_val: int = 16, img_size: int = 256, seed: int = 0,
                  max_shapes: int = 4, **variant) -> dict:
    """What ``root/VERSION`` holds for these arguments (optional ones only where not default)."""
    args = {'num_train': int(num_train), 'num_val': int(num_val), 'img_size': int(img_size),
            'seed': int(seed), 'max_shapes': int(max_shapes)}
    args.update({k: val for k, val in _check_variant(variant).items() if val != VARIANT_DEFAULTS[k]})
    return {'generator': GENERATOR, 'format_version': FORMAT_VERSION, 'args': args}


def _paths(root: str) -> dict[str, str]:
    return {'root': root,
            'train_img_dir': osp.join(root, 'train'),
            'val_img_dir': osp.join(root, 'val'),
            'train_ann': osp.join(root, 'annotations', 'train.json'),
            'val_ann': osp.join(root, 'annotations', 'val.json'),
            'marker': osp.join(root, MARKER)}


def _splits_complete(root: str, num_train: int, num_val: int) -> bool:
    paths = _paths(root)
    for split, count in (('train', num_train), ('val', num_val)):
        if not osp.isfile(paths[f'{split}_ann']) or not osp.isdir(paths[f'{split}_img_dir']):
            return False
        if sum(n.endswith('.png') for n in os.listdir(paths[f'{split}_img_dir'])) != count:
            return False
    return True


def shapes_dataset_is_current(root: str, **args) -> bool:
    """True if ``root`` holds a complete dataset generated with exactly these arguments."""
    marker = shapes_marker(**args)
    a = marker['args']
    return is_current(osp.abspath(root), marker, lambda r: _splits_complete(r, a['num_train'], a['num_val']))


def _write_split(folder: str, split: str, num: int, img_size: int, seed: int, max_shapes: int,
                 variant: Optional[dict] = None) -> None:
    os.makedirs(osp.join(folder, split))
    images, annotations = [], []
    for index in range(num):
        img, objects = _render_image(_image_rng(seed, split, index), img_size, max_shapes, variant)
        file_name = f'{index:06d}.png'
        if not cv2.imwrite(osp.join(folder, split, file_name), img, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f'could not write {osp.join(folder, split, file_name)}')
        image_id = index + 1  # COCO ids start at 1 (pycocotools treats id 0 as "no match")
        images.append({'id': image_id, 'file_name': file_name, 'width': img_size, 'height': img_size})
        for obj in objects:
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'iscrowd': 0, **obj})
    coco = {'info': {'description': f'kdtoolbox generated shapes dataset ({split})',
                     'version': str(FORMAT_VERSION)},
            'licenses': [],
            'images': images,
            'annotations': annotations,
            'categories': [{'id': i + 1, 'name': name, 'supercategory': 'shape'}
                           for i, name in enumerate(CLASSES)]}
    os.makedirs(osp.join(folder, 'annotations'), exist_ok=True)
    with open(osp.join(folder, 'annotations', f'{split}.json'), 'w') as f:
        json.dump(coco, f, sort_keys=True, separators=(',', ':'))


def make_shapes_dataset(root: str, num_train: int = 64, num_val: int = 16, img_size: int = 256,
                        seed: int = 0, max_shapes: int = 4, force: bool = False, **variant) -> dict[str, str]:
    """Write the shapes dataset under ``root`` unless it is already there with the same arguments.

    Returns the paths: ``root``, ``train_img_dir``, ``val_img_dir``, ``train_ann``, ``val_ann``,
    ``marker``. ``force`` regenerates even when the existing dataset is current. ``variant``: the
    optional arguments of :data:`VARIANT_DEFAULTS` (the harder variant; see the module docstring).
    """
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0')
    if img_size < 16:
        raise ValueError(f'img_size must be >= 16, got {img_size}')
    if max_shapes < 1:
        raise ValueError(f'max_shapes must be >= 1, got {max_shapes}')
    marker = shapes_marker(num_train, num_val, img_size, seed, max_shapes, **variant)
    variant = {**VARIANT_DEFAULTS, **_check_variant(variant)}
    root = osp.abspath(root)

    def write(folder: str) -> None:
        for split, num in (('train', num_train), ('val', num_val)):
            _write_split(folder, split, num, img_size, seed, max_shapes, variant)

    generate_once(root, marker, lambda r: _splits_complete(r, num_train, num_val), write,
                  'shapes dataset', force=force)
    return _paths(root)


def _root_from_ann_file(ann_file: str) -> Optional[str]:
    """``<root>/annotations/x.json`` -> ``<root>``."""
    folder = osp.dirname(ann_file)
    if osp.basename(osp.normpath(folder)) == 'annotations':
        return osp.dirname(osp.normpath(folder)) or '.'
    return None


@DATASETS.register_module()
class ShapesDataset(CocoDataset):
    """mmdet's ``CocoDataset`` over :func:`make_shapes_dataset`'s output, generated on first use.

    Args:
        generate: call :func:`make_shapes_dataset` before loading (a no-op when the data under the
            root is current; it regenerates when missing or generated with other arguments).
        num_train, num_val, img_size, seed, max_shapes: the generator's arguments. Give the train
            and val datasets of one config the same values (they share the root).
        shapes_variant: the optional generator arguments (:data:`VARIANT_DEFAULTS`), e.g.
            ``dict(max_size=0.25, clutter=4)``; None for the default drawing.
        shapes_root: where to generate; default ``data_root``, else the folder above the
            ``annotations/`` folder of ``ann_file``.
        *args, **kwargs: ``CocoDataset``'s (``data_root``, ``ann_file``, ``data_prefix``, ...).
    """

    METAINFO = {'classes': CLASSES, 'palette': PALETTE}

    def __init__(self, *args, generate: bool = True, num_train: int = 64, num_val: int = 16,
                 img_size: int = 256, seed: int = 0, max_shapes: int = 4,
                 shapes_variant: Optional[dict] = None, shapes_root: Optional[str] = None, **kwargs) -> None:
        self.shapes_args = dict(num_train=num_train, num_val=num_val, img_size=img_size, seed=seed,
                                max_shapes=max_shapes, **(shapes_variant or {}))
        if generate:
            root = shapes_root or kwargs.get('data_root')
            if not root:
                ann_file = kwargs.get('ann_file', args[0] if args else '')
                root = _root_from_ann_file(ann_file) if ann_file else None
            if not root:
                raise ValueError('ShapesDataset(generate=True) needs data_root or shapes_root (or an '
                                 'ann_file under <root>/annotations/) to know where to generate')
            make_shapes_dataset(root, **self.shapes_args)
        super().__init__(*args, **kwargs)
