"""Pictures of what a distiller looks at: ``tools/visualize.py`` and ``kdtoolbox visualize``.

For a distillation config and one input, the model is built (the teacher from its checkpoint, the
student and the distiller from ``--checkpoint`` if given), the input goes through the config's
test pipeline (with its GT boxes: ``--ann COCO_JSON``, or the config's own train / val / test
annotation file that lists the image), one preprocess + teacher + student pass records the features, and the
distiller's :meth:`~kdtoolbox.engine.BaseDistiller.visual_maps` gives the maps (see its convention).
Inputs that are not one image (point clouds, point clouds + multi-view cameras) are item ``index`` of
a data set of the config (:func:`load_dataset_sample`: the train data set through its own pipeline,
seeded, or the val / test data set through its test pipeline with the GT boxes loaded); their maps
are all drawn alone. BEV distillers give metric points through :func:`metric_to_points` and cell
indices through :func:`flat_index_points`.
For each map NAME two PNGs are written to the output folder:

- ``NAME.png``: for people. Image-aligned maps (FPN grids) are upsampled with nearest to the padded
  batch input, cropped to the resized image and drawn over it (jet colour map, half opacity);
  other maps (BEV grids) are drawn alone as a jet heatmap (scaled up by an integer factor to at
  least 256 pixels), with the points of ``NAME.points`` as white dots;
- ``NAME.map.png``: for programs: the same grid in grey levels, ``255 * (v - min) / (max - min)``
  (a constant map: 255 if positive, else 0), ``min``/``max`` in the index.

plus ``image.png`` (the resized input, image inputs only), ``index.json`` (one entry per map: files,
kind, grid shape, value range, point count) and ``index.html`` (all pictures on one page).
"""
from __future__ import annotations

import copy
import html
import json
import math
import os
import os.path as osp
import re
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

POINTS_SUFFIX = '.points'


# --- inputs ----------------------------------------------------------------------------------------
def coco_instances(ann_file: str, image_path: str, image_dir: Optional[str] = None) -> Optional[list[dict]]:
    """mmdet ``instances`` (xyxy ``bbox``, ``bbox_label``, ``ignore_flag``) of one image of a COCO
    file; None when the file does not list it. With ``image_dir`` (the data set's image folder) the
    image is the one whose ``image_dir/file_name`` is ``image_path``; without, the one whose
    ``file_name`` has the same base name."""
    with open(ann_file) as f:
        coco = json.load(f)
    if image_dir is not None:
        target = osp.realpath(image_path)
        images = [im for im in coco.get('images', [])
                  if osp.realpath(osp.join(image_dir, im['file_name'])) == target]
    else:
        images = [im for im in coco.get('images', []) if osp.basename(im['file_name']) == osp.basename(image_path)]
    if not images:
        return None
    image_id = images[0]['id']
    labels = {c['id']: i for i, c in enumerate(sorted(coco.get('categories', []), key=lambda c: c['id']))}
    instances = []
    for ann in coco.get('annotations', []):
        if ann['image_id'] != image_id:
            continue
        x, y, w, h = ann['bbox']
        instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=labels.get(ann['category_id'], 0),
                              ignore_flag=int(ann.get('iscrowd', 0))))
    return instances


def config_ann_files(cfg) -> list[tuple[str, str]]:
    """``(annotation file, image folder)`` of the config's train, val and test data sets
    (``data_root`` joined to ``ann_file`` and to ``data_prefix.img``)."""
    found = []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset') or {}
        while 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset, ...
            dataset = dataset['dataset']
        ann = dataset.get('ann_file')
        if not ann:
            continue
        root = dataset.get('data_root') or ''
        prefix = (dataset.get('data_prefix') or {}).get('img', '')
        entry = (ann if osp.isabs(ann) else osp.join(root, ann), osp.join(root, prefix))
        if entry not in found:
            found.append(entry)
    return found


