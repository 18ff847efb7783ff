"""tools/visualize.py / `kdtoolbox visualize`: the distillers' masks drawn for one image, on the shapes
demo configs with a random teacher (no checkpoint needed)."""
import json
import subprocess

import cv2
import numpy as np
import pytest
import torch

from conftest import PYTHON, ROOT
from kdtoolbox.visualize import pipeline_with_boxes, render, visualize

# a 320x240 image with one box; the demo test pipeline resizes it to 256x192 (scale 0.8)
BOX = (64, 48, 192, 144)  # x1, y1, x2, y2 in the original image
SCALE = 0.8
SIZE = (192, 256)  # (h, w) of the resized image
INSIDE = (int((BOX[1] + BOX[3]) / 2 * SCALE), int((BOX[0] + BOX[2]) / 2 * SCALE))  # (row, col): the box centre
OUTSIDE = (SIZE[0] - 3, SIZE[1] - 3)  # far from the box (bottom-right corner)


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis')
    img = np.full((240, 320, 3), 40, np.uint8)
    cv2.rectangle(img, BOX[:2], BOX[2:], (0, 200, 255), -1)
    cv2.imwrite(str(root / 'square.png'), img)
    coco = dict(images=[dict(id=7, file_name='train/square.png', width=320, height=240)],
                annotations=[dict(id=1, image_id=7, category_id=3, iscrowd=0, area=128 * 96,
                                  bbox=[BOX[0], BOX[1], BOX[2] - BOX[0], BOX[3] - BOX[1]])],
                categories=[dict(id=c, name=n) for c, n in ((1, 'circle'), (2, 'square'), (3, 'triangle'))])
    (root / 'ann.json').write_text(json.dumps(coco))
    return root


def _run(image, tmp_path, config, **options):
    out = tmp_path / 'out'
    opts = {'model.teacher_checkpoint': None, **options}
    entries = visualize(config, str(image / 'square.png'), str(out), ann=str(image / 'ann.json'), cfg_options=opts)
    index = json.loads((out / 'index.json').read_text())
    assert index == entries
    for entry in entries:
        for key in ('png', 'map_png'):
            png = cv2.imread(str(out / entry[key]), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.shape[:2] == SIZE, (entry, None if png is None else png.shape)
        assert entry['kind'] == 'overlay'
    assert cv2.imread(str(out / 'image.png')).shape == (*SIZE, 3)
    assert (out / 'index.html').read_text().count('<img') == len(entries)
    return out, {e['name']: e for e in entries}


def _grey(out, entries, name):
    return cv2.imread(str(out / entries[name]['map_png']), cv2.IMREAD_GRAYSCALE)


def test_the_pipeline_loads_the_boxes_before_the_resize():
    from mmengine.config import Config
    cfg = Config.fromfile(f'{ROOT}/configs/demo/fgd_retinanet_shapes.py')
    types = [t['type'] for t in pipeline_with_boxes(cfg)]
    assert types == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'PackDetInputs'], types


def test_fgd_masks_and_teacher_attention(image, tmp_path):
    out, entries = _run(image, tmp_path, f'{ROOT}/configs/demo/fgd_retinanet_shapes.py')
    assert set(entries) == {f'fpn{i}/{m}' for i in range(5) for m in ('fg_mask', 'bg_mask', 'teacher_attention')}
    assert entries['fpn0/fg_mask']['grid'] == [24, 32]  # stride 8 on the 192x256 batch
    fg, bg = _grey(out, entries, 'fpn0/fg_mask'), _grey(out, entries, 'fpn0/bg_mask')
    assert fg[INSIDE] > 0 and fg[OUTSIDE] == 0
    assert bg[INSIDE] == 0 and bg[OUTSIDE] > 0
    # the FGD foreground weight of a box is 1 / (its cells): the box covers about 13x10 P3 cells
    assert 1 / 200 < entries['fpn0/fg_mask']['max'] < 1 / 100
    # the overlay shows the mask: inside the box, the picture differs from the bare image
    picture, bare = cv2.imread(str(out / 'fpn0_fg_mask.png')), cv2.imread(str(out / 'image.png'))
    assert not np.array_equal(picture[INSIDE], bare[INSIDE])


