"""tools/visualize.py / `kdtoolbox visualize` on the BEV distillers (UniDistill, BEVDistill, DistillBEV,
SparseKD): item --index N of a demo config's data set (point clouds, point clouds + cameras), random
teachers (model.teacher_checkpoint=None). The GT boxes come from the same data set item; their cells
are computed here by hand from the grid of the demo configs."""
import json
import math
import subprocess

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from conftest import PYTHON, ROOT
from kdtoolbox.visualize import load_dataset_sample, pipeline_with_boxes_3d, visualize

# configs/bev/demo/_base_/multimodal_scenes.py: x in [0, 25.6], y in [-12.8, 12.8], 0.4 m cells, 64 x 64
MM_X0, MM_Y0, MM_CELL, MM_SIZE = 0.0, -12.8, 0.4, 64
# configs/bev/demo/_base_/lidar_scenes.py + the voxel teacher (0.16 m voxels, stride 8): 32 x 32 cells of 1.28 m
LS_X0, LS_Y0, LS_CELL, LS_SIZE = -20.48, -20.48, 1.28, 32
FACTOR = 4  # render(): maps are scaled by ceil(256 / 64) = 4 and ceil(256 / 32) = 8 -> 256 x 256 pictures
PICTURE = (256, 256)


def _config(name):
    return f'{ROOT}/configs/bev/demo/{name}.py'