def pipeline_with_boxes(cfg) -> list:
    """The config's test pipeline with the box loading moved right after the image loading, so that
    the boxes are resized with the image (test pipelines load them after ``Resize``, in original
    coordinates, for evaluation); ``LoadAnnotations(with_bbox=True)`` is added if there is none."""
    for key in ('test_dataloader', 'val_dataloader'):
        pipeline = ((cfg.get(key) or {}).get('dataset') or {}).get('pipeline')
        if pipeline:
            break
    else:
        pipeline = cfg.get('test_pipeline')
    if not pipeline:
        raise KeyError('visualize: the config has no test_dataloader.dataset.pipeline (nor val_dataloader / '
                       'test_pipeline) to load the image with')
    pipeline = [copy.deepcopy(dict(t)) for t in pipeline]
    loads = [t for t in pipeline if str(t.get('type', '')).endswith('LoadAnnotations')]
    pipeline = [t for t in pipeline if t not in loads]
    first = next((i for i, t in enumerate(pipeline) if 'LoadImage' in str(t.get('type', ''))), 0)
    pipeline.insert(first + 1, loads[0] if loads else dict(type='LoadAnnotations', with_bbox=True))
    return pipeline


def load_image_sample(cfg, image_path: str, ann_file: Optional[str] = None) -> tuple[dict, int]:
    """The test pipeline's packed sample of one image with its GT boxes; also how many boxes."""
    from mmengine.dataset import Compose
    if not osp.isfile(image_path):
        raise FileNotFoundError(f'visualize: no image at {image_path!r}')
    instances = None
    if ann_file is not None:
        if not osp.isfile(ann_file):
            raise FileNotFoundError(f'visualize: --ann {ann_file!r} does not exist')
        instances = coco_instances(ann_file, image_path)
        if instances is None:
            raise KeyError(f'visualize: --ann {ann_file!r} lists no image named {osp.basename(image_path)!r}')
    else:
        for default, image_dir in config_ann_files(cfg):
            if default.endswith('.json') and osp.isfile(default):
                instances = coco_instances(default, image_path, image_dir)
                if instances is not None:
                    break
    instances = instances or []
    results = dict(img_path=image_path, img_id=0, instances=instances)
    return Compose(pipeline_with_boxes(cfg))(results), len(instances)


#: dataset splits ``--index`` can read, and the config key of each
SPLITS = dict(train='train_dataloader', val='val_dataloader', test='test_dataloader')
#: transform types that mark a 3D (point cloud / multi-view) pipeline
_3D_MARKERS = ('LoadPointsFromFile', 'LoadMultiViewImageFromFiles', 'Pack3DDetInputs')


def _type_name(transform) -> str:
    return str(transform.get('type', '')).split('.')[-1]


def is_3d_pipeline(pipeline: Sequence) -> bool:
    """Whether a pipeline loads point clouds or multi-view images (mmdet3d) rather than one image."""
    return any(_type_name(t) in _3D_MARKERS for t in pipeline)


def pipeline_with_boxes_3d(pipeline: Sequence) -> list:
    """A 3D test pipeline that also loads and packs the GT boxes: ``LoadAnnotations3D`` (3D boxes and
    labels) right after the first loading transform, ``ObjectRangeFilter`` after a
    ``PointsRangeFilter`` (with its range, as the train pipelines do), and ``gt_bboxes_3d`` /
    ``gt_labels_3d`` added to ``Pack3DDetInputs``' keys. Transforms already there are kept."""
    pipeline = [copy.deepcopy(dict(t)) for t in pipeline]
    names = [_type_name(t) for t in pipeline]
    if 'LoadAnnotations3D' not in names:
        first = next((i for i, n in enumerate(names) if n.startswith('Load')), -1)
        pipeline.insert(first + 1, dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True))
    names = [_type_name(t) for t in pipeline]
    if 'ObjectRangeFilter' not in names and 'PointsRangeFilter' in names:
        i = names.index('PointsRangeFilter')
        pipeline.insert(i + 1, dict(type='ObjectRangeFilter',
                                    point_cloud_range=list(pipeline[i]['point_cloud_range'])))
    for t in pipeline:
        if _type_name(t) == 'Pack3DDetInputs':
            t['keys'] = list(t.get('keys', [])) + [k for k in ('gt_bboxes_3d', 'gt_labels_3d')
                                                   if k not in t.get('keys', [])]
    return pipeline


def _dataset_cfg(cfg, split: str) -> dict:
    if split not in SPLITS:
        raise ValueError(f'visualize: split must be one of {sorted(SPLITS)}, got {split!r}')
    dataset = copy.deepcopy((cfg.get(SPLITS[split]) or {}).get('dataset'))
    if not dataset:
        raise KeyError(f'visualize: the config has no {SPLITS[split]}.dataset to take item --index from')
    return dataset


