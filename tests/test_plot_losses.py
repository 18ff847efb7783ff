"""tools/plot_losses.py on a hand-written mmengine scalar log (two runs: a resumed one overwrites)."""
import json
import os
import subprocess

from conftest import PYTHON, ROOT


def write_log(work, stamp, records):
    d = work / stamp / 'vis_data'
    d.mkdir(parents=True)
    (d / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def test_reads_splits_and_draws(tmp_path):
    import sys
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    from plot_losses import read_scalars, split_terms
    write_log(tmp_path, '20260101_000000', [
        dict(iter=1, loss=3.0, loss_cls=2.0, **{'distill.fpn0.loss_fg': 1.0}),
        dict(iter=2, loss=2.5, loss_cls=1.8, **{'distill.fpn0.loss_fg': 0.7}),
        {'coco/bbox_mAP': 0.1, 'step': 1}])  # a validation record: ignored
    write_log(tmp_path, '20260101_010000', [   # resumed at iteration 2
        dict(iter=2, loss=2.4, loss_cls=1.7, **{'distill.fpn0.loss_fg': 0.7}),
        dict(iter=3, loss=2.0, loss_cls=1.5, **{'distill.fpn0.loss_fg': 0.5})])
    series = read_scalars(str(tmp_path))
    assert series['loss'] == [(1, 3.0), (2, 2.4), (3, 2.0)]
    assert series['distill.fpn0.loss_fg'] == [(1, 1.0), (2, 0.7), (3, 0.5)]
    assert split_terms(series) == (['loss', 'loss_cls'], ['distill.fpn0.loss_fg'])
    out = tmp_path / 'curves.png'
    proc = subprocess.run([PYTHON, 'tools/plot_losses.py', str(tmp_path), '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import matplotlib.image as mpimg
    img = mpimg.imread(str(out))
    assert img.shape[:2] == (400, 1200)  # two 6 x 4 inch panels at 100 dpi


def test_errors_name_the_work_dir_and_the_key(tmp_path):
    proc = subprocess.run([PYTHON, 'tools/plot_losses.py', str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and f'no */vis_data/scalars.json under {str(tmp_path)!r}' in proc.stderr
    write_log(tmp_path, 's', [dict(iter=1, loss=1.0)])
    proc = subprocess.run([PYTHON, 'tools/plot_losses.py', str(tmp_path), '--keys', 'distill.x'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "no scalar ['distill.x'] in the log (have: loss)" in proc.stderr