def _run(tmp_path, name, split='val'):
    out = tmp_path / name
    entries = visualize(_config(name), None, str(out), index=0, split=split,
                        cfg_options={'model.teacher_checkpoint': None})
    assert json.loads((out / 'index.json').read_text()) == entries
    for entry in entries:
        assert entry['kind'] == 'plain'
        for key in ('png', 'map_png'):
            png = cv2.imread(str(out / entry[key]), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.shape[:2] == PICTURE, (entry, None if png is None else png.shape)
    assert (out / 'index.html').read_text().count('<img') == len(entries)
    return out, {e['name']: e for e in entries}


def _boxes(name, split='val'):
    """The GT boxes ``[M, >=7]`` (x, y, z, l, w, h, yaw, ...) of item 0, as the tool loads it."""
    sample = load_dataset_sample(Config.fromfile(_config(name)), 0, split)
    return sample['data_samples'].gt_instances_3d.bboxes_3d.tensor.numpy()


def _cell(x, y, x0, y0, cell):
    """(row, col) of a metric point: rows = y, columns = x."""
    return int(math.floor((y - y0) / cell)), int(math.floor((x - x0) / cell))


def _grey(out, entries, name):
    return cv2.imread(str(out / entries[name]['map_png']), cv2.IMREAD_GRAYSCALE)


def _far_cell(boxes, x0, y0, cell, size, min_dist):
    """A cell whose centre is at least ``min_dist`` metres from every box's nearest point (box extents
    bounded by their half diagonal)."""
    best, best_d = None, -1.0
    for row in range(size):
        for col in range(size):
            x, y = x0 + (col + 0.5) * cell, y0 + (row + 0.5) * cell
            d = min(math.hypot(x - b[0], y - b[1]) - math.hypot(b[3], b[4]) / 2 for b in boxes)
            if d > best_d:
                best, best_d = (row, col), d
    assert best_d >= min_dist, best_d
    return best


def _px(row, col, factor):
    """The picture pixel at the centre of a cell."""
    return int((row + 0.5) * factor), int((col + 0.5) * factor)


def test_the_3d_test_pipeline_gets_its_boxes():
    cfg = Config.fromfile(_config('unidistill_lidar_multimodal'))
    pipeline = pipeline_with_boxes_3d(cfg.val_dataloader.dataset.pipeline)
    types = [t['type'] for t in pipeline]
    assert types[:4] == ['LoadPointsFromFile', 'LoadAnnotations3D', 'PointsRangeFilter', 'ObjectRangeFilter']
    assert pipeline[3]['point_cloud_range'] == [0.0, -12.8, -3.0, 25.6, 12.8, 1.0]
    assert pipeline[-1]['keys'] == ['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d']
    assert 'gt_bboxes_3d' not in cfg.val_dataloader.dataset.pipeline[-1]['keys']  # the config is not changed


def test_the_train_item_is_repeatable_and_the_val_item_has_the_train_box_format():
    cfg = Config.fromfile(_config('unidistill_lidar_multimodal'))
    a, b = (load_dataset_sample(cfg, 3, 'train', seed=1) for _ in range(2))
    c = load_dataset_sample(cfg, 3, 'train', seed=2)
    boxes = [s['data_samples'].gt_instances_3d.bboxes_3d.tensor for s in (a, b, c)]
    assert np.array_equal(boxes[0].numpy(), boxes[1].numpy())
    assert boxes[0].shape != boxes[2].shape or not np.allclose(boxes[0].numpy(), boxes[2].numpy())
    # the val data set of this config drops the velocity; the heads train on 9-value boxes
    assert cfg.val_dataloader.dataset.with_velocity is False
    assert _boxes('unidistill_lidar_multimodal').shape[1] == 9
    with pytest.raises(IndexError, match=r'--index 99 is outside the val data set \(0..7\)'):
        load_dataset_sample(cfg, 99, 'val')
    with pytest.raises(ValueError, match='split must be one of'):
        load_dataset_sample(cfg, 0, 'valid')


def test_unidistill_keypoints_over_the_teacher_map_and_the_response_mask(tmp_path):
    name = 'unidistill_lidar_multimodal'
    out, entries = _run(tmp_path, name)
    boxes = _boxes(name)
    assert len(boxes) > 0
    assert set(entries) == {'bev/teacher_low', 'bev/teacher_high', 'bev/response_mask'}
    assert entries['bev/teacher_low']['grid'] == [MM_SIZE, MM_SIZE]
    assert entries['bev/teacher_low']['points'] == 9 * len(boxes)
    assert entries['bev/response_mask']['points'] == len(boxes)
    picture = cv2.imread(str(out / entries['bev/teacher_low']['png']))
    # the front-left corner of each box (x_size along the heading, y_size to its left), by hand
    checked = 0
    for x, y, _, l, w, _, yaw in boxes[:, :7]:
        cx = x + l / 2 * math.cos(yaw) - w / 2 * math.sin(yaw)
        cy = y + l / 2 * math.sin(yaw) + w / 2 * math.cos(yaw)
        row, col = _cell(cx, cy, MM_X0, MM_Y0, MM_CELL)
        if not (0 <= row < MM_SIZE and 0 <= col < MM_SIZE):
            continue
        # the dot is drawn at the keypoint's continuous position, which lies in its cell
        px, py = int(round((cx - MM_X0) / MM_CELL * FACTOR)), int(round((cy - MM_Y0) / MM_CELL * FACTOR))
        assert (picture[min(py, 255), min(px, 255)] == 255).all(), (cx, cy)
        assert col * FACTOR <= px <= (col + 1) * FACTOR and row * FACTOR <= py <= (row + 1) * FACTOR
        checked += 1
    assert checked > 0
    far = _far_cell(boxes, MM_X0, MM_Y0, MM_CELL, MM_SIZE, 2.0)
    assert not (picture[_px(*far, FACTOR)] == 255).all()  # no dot far from the boxes
    # the Gaussian response mask: its peak 1 at each box's centre cell (CenterHead's int()), 0 far away
    mask = _grey(out, entries, 'bev/response_mask')
    assert entries['bev/response_mask']['max'] == 1.0 and entries['bev/response_mask']['min'] == 0.0
    for x, y in boxes[:, :2]:
        row, col = int((y - MM_Y0) / MM_CELL), int((x - MM_X0) / MM_CELL)
        assert mask[_px(row, col, FACTOR)] == 255
    assert mask[_px(*far, FACTOR)] == 0


def test_bevdistill_foreground_mask_and_instance_positions(tmp_path):
    name = 'bevdistill_camera_multimodal'
    out, entries = _run(tmp_path, name)
    boxes = _boxes(name)
    assert set(entries) == {'bev/fg_mask', 'bev/student_score'}
    assert entries['bev/student_score']['points'] == 32  # num_instances of the demo config
    mask = _grey(out, entries, 'bev/fg_mask')
    for x, y in boxes[:, :2]:
        assert mask[_px(int((y - MM_Y0) / MM_CELL), int((x - MM_X0) / MM_CELL), FACTOR)] == 255
    assert mask[_px(*_far_cell(boxes, MM_X0, MM_Y0, MM_CELL, MM_SIZE, 2.0), FACTOR)] == 0


def test_distillbev_regions_partition_each_tap(tmp_path):
    name = 'distillbev_camera_multimodal'
    out, entries = _run(tmp_path, name)
    boxes = _boxes(name)
    taps = {'stage1': 64, 'stage2': 32, 'neck': 64}  # stage 2 runs at stride 2
    expected = {f'bev/{t}/{m}' for t in taps for m in ('fg', 'bg', 'scale', 'attention')} | {'bev/neck/fp'}
    assert set(entries) == expected
    for tap, size in taps.items():
        assert entries[f'bev/{tap}/fg']['grid'] == [size, size]
        cell, factor = 25.6 / size, 256 // size
        fg, bg = _grey(out, entries, f'bev/{tap}/fg'), _grey(out, entries, f'bev/{tap}/bg')
        fp = _grey(out, entries, 'bev/neck/fp') if tap == 'neck' else np.zeros_like(fg)
        total = fg.astype(int) + bg + fp
        assert (total == 255).all()  # fg, bg and fp partition the grid
        checked = 0
        for x, y, _, l, w, _, yaw in boxes[:, :7]:  # the cell of a box's centre, when its centre is inside
            row, col = _cell(x, y, MM_X0, MM_Y0, cell)
            dx, dy = MM_X0 + (col + 0.5) * cell - x, MM_Y0 + (row + 0.5) * cell - y
            along, across = dx * math.cos(yaw) + dy * math.sin(yaw), -dx * math.sin(yaw) + dy * math.cos(yaw)
            if abs(along) <= l / 2 and abs(across) <= w / 2:
                assert fg[_px(row, col, factor)] == 255 and bg[_px(row, col, factor)] == 0
                checked += 1
        assert checked > 0
        far = _far_cell(boxes, MM_X0, MM_Y0, cell, size, 1.0)
        assert fg[_px(*far, factor)] == 0


def test_sparsekd_pivotal_positions_over_the_teacher_heatmap(tmp_path):
    name = 'sparsekd_pillar064_scenes'
    out, entries = _run(tmp_path, name)
    boxes = _boxes(name)
    assert set(entries) == {'bev/task0/teacher_heatmap', 'bev/task0/pivotal_mask'}
    assert entries['bev/task0/pivotal_mask']['grid'] == [LS_SIZE, LS_SIZE]  # the teacher's grid
    factor = 256 // LS_SIZE
    assert entries['bev/task0/teacher_heatmap']['points'] == len(boxes)  # the GT centres
    picture = cv2.imread(str(out / entries['bev/task0/teacher_heatmap']['png']))
    mask = _grey(out, entries, 'bev/task0/pivotal_mask')
    for x, y in boxes[:, :2]:
        row, col = int((y - LS_Y0) / LS_CELL), int((x - LS_X0) / LS_CELL)
        assert (picture[_px(row, col, factor)] == 255).all()
        assert mask[_px(row, col, factor)] > 0
    far = _far_cell(boxes, LS_X0, LS_Y0, LS_CELL, LS_SIZE, 4.0)
    assert mask[_px(*far, factor)] == 0


@pytest.mark.slow
def test_the_command_line_tool_on_a_point_cloud_config(tmp_path):
    proc = subprocess.run([PYTHON, 'tools/visualize.py', 'configs/bev/demo/unidistill_lidar_multimodal.py',
                           '--index', '0', '--out', str(tmp_path), '--teacher-checkpoint', 'none'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'wrote 3 map(s)' in proc.stdout
    assert cv2.imread(str(tmp_path / 'bev_response_mask.map.png'), cv2.IMREAD_GRAYSCALE).shape == PICTURE