def load_dataset_sample(cfg, index: int, split: str = 'train', seed: int = 0) -> dict:
    """Item ``index`` of the config's ``split`` data set (for inputs that are not single images:
    point clouds, multi-view cameras), with its GT boxes.

    - ``'train'``: the train data set through its own pipeline, augmentations included (what the
      distiller sees in training), the random generators seeded with ``seed`` so that a run is
      repeatable. An item whose boxes the pipeline filters out entirely is an error (a data set in
      training mode would silently give a random other item).
    - ``'val'`` / ``'test'``: that data set through its test pipeline, with the GT boxes loaded (2D:
      :func:`pipeline_with_boxes`; 3D: :func:`pipeline_with_boxes_3d`, the annotations parsed as in
      training mode, ``with_velocity`` as in the train data set so that the boxes have the values the
      heads train on). No augmentation: the same sample every run.
    """
    from mmengine.registry import DATASETS, init_default_scope
    from mmengine.runner import set_random_seed
    init_default_scope(cfg.get('default_scope', 'mmdet'))  # the pipeline's transforms live in that scope
    dataset_cfg = _dataset_cfg(cfg, split)
    if split != 'train':
        pipeline = dataset_cfg.get('pipeline') or []
        if is_3d_pipeline(pipeline):
            dataset_cfg['pipeline'] = pipeline_with_boxes_3d(pipeline)
            # the boxes in the format the heads train on: mmdet3d data sets (NuScenesDataset, ...) drop the
            # velocity for evaluation (with_velocity=False), which a CenterHead with a vel branch cannot take
            train = (cfg.get('train_dataloader') or {}).get('dataset') or {}
            while 'dataset' in train:
                train = train['dataset']
            if 'with_velocity' in train:
                dataset_cfg['with_velocity'] = train['with_velocity']
            else:  # the train data set uses the class default
                dataset_cfg.pop('with_velocity', None)
        else:
            dataset_cfg['pipeline'] = pipeline_with_boxes(dict(test_dataloader=dict(dataset=dataset_cfg)))
    dataset = DATASETS.build(dataset_cfg)
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    if not 0 <= index < len(dataset):
        raise IndexError(f'visualize: --index {index} is outside the {split} data set (0..{len(dataset) - 1})')
    set_random_seed(seed)
    if split != 'train' and is_3d_pipeline(dataset_cfg['pipeline']):
        # test-mode mmdet3d data sets keep the annotations as eval_ann_info; LoadAnnotations3D reads ann_info
        info = copy.deepcopy(dataset.get_data_info(index))
        if 'ann_info' not in info:
            info['ann_info'] = info.get('eval_ann_info') or dataset.parse_ann_info(info)
        info['box_type_3d'], info['box_mode_3d'] = dataset.box_type_3d, dataset.box_mode_3d
        sample = dataset.pipeline(info)
    elif hasattr(dataset, 'prepare_data'):
        sample = dataset.prepare_data(index)
    else:  # a data set wrapper (RepeatDataset, CBGSDataset, ...)
        sample = dataset[index]
    if sample is None:
        raise ValueError(f'visualize: item {index} of the {split} data set has no GT box left after its pipeline '
                         f'(filtered out); choose another --index')
    return sample


