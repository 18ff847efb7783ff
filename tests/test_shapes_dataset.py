"""The generated shapes dataset: determinism, COCO validity, tight boxes, the dataset class, the
demo configs' data and the COCO evaluation it feeds (ground truth as predictions gives mAP 1.0)."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kdtoolbox.datasets import shapes
from kdtoolbox.datasets.shapes import CLASSES, ShapesDataset, make_shapes_dataset, shapes_dataset_is_current

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SMALL = dict(num_train=6, num_val=4, img_size=96, seed=0, max_shapes=4)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope='module')
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes') / 'small'
    return make_shapes_dataset(str(root), **SMALL)


@pytest.fixture(scope='module')
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


# ------------------------------------------------------------------------------ generation
def test_layout_and_marker(small):
    root = small['root']
    assert sorted(os.listdir(root)) == ['VERSION', 'annotations', 'train', 'val']
    assert sorted(os.listdir(osp.join(root, 'train'))) == [f'{i:06d}.png' for i in range(6)]
    assert len(os.listdir(osp.join(root, 'val'))) == 4
    with open(small['marker']) as f:
        assert json.load(f) == shapes.shapes_marker(**SMALL)
    assert shapes_dataset_is_current(root, **SMALL)
    assert not shapes_dataset_is_current(root, **{**SMALL, 'seed': 1})
    leftovers = [n for n in os.listdir(osp.dirname(root)) if '.tmp-' in n or '.old-' in n]
    assert leftovers == []


def test_deterministic(tmp_path, small):
    again = make_shapes_dataset(str(tmp_path / 'again'), **SMALL)
    assert _files(again['root']) == _files(small['root'])  # same bytes, PNGs and json alike
    other = make_shapes_dataset(str(tmp_path / 'other'), **{**SMALL, 'seed': 1})
    a, b = _files(other['root']), _files(small['root'])
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.endswith('.png'))
    assert a['annotations/train.json'] != b['annotations/train.json']


def test_more_images_keep_the_first_ones(tmp_path, small):
    bigger = make_shapes_dataset(str(tmp_path / 'bigger'), **{**SMALL, 'num_train': 8})
    a, b = _files(bigger['root']), _files(small['root'])
    assert len(os.listdir(bigger['train_img_dir'])) == 8
    assert all(a[k] == b[k] for k in b if k.endswith('.png'))


def test_coco_json_valid(small):
    for split, num in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        coco = COCO(small[f'{split}_ann'])
        assert len(coco.getImgIds()) == num
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        size = SMALL['img_size']
        for img_id in coco.getImgIds():
            info = coco.loadImgs(img_id)[0]
            assert (info['width'], info['height']) == (size, size)
            img = cv2.imread(osp.join(small[f'{split}_img_dir'], info['file_name']))
            assert img.shape == (size, size, 3)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            assert 1 <= len(anns) <= SMALL['max_shapes']
            for ann in anns:
                x, y, w, h = ann['bbox']
                assert ann['iscrowd'] == 0 and ann['category_id'] in (1, 2, 3)
                assert 0 <= x and 0 <= y and x + w <= size and y + h <= size
                assert 2 <= w <= 0.55 * size and 2 <= h <= 0.55 * size  # ~12-40 % of the side
                assert 0 < ann['area'] <= w * h
        assert len(coco.getAnnIds()) == len(set(coco.getAnnIds())) > 0


def _shape_pixels(img):
    """Shape pixels, found against the background: it is grey (channel spread <= 12), shapes are
    saturated colours (spread >= 60)."""
    spread = img.max(axis=2).astype(int) - img.min(axis=2)
    assert not ((spread > 12) & (spread < 60)).any()
    return spread >= 36


def test_boxes_are_tight(small):
    """Every shape pixel lies in a box; each box is touched on all four sides by shape pixels; and
    where a box overlaps no other, the shape pixels around it lie exactly within it."""
    checked_isolated = 0
    for split in ('train', 'val'):
        coco = COCO(small[f'{split}_ann'])
        for img_id in coco.getImgIds():
            img = cv2.imread(osp.join(small[f'{split}_img_dir'], coco.loadImgs(img_id)[0]['file_name']))
            fg = _shape_pixels(img)
            boxes = [[int(v) for v in a['bbox']] for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))]
            covered = np.zeros_like(fg)
            for x, y, w, h in boxes:
                covered[y:y + h, x:x + w] = True
                inside = fg[y:y + h, x:x + w]
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert not (fg & ~covered).any()
            for i, (x, y, w, h) in enumerate(boxes):
                others = np.zeros_like(fg)
                for j, (x2, y2, w2, h2) in enumerate(boxes):
                    if j != i:
                        others[max(y2 - 2, 0):y2 + h2 + 2, max(x2 - 2, 0):x2 + w2 + 2] = True
                if others[y:y + h, x:x + w].any():
                    continue
                ys, xs = np.nonzero(fg & ~others)
                near = (xs >= x - 3) & (xs < x + w + 3) & (ys >= y - 3) & (ys < y + h + 3)
                xs, ys = xs[near], ys[near]
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
                checked_isolated += 1
    assert checked_isolated >= 5


def test_regenerates_when_args_change(tmp_path):
    root = str(tmp_path / 'regen')
    make_shapes_dataset(root, **SMALL)
    stamp = os.stat(osp.join(root, 'VERSION')).st_mtime_ns
    make_shapes_dataset(root, **SMALL)  # current: untouched
    assert os.stat(osp.join(root, 'VERSION')).st_mtime_ns == stamp
    with pytest.warns(UserWarning, match='regenerating'):
        make_shapes_dataset(root, **{**SMALL, 'num_val': 2, 'img_size': 64})
    assert shapes_dataset_is_current(root, **{**SMALL, 'num_val': 2, 'img_size': 64})
    assert len(os.listdir(osp.join(root, 'val'))) == 2
    assert cv2.imread(osp.join(root, 'val', '000000.png')).shape == (64, 64, 3)
    os.remove(osp.join(root, 'annotations', 'train.json'))  # incomplete: regenerated
    assert not shapes_dataset_is_current(root, **{**SMALL, 'num_val': 2, 'img_size': 64})
    with pytest.warns(UserWarning, match='regenerating'):
        make_shapes_dataset(root, **{**SMALL, 'num_val': 2, 'img_size': 64})
    assert osp.isfile(osp.join(root, 'annotations', 'train.json'))


def test_crash_leaves_no_half_dataset(tmp_path, monkeypatch):
    root = str(tmp_path / 'crash')
    real = shapes._write_split

    def crash_on_val(folder, split, *args):
        if split == 'val':
            raise KeyboardInterrupt('simulated crash')
        return real(folder, split, *args)

    monkeypatch.setattr(shapes, '_write_split', crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        make_shapes_dataset(root, **SMALL)
    assert not osp.exists(root)
    assert [n for n in os.listdir(tmp_path) if not n.endswith('.lock')] == []
    monkeypatch.setattr(shapes, '_write_split', real)
    make_shapes_dataset(root, **SMALL)
    assert shapes_dataset_is_current(root, **SMALL)


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'precious.txt').write_text('keep me')
    (root / 'VERSION').write_text('1.0\n')  # someone else's marker
    with pytest.raises(FileExistsError, match='not a generated shapes dataset'):
        make_shapes_dataset(str(root), **SMALL)
    assert (root / 'precious.txt').read_text() == 'keep me'


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_shapes_dataset_cli',
                                                  osp.join(REPO, 'tools', 'make_shapes_dataset.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)  # in-process: a subprocess would pay for importing torch and mmdet
    root = str(tmp_path / 'cli')
    argv = ['--root', root, '--num-train', '3', '--num-val', '2', '--img-size', '64', '--seed', '3']
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert 'wrote the shapes dataset' in out and 'train: 3 images' in out and 'val: 2 images' in out
    assert shapes_dataset_is_current(root, num_train=3, num_val=2, img_size=64, seed=3, max_shapes=4)
    assert cli.main(argv) == 0
    assert 'already current' in capsys.readouterr().out


# ------------------------------------------------------------------------------ the dataset class
def test_dataset_class_generates_and_yields_samples(tmp_path, mmdet_scope):
    from mmengine.registry import DATASETS
    root = str(tmp_path / 'ds') + '/'
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='PackDetInputs')]
    ds = DATASETS.build(dict(type='kdtoolbox.ShapesDataset', data_root=root, ann_file='annotations/val.json',
                             data_prefix=dict(img='val/'), pipeline=pipeline, test_mode=True, **SMALL))
    assert isinstance(ds, ShapesDataset)
    assert ds.metainfo['classes'] == CLASSES and len(ds.metainfo['palette']) == 3
    assert len(ds) == SMALL['num_val']
    coco = COCO(osp.join(root, 'annotations', 'val.json'))
    for idx in range(len(ds)):
        sample = ds[idx]
        inputs, data_sample = sample['inputs'], sample['data_samples']
        assert inputs.shape == (3, 128, 128) and inputs.dtype == torch.uint8
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[data_sample.img_id]))
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)])
        scale = 128 / SMALL['img_size']
        assert torch.allclose(data_sample.gt_instances.bboxes.tensor, expected * scale)
        assert data_sample.gt_instances.labels.tolist() == [a['category_id'] - 1 for a in anns]


def test_dataset_root_from_ann_file(tmp_path, mmdet_scope):
    root = tmp_path / 'from_ann'
    ds = ShapesDataset(ann_file=str(root / 'annotations' / 'train.json'),
                       data_prefix=dict(img=str(root / 'train')), pipeline=[], **SMALL)
    assert len(ds) == SMALL['num_train']
    with pytest.raises(ValueError, match='data_root or shapes_root'):
        ShapesDataset(ann_file=str(tmp_path / 'x.json'), pipeline=[], **SMALL)


@pytest.mark.parametrize('name', ['retinanet_r50_shapes_teacher.py', 'retinanet_r18_shapes.py'])
def test_demo_config_data(tmp_path, mmdet_scope, name):
    """The demo configs parse, and their train/val datasets build (generating the data)."""
    from mmengine.registry import DATASETS
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', name))
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.backbone.init_cfg is None and cfg.model.bbox_head.num_classes == 3
    assert cfg.val_evaluator.ann_file == cfg.data_root + 'annotations/val.json'
    root = str(tmp_path / 'data') + '/'
    for key in ('train_dataloader', 'val_dataloader'):
        ds_cfg = cfg[key].dataset
        ds_cfg.update(data_root=root, **SMALL)
        ds = DATASETS.build(ds_cfg)
        assert isinstance(ds, ShapesDataset)
        assert len(ds) == SMALL['num_train' if key == 'train_dataloader' else 'num_val']
        assert ds[0]['inputs'].shape == (3, 256, 256)  # resized from 96 to the config's 256


# ------------------------------------------------------------------------------ evaluation sanity
def _coco_metric(ann_file):
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=ann_file, metric='bbox')
    metric.dataset_meta = dict(classes=CLASSES)
    return metric


def _predictions(coco, label_shift=0, drop=False):
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        anns = [] if drop else coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([(a['category_id'] - 1 + label_shift) % 3 for a in anns], dtype=torch.long)
        yield dict(img_id=img_id, ori_shape=(info['height'], info['width']),
                   pred_instances=dict(bboxes=boxes, scores=torch.ones(len(anns)), labels=labels))


def test_coco_metric_ground_truth_scores_one(small):
    coco = COCO(small['val_ann'])
    metric = _coco_metric(small['val_ann'])
    for pred in _predictions(coco):
        metric.process({}, [pred])
    results = metric.evaluate(len(coco.getImgIds()))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/bbox_mAP_50'] == pytest.approx(1.0)


def test_coco_metric_wrong_or_no_predictions_score_zero(small):
    coco = COCO(small['val_ann'])
    metric = _coco_metric(small['val_ann'])
    for pred in _predictions(coco, label_shift=1):  # right boxes, wrong classes
        metric.process({}, [pred])
    assert metric.evaluate(len(coco.getImgIds()))['coco/bbox_mAP'] == 0.0
    # No predictions at all: mmdet's CocoMetric logs "results ... empty" and reports no bbox metrics.
    metric = _coco_metric(small['val_ann'])
    for pred in _predictions(coco, drop=True):
        metric.process({}, [pred])
    assert 'coco/bbox_mAP' not in metric.evaluate(len(coco.getImgIds()))
    # pycocotools itself scores an empty detection set 0.0.
    empty = COCO()
    empty.dataset = {'images': coco.dataset['images'], 'categories': coco.dataset['categories'],
                     'annotations': []}
    empty.createIndex()
    ev = COCOeval(coco, empty, 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == 0.0


# ------------------------------------------------------------------------------ training (slow)
@pytest.mark.slow
@pytest.mark.parametrize('name', ['retinanet_r18_shapes.py'])
def test_demo_config_trains_two_iterations(tmp_path, name):
    """tools/train.py runs the demo config for 2 iterations and validates with a COCO bbox mAP."""
    train = osp.join(REPO, 'tools', 'train.py')
    if not osp.isfile(train):
        pytest.skip('tools/train.py is missing')
    data = str(tmp_path / 'data') + '/'
    small = dict(num_train=8, num_val=4, img_size=128, seed=0, max_shapes=4)
    # 8 training images in batches of 4, one epoch: 2 iterations, then validation (score_thr below
    # the head's initial prior 0.01: an untrained model's detections are kept, so a mAP is computed).
    opts = ['train_cfg.max_epochs=1', 'model.test_cfg.score_thr=0.001',
            f'val_evaluator.ann_file={data}annotations/val.json']
    for loader in ('train', 'val', 'test'):
        opts.append(f'{loader}_dataloader.dataset.data_root={data}')
        opts.extend(f'{loader}_dataloader.dataset.{k}={v}' for k, v in small.items())
    cmd = [sys.executable, train, osp.join(REPO, 'configs', 'demo', name),
           '--work-dir', str(tmp_path / 'work'), '--cfg-options', *opts]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get('PYTHONPATH')])))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'coco/bbox_mAP' in log
    assert any(n.endswith('.pth') for n in os.listdir(tmp_path / 'work'))