def test_defeat_and_fgfi_masks(image, tmp_path):
    out, entries = _run(image, tmp_path, f'{ROOT}/configs/demo/defeat_retinanet_shapes.py')
    assert set(entries) == {f'fpn{i}/gt_mask' for i in range(5)}
    # the 102x77 box goes to P3 by the RoI-scale rule: only level 0 is marked
    mask = _grey(out, entries, 'fpn0/gt_mask')
    assert mask[INSIDE] == 255 and mask[OUTSIDE] == 0
    assert all(entries[f'fpn{i}/gt_mask']['max'] == 0 for i in range(1, 5))

    out, entries = _run(image, tmp_path / 'fgfi', f'{ROOT}/configs/demo/fgfi_retinanet_shapes.py')
    assert set(entries) == {f'fpn{i}/imitation_mask' for i in range(5)}
    mask = _grey(out, entries, 'fpn0/imitation_mask')
    assert mask[INSIDE] == 255 and mask[OUTSIDE] == 0


def test_maskd_token_masks(image, tmp_path):
    out, entries = _run(image, tmp_path, f'{ROOT}/configs/demo/maskd_retinanet_shapes.py',
                        **{'model.distiller.tokens_checkpoint': None})
    assert set(entries) == {f'fpn{i}/token{k}' for i in range(5) for k in range(6)}
    for entry in entries.values():  # sigmoid masks
        assert 0 < entry['min'] <= entry['max'] < 1


def test_maps_that_are_not_image_aligned_are_drawn_alone_with_their_points(tmp_path):
    bev = torch.zeros(2, 40, 50)
    bev[0, 10:20, 5:15] = 1
    points = torch.tensor([[0., 30., 30.], [1., 0., 0.], [0., 45., 2.]])  # (batch, x, y); image 1 is not drawn
    entries = render({'bev/mask': bev, 'bev/mask.points': points}, str(tmp_path))
    assert len(entries) == 1 and entries[0]['kind'] == 'plain' and entries[0]['points'] == 2
    factor = 6  # ceil(256 / 50)
    picture = cv2.imread(str(tmp_path / 'bev_mask.png'))
    grey = cv2.imread(str(tmp_path / 'bev_mask.map.png'), cv2.IMREAD_GRAYSCALE)
    assert picture.shape == (40 * factor, 50 * factor, 3) and grey.shape == (40 * factor, 50 * factor)
    assert grey[15 * factor, 10 * factor] == 255 and grey[35 * factor, 40 * factor] == 0
    assert (picture[int(30.5 * factor), int(30.5 * factor)] == 255).all()  # a white dot on the point
    assert not (picture[int(0.5 * factor), int(0.5 * factor)] == 255).all()  # image 1's point is not drawn
    with pytest.raises(ValueError, match=r"map 'm' has shape \(2, 2, 2, 2\)"):
        render({'m': torch.zeros(2, 2, 2, 2)}, str(tmp_path))


def test_a_config_without_a_distiller_is_refused(image, tmp_path):
    with pytest.raises(TypeError, match="not a 'kdtoolbox.DistillationModel'"):
        visualize(f'{ROOT}/configs/demo/retinanet_r18_shapes.py', str(image / 'square.png'), str(tmp_path))


@pytest.mark.slow
def test_the_command_line_tool(image, tmp_path):
    out = tmp_path / 'cli'
    proc = subprocess.run([PYTHON, 'tools/visualize.py', 'configs/demo/defeat_retinanet_shapes.py',
                           str(image / 'square.png'), '--ann', str(image / 'ann.json'), '--out', str(out),
                           '--teacher-checkpoint', 'none'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'wrote 5 map(s)' in proc.stdout
    mask = cv2.imread(str(out / 'fpn0_gt_mask.map.png'), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == SIZE and mask[INSIDE] == 255 and mask[OUTSIDE] == 0