def metric_to_points(xy: torch.Tensor, grid, batch_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Metric BEV points ``xy [P, 2]`` (metres) as ``NAME.points`` of a map on ``grid`` (a
    :class:`kdtoolbox.ops.bev.BEVGrid`): ``[P, 2]`` ``(x, y)`` in cell units with integers at the
    cell centres (``col - 0.5``, ``row - 0.5`` of :func:`~kdtoolbox.ops.bev.metric_to_grid`), or
    ``[P, 3]`` with ``batch_index [P]`` first."""
    from .ops.bev import metric_to_grid
    col, row = metric_to_grid(xy.float(), grid)
    points = torch.stack([col - 0.5, row - 0.5], dim=-1)
    if batch_index is not None:
        points = torch.cat([batch_index.to(points)[:, None], points], dim=1)
    return points


def flat_index_points(index: torch.Tensor, width: int, keep: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Flat cell indices ``row * width + col`` ``[B, K]`` (kept where ``keep [B, K]``) as
    ``NAME.points`` ``[P, 3]`` rows ``(batch, col, row)``."""
    b, k = index.shape
    batch = torch.arange(b, device=index.device)[:, None].expand(b, k)
    if keep is None:
        keep = torch.ones_like(index, dtype=torch.bool)
    keep = keep.bool()
    index, batch = index[keep].long(), batch[keep]
    return torch.stack([batch, index % width, torch.div(index, width, rounding_mode='floor')], dim=1).float()


# --- the model ------------------------------------------------------------------------------------------
def build_model(cfg, checkpoint: Optional[str] = None):
    """The config's DistillationModel in eval mode; ``checkpoint``: a training checkpoint (or work
    dir) whose student and distiller weights are loaded."""
    from mmengine.registry import MODELS
    from mmengine.runner import load_checkpoint

    from .engine.model import DistillationModel
    from .engine.preflight import is_distillation_config
    from .engine.teacher import resolve_checkpoint
    if not is_distillation_config(cfg.get('model') or {}):
        raise TypeError(f"visualize: the config's model is {cfg.model.get('type')!r}, not a "
                        f"'kdtoolbox.DistillationModel': there is no distiller to draw")
    model = MODELS.build(cfg.model)
    assert isinstance(model, DistillationModel)
    if checkpoint is not None:
        load_checkpoint(model, resolve_checkpoint(checkpoint, key='--checkpoint', hint='give a training checkpoint'),
                        map_location='cpu', strict=False)
    return model.eval()


def distiller_maps(model, sample: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """One preprocess + teacher + student (``loss()``) pass with the recorders, then the
    distiller's ``visual_maps``; returns the maps and the batch (``inputs``, ``data_samples``)."""
    from mmengine.dataset import pseudo_collate

    from .engine.model import _to_fp32
    from .engine.preflight import collect_records
    with torch.no_grad():
        student, teacher, context = collect_records(model, pseudo_collate([sample]))
        try:
            maps = model.distiller.visual_maps(student.with_transform(_to_fp32),
                                               teacher.with_transform(_to_fp32), context)
        finally:
            model.student_recorder.clear()
            model.teacher_runner.recorder.clear()
    return dict(maps), dict(inputs=context.inputs, data_samples=context.data_samples)


# --- drawing ----------------------------------------------------------------------------------------
def _first(value: torch.Tensor, what: str) -> np.ndarray:
    value = value.detach().float().cpu()
    if value.dim() == 3:
        value = value[0]
    if value.dim() != 2:
        raise ValueError(f'visualize: map {what!r} has shape {tuple(value.shape)}; expected [H, W] or [B, H, W]')
    return value.numpy()


def _points(value: torch.Tensor, what: str) -> np.ndarray:
    value = value.detach().float().cpu()
    if value.dim() != 2 or value.shape[1] not in (2, 3):
        raise ValueError(f'visualize: {what!r} has shape {tuple(value.shape)}; expected [P, 2] or [P, 3]')
    if value.shape[1] == 3:
        value = value[value[:, 0] == 0][:, 1:]
    return value.numpy()


def to_grey(grid: np.ndarray) -> np.ndarray:
    """``uint8`` grey levels ``255 * (v - min) / (max - min)``; a constant grid: 255 if positive."""
    lo, hi = float(grid.min()), float(grid.max())
    if hi > lo:
        return np.round(255 * (grid - lo) / (hi - lo)).astype(np.uint8)
    return np.full(grid.shape, 255 if hi > 0 else 0, dtype=np.uint8)


def _safe_name(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'map'


def render(maps: dict[str, torch.Tensor], out_dir: str, image: Optional[np.ndarray] = None,
           batch_input_shape: Optional[Sequence[int]] = None, min_size: int = 256) -> list[dict]:
    """Write the PNGs and the index for ``maps``; returns the index entries.

    Args:
        maps: the distiller's ``visual_maps`` (see :class:`kdtoolbox.engine.BaseDistiller`).
        image: the resized input ``[h, w, 3]`` BGR uint8, or None (no image-aligned drawing).
        batch_input_shape: ``(H, W)`` of the padded batch that image-aligned grids cover.
    """
    import cv2
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    if image is not None:
        cv2.imwrite(osp.join(out_dir, 'image.png'), image)
    for name, value in maps.items():
        if name.endswith(POINTS_SUFFIX):
            continue
        grid = _first(value, name)
        points = maps.get(name + POINTS_SUFFIX)
        points = _points(points, name + POINTS_SUFFIX) if points is not None else np.zeros((0, 2), np.float32)
        grey = to_grey(grid)
        aligned = image is not None and batch_input_shape is not None and not name.startswith('bev/')
        if aligned:
            h, w = image.shape[:2]
            big_h, big_w = (int(s) for s in batch_input_shape)
            up = F.interpolate(torch.from_numpy(grey)[None, None].float(), size=(big_h, big_w), mode='nearest')
            grey_px = up[0, 0, :h, :w].round().to(torch.uint8).numpy()
            picture = cv2.addWeighted(image, 0.5, cv2.applyColorMap(grey_px, cv2.COLORMAP_JET), 0.5, 0)
            cell = (big_w / grid.shape[1], big_h / grid.shape[0])
        else:
            factor = max(1, math.ceil(min_size / max(grid.shape)))
            grey_px = np.kron(grey, np.ones((factor, factor), dtype=np.uint8))
            picture = cv2.applyColorMap(grey_px, cv2.COLORMAP_JET)
            cell = (factor, factor)
        radius = max(2, int(min(cell) // 2))
        for x, y in points:
            centre = (int(round((x + 0.5) * cell[0])), int(round((y + 0.5) * cell[1])))
            cv2.circle(picture, centre, radius, (255, 255, 255), thickness=-1)
        base = _safe_name(name)
        cv2.imwrite(osp.join(out_dir, f'{base}.png'), picture)
        cv2.imwrite(osp.join(out_dir, f'{base}.map.png'), grey_px)
        entries.append(dict(name=name, png=f'{base}.png', map_png=f'{base}.map.png',
                            kind='overlay' if aligned else 'plain', grid=list(grid.shape),
                            size=[int(picture.shape[0]), int(picture.shape[1])],
                            min=float(grid.min()), max=float(grid.max()), points=int(len(points))))
    with open(osp.join(out_dir, 'index.json'), 'w') as f:
        json.dump(entries, f, indent=1)
    cards = ''.join(f'<figure><img src="{html.escape(e["png"])}"><figcaption>{html.escape(e["name"])} '
                    f'{e["grid"][0]}x{e["grid"][1]}, [{e["min"]:.3g}, {e["max"]:.3g}]</figcaption></figure>\n'
                    for e in entries)
    with open(osp.join(out_dir, 'index.html'), 'w') as f:
        f.write('<!doctype html><meta charset="utf-8"><title>kdtoolbox visualize</title>'
                '<style>figure{display:inline-block;margin:4px}img{image-rendering:pixelated}</style>\n'
                f'{cards}')
    return entries


def visualize(config: str, image: Optional[str], out_dir: str, teacher_checkpoint: Optional[str] = None,
              checkpoint: Optional[str] = None, ann: Optional[str] = None, index: Optional[int] = None,
              cfg_options: Optional[dict] = None, split: str = 'train', seed: int = 0) -> list[dict]:
    """The whole tool: config + image (or item ``index`` of the ``split`` data set, see
    :func:`load_dataset_sample`) -> PNGs and index in ``out_dir``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import kdtoolbox
    kdtoolbox.load_plugins()
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if teacher_checkpoint is not None:
        cfg.model.teacher_checkpoint = None if teacher_checkpoint.lower() == 'none' else teacher_checkpoint
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if (image is None) == (index is None):
        raise ValueError('visualize: give an IMAGE or --index N (an item of a data set), not both')
    if image is not None:
        sample = load_image_sample(cfg, image, ann)[0]
    else:
        sample = load_dataset_sample(cfg, index, split, seed)
    model = build_model(cfg, checkpoint)
    maps, batch = distiller_maps(model, sample)
    if not maps:
        raise ValueError(f'visualize: {type(model.distiller).__name__} draws nothing (its visual_maps() '
                         f'returns no map)')
    inputs = sample.get('inputs')
    picture, shape = None, None
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 3 and inputs.shape[0] == 3 \
            and isinstance(batch['inputs'], torch.Tensor):
        picture = np.ascontiguousarray(inputs.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
        meta = batch['data_samples'][0].metainfo
        shape = meta.get('batch_input_shape', tuple(batch['inputs'].shape[-2:]))
    return render(maps, out_dir, picture, shape)
