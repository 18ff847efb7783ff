"""tools/demo.py and kdtoolbox.experiments: the results table on generated data.

The slow test runs the real quick mode (teacher, baseline, GID through tools/train.py, COCO mAP by
mmdet's CocoMetric) on a tiny schedule and checks the table against the per-run result files; the
fast ones check the table arithmetic, the config building and the harder shapes variant.
"""
import importlib.util
import json
import math
import os
import os.path as osp
import re

import pytest

from kdtoolbox.experiments import Row, build_run_config, format_table, summarize

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _demo_module():
    spec = importlib.util.spec_from_file_location('kdtoolbox_demo_cli', osp.join(REPO, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ table arithmetic
def _result(row, seed, value, role='method'):
    return {'row': row, 'role': role, 'seed': seed, 'value': value, 'train_time_s': 60.0, 'cpu_time_s': 100.0}


def test_summarize_mean_std_delta_and_verdict():
    rows = [Row('teacher', 't.py', role='teacher', seeded=False, baseline=None),
            Row('baseline', 'b.py', role='baseline', baseline=None),
            Row('good', 'g.py'), Row('same', 's.py'), Row('stage', 'x.py', role='stage', baseline=None)]
    results = [_result('teacher', 0, 0.40, 'teacher'),
               *[_result('baseline', s, v, 'baseline') for s, v in enumerate([0.20, 0.22, 0.24])],
               *[_result('good', s, v) for s, v in enumerate([0.30, 0.31, 0.32])],
               *[_result('same', s, v) for s, v in enumerate([0.18, 0.25, 0.23])],
               _result('stage', 0, 0.9, 'stage')]
    entries = {e['name']: e for e in summarize(rows, results)}
    assert list(entries) == ['teacher', 'baseline', 'good', 'same']  # suite order, no stage row
    base = entries['baseline']
    assert base['mean'] == pytest.approx(0.22)
    assert base['std'] == pytest.approx(0.02)  # sample std (n - 1) of 0.20, 0.22, 0.24
    assert entries['teacher']['std'] is None and entries['teacher']['delta'] is None
    good = entries['good']
    assert good['delta'] == pytest.approx(0.31 - 0.22)
    # spread of the difference of two 3-seed means: sqrt(0.01^2/3 + 0.02^2/3)
    assert good['spread'] == pytest.approx(math.sqrt(0.01 ** 2 / 3 + 0.02 ** 2 / 3))
    assert good['verdict'] == 'above'
    same = entries['same']
    assert same['delta'] == pytest.approx(0.22 - 0.22, abs=1e-12) and same['verdict'] == 'within spread'
    table = format_table(list(entries.values()))
    line = next(x for x in table.splitlines() if x.startswith('| good '))
    assert '31.0 ± 1.0' in line and '30.0, 31.0, 32.0' in line and '+9.0' in line and 'above' in line
    # a metric already in percent is shown as is
    line = next(x for x in format_table(list(entries.values()), 'av/top1', scale=1.0).splitlines()
                if x.startswith('| good '))
    assert '0.3 ± 0.0' in line and '+0.1' in line


def test_summarize_one_seed_and_missing_baseline():
    rows = [Row('baseline', 'b.py', role='baseline', baseline=None), Row('m', 'm.py')]
    entries = summarize(rows, [_result('m', 0, 0.1)])  # the baseline has no result yet
    assert len(entries) == 1 and entries[0]['delta'] is None
    entries = summarize(rows, [_result('m', 0, 0.1), _result('baseline', 0, 0.15, 'baseline')])
    assert entries[1]['delta'] == pytest.approx(-0.05) and entries[1]['verdict'] == 'one seed'


def test_row_validation():
    with pytest.raises(ValueError, match='role'):
        Row('x', 'x.py', role='student')
    with pytest.raises(ValueError, match='row name'):
        Row('a/b', 'x.py')


# ------------------------------------------------------------------------------ the suite's configs
def test_shapes_suite_configs_point_at_the_suite_teacher():
    """Every distillation row reads the suite's teacher config and checkpoint (no demo work dir is
    left in any run config), with the benchmark data, schedule, seed and 128 channels."""
    demo = _demo_module()
    rows, subs = demo.shapes_suite(demo.SUITES['shapes'][0], 2, 5, 3)
    common = demo.shapes_data_options('/data/bench/', demo.BENCH_SHAPES, demo.BENCH_VARIANT)

    def lookup(kind, name):
        return f'/suite/{name}/seed0' + ('/epoch_5.pth' if kind == 'ckpt' else '')

    names = [r.name for r in rows]
    assert names.index('maskd_tokens') < names.index('MasKD') and names[:2] == ['teacher', 'baseline']
    for row in rows:
        cfg = build_run_config(row, 2, '/suite/run', common, subs, lookup)
        text = cfg.pretty_text
        assert 'work_dirs/' not in text, row.name
        assert cfg.randomness.seed == 2 and cfg.work_dir == '/suite/run'
        assert cfg.train_dataloader.dataset.data_root == '/data/bench/'
        assert cfg.val_dataloader.dataset.shapes_variant == demo.BENCH_VARIANT
        assert cfg.val_evaluator.ann_file == '/data/bench/annotations/val.json'
        if row.role == 'stage':
            assert cfg.train_cfg.max_iters == 3 and cfg.model.channels == 128
        else:
            assert cfg.train_cfg.max_epochs == (5 if row.role == 'teacher' else 2)
        if row.name == 'inherit':  # the student alone, neck and head from the suite's teacher
            assert cfg.model.neck.init_cfg.checkpoint == '/suite/teacher/seed0/epoch_5.pth'
            assert cfg.model.bbox_head.init_cfg.checkpoint == '/suite/teacher/seed0/epoch_5.pth'
            assert row.needs == ['teacher'] and 'teacher' not in cfg.model
            continue
        if row.role == 'method':
            assert row.baseline == ('inherit' if row.name in demo.INHERITING_METHODS
                                    else 'frcnn_baseline' if row.name == 'Mimic' else 'baseline')
            if 'frcnn' in row.baseline:
                assert cfg.model.teacher_checkpoint == '/suite/frcnn_teacher/seed0/epoch_5.pth'
                continue
            assert cfg.model.teacher == osp.join(REPO, 'configs', 'demo', 'bench', 'retinanet_r50_teacher.py')
            assert cfg.model.teacher_checkpoint == '/suite/teacher/seed0/epoch_5.pth'
            assert cfg.model.student.neck.out_channels == 128
            if 'student_channels' in cfg.model.distiller:
                assert cfg.model.distiller.student_channels == cfg.model.distiller.teacher_channels == 128


# ------------------------------------------------------------------------------ the harder data
def test_bench_variant_differs_and_is_recorded(tmp_path):
    from kdtoolbox.datasets.shapes import make_shapes_dataset, shapes_dataset_is_current, shapes_marker
    small = dict(num_train=4, num_val=2, img_size=96, seed=0, max_shapes=8)
    variant = dict(min_size=0.09, max_size=0.25, clutter=4, shape_noise=24, min_saturation=0.35)
    plain = make_shapes_dataset(str(tmp_path / 'plain'), **small)
    hard = make_shapes_dataset(str(tmp_path / 'hard'), **small, **variant)
    assert shapes_dataset_is_current(hard['root'], **small, **variant)
    assert not shapes_dataset_is_current(hard['root'], **small)
    with open(hard['marker']) as f:
        assert json.load(f)['args'] == {**small, **variant}
    # default values of the optional arguments leave the marker as it always was
    assert shapes_marker(**small, clutter=0, shape_noise=8) == shapes_marker(**small)
    with open(plain['train_ann']) as f, open(hard['train_ann']) as g:
        a, b = json.load(f)['annotations'], json.load(g)['annotations']
    side = small['img_size']
    assert all(max(x['bbox'][2:]) <= 0.25 * side + 1 for x in b)  # the smaller shapes
    assert a != b
    with pytest.raises(TypeError, match='clutterr'):
        make_shapes_dataset(str(tmp_path / 'bad'), **small, clutterr=3)
    with pytest.raises(ValueError, match='min_size'):
        make_shapes_dataset(str(tmp_path / 'bad'), **small, min_size=0.5, max_size=0.2)


# ------------------------------------------------------------------------------ the quick mode (slow)
def _table_rows(text):
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 7 and cells[0] not in ('row', '---'):
            out[cells[0]] = cells
    return out


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path):
    """``tools/demo.py --quick`` on a tiny schedule: teacher, baseline and GID (the quick method: RoI
    features and nms under bf16 autocast) trained by tools/train.py --amp, the table's numbers are
    those of the per-run result files (from CocoMetric), a rerun trains nothing."""
    work = str(tmp_path / 'demo')
    argv = ['--quick', '--work-dir', work, '--data-root', str(tmp_path / 'data'), '--num-train', '8',
            '--num-val', '4', '--epochs', '1', '--teacher-epochs', '1', '--score-thr', '0.0',
            '--cfg-options', 'train_dataloader.batch_size=4']
    demo = _demo_module()
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert demo.main(argv) == 0
    finally:
        os.chdir(cwd)
    for name in ('table.md', 'table.png', 'demo.log'):
        assert osp.getsize(osp.join(work, name)) > 0
    with open(osp.join(work, 'table.md')) as f:
        table = _table_rows(f.read())
    assert list(table) == ['teacher', 'baseline', 'GID']
    for name, cells in table.items():
        with open(osp.join(work, name, 'seed0', 'result.json')) as f:
            result = json.load(f)
        assert result['row'] == name and result['seed'] == 0 and result['train_args'] == ['--amp']
        # the evaluator ran and logged its metrics (a score threshold of 0 keeps detections)
        assert 'coco/bbox_mAP' in result['metrics'] and 'coco/bbox_mAP_50' in result['metrics']
        assert result['value'] == result['metrics']['coco/bbox_mAP']
        assert cells[2] == f'{100 * result["value"]:.1f}'
        assert cells[3].startswith(f'{100 * result["value"]:.1f} ')
        assert osp.isfile(result['checkpoint']) and osp.isfile(result['run_config'])
    with open(osp.join(work, 'baseline', 'seed0', 'result.json')) as f:
        base = json.load(f)['value']
    with open(osp.join(work, 'GID', 'seed0', 'result.json')) as f:
        gid = json.load(f)['value']
    assert table['GID'][4] == f'{100 * (gid - base):+.1f}'
    # The GID run read the suite's teacher (its config names the teacher run's checkpoint).
    with open(osp.join(work, 'GID', 'seed0', 'config.py')) as f:
        gid_cfg = f.read()
    teacher_ckpt = json.load(open(osp.join(work, 'teacher', 'seed0', 'result.json')))['checkpoint']
    assert teacher_ckpt in gid_cfg and 'work_dirs/retinanet_r50_shapes_teacher' not in gid_cfg
    # Resumable: a second invocation finds every run finished and trains nothing.
    stamps = {n: os.stat(osp.join(work, n, 'seed0', 'train.log')).st_mtime_ns for n in table}
    os.chdir(REPO)
    try:
        assert demo.main(argv) == 0
    finally:
        os.chdir(cwd)
    assert stamps == {n: os.stat(osp.join(work, n, 'seed0', 'train.log')).st_mtime_ns for n in table}
    assert re.search(r'python tools/demo.py --quick', open(osp.join(work, 'table.md')).read())


def test_av_suite_configs():
    """The audio-visual suite: KD reads the suite's probe (teacher row) checkpoint, the other rows
    need nothing; every row keeps its data and schedule; an unknown method is refused by name."""
    demo = _demo_module()
    rows, subs = demo.av_suite(list(demo.AV_METHODS))
    assert [r.name for r in rows] == ['teacher', 'baseline', 'KD', 'CRD', 'RKD', 'MNF-CSC']

    def lookup(kind, name):
        assert (kind, name) == ('ckpt', 'teacher')
        return '/suite/teacher/seed0/epoch_30.pth'

    def generates(node):
        if isinstance(node, dict):
            if 'generate' in node:
                yield node
            for v in node.values():
                yield from generates(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                yield from generates(v)

    for row in rows:
        cfg = build_run_config(row, 1, '/suite/run', {}, subs, lookup, demo.av_bench_transform)
        text = cfg.pretty_text
        assert 'work_dirs/' not in text and 'data/av_demo' not in text, row.name
        assert cfg.randomness.seed == 1
        if row.name == 'KD':
            assert cfg.model.teacher_checkpoint == '/suite/teacher/seed0/epoch_30.pth'
        datasets = list(generates(cfg.to_dict()))
        assert len(datasets) >= 2  # train and val at least (and the gallery where retrieval runs)
        for ds in datasets:  # one folder, one set of generator arguments
            assert ds['data_root'] == demo.AV_BENCH_ROOT
            assert ds['generate'] == datasets[0]['generate']
            assert {k: ds['generate'][k] for k in demo.AV_BENCH_VARIANT} == demo.AV_BENCH_VARIANT
    with pytest.raises(SystemExit, match='XKDD'):
        demo.av_suite(['XKDD'])


def test_av_contrast_variant_is_backward_compatible():
    """``visual_contrast`` scales the grating (the class signal): at its default the frames and the
    marker are those of the generator before it existed; lower, the signal shrinks in proportion."""
    import numpy as np
    from kdtoolbox_plugins.av.generate import av_marker, make_av_dataset, render_frames

    def frames(**kw):
        return render_frames(1, 4, 4, 16, np.random.RandomState(0), visual_noise=0.0, **kw).astype(int)

    np.testing.assert_array_equal(frames(), frames(visual_contrast=180.0))
    low = frames(visual_contrast=45.0)
    # rint(40 + 180 g) - 40 versus 4 x (rint(40 + 45 g) - 40): equal up to the two roundings
    assert np.abs((frames() - 40) - 4 * (low - 40)).max() <= 2.5
    assert low.max() <= 40 + 45 + 1 and frames().max() > 200
    assert 'visual_contrast' not in av_marker()['args']
    assert av_marker(visual_contrast=180) == av_marker()
    assert av_marker(visual_contrast=50)['args']['visual_contrast'] == 50.0
    with pytest.raises(ValueError, match='visual_contrast'):
        make_av_dataset('/nonexistent/never-written', visual_contrast=0)


def test_bev_suite_configs():
    """The LiDAR suite: both methods read the suite's teacher checkpoint; every row reads the
    benchmark scenes folder with the larger validation split, the same in all three loaders."""
    demo = _demo_module()
    rows, subs = demo.bev_suite(list(demo.BEV_METHODS))
    assert [r.name for r in rows] == ['teacher', 'baseline', 'tgi', 'SparseKD', 'SparseImitation']
    assert {r.name: r.baseline for r in rows if r.role == 'method'} == {
        'tgi': 'baseline', 'SparseKD': 'tgi', 'SparseImitation': 'baseline'}
    common = demo.bev_data_options('/data/lidar/', 64)

    def lookup(kind, name):
        assert (kind, name) == ('ckpt', 'teacher')
        return '/suite/teacher/seed0/epoch_12.pth'

    for row in rows:
        cfg = build_run_config(row, 2, '/suite/run', common, subs, lookup)
        assert 'work_dirs/' not in cfg.pretty_text, row.name
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.data_root == '/data/lidar/' and loader.dataset.num_val == 64
            assert loader.dataset.num_train == 64  # the configs' training scenes
        if row.role == 'method':
            assert cfg.model.teacher_checkpoint == '/suite/teacher/seed0/epoch_12.pth'
            assert cfg.model.teacher.endswith('centerpoint_voxel_scenes_teacher.py')
        if row.name in ('tgi', 'SparseKD'):  # the same init; tgi without any KD loss
            off = row.name == 'tgi'
            assert cfg.model.distiller.tgi is True
            assert (cfg.model.distiller.hm_weight == 0) == off and (cfg.model.distiller.reg_weight == 0) == off
            assert cfg.model.distiller.label_kd is not off
    with pytest.raises(SystemExit, match='SparseKDD'):
        demo.bev_suite(['SparseKDD'])


def test_resize_transform_scales_every_pipeline():
    """The shapes suite trains and evaluates at --img-size: every Resize of the three loaders (found by
    type, wherever it sits in the pipeline) gets that scale; nothing else changes."""
    demo = _demo_module()
    rows, subs = demo.shapes_suite(['FGD'], 2, 5, 3)
    common = demo.shapes_data_options('/data/bench/', demo.BENCH_SHAPES, demo.BENCH_VARIANT)
    lookup = lambda kind, name: f'/suite/{name}/seed0' + ('/epoch_5.pth' if kind == 'ckpt' else '')  # noqa: E731
    for row in rows:
        plain = build_run_config(row, 0, '/run', common, subs, lookup)
        cfg = build_run_config(row, 0, '/run', common, subs, lookup, demo.resize_transform(160))
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            steps = cfg[loader].dataset.pipeline
            resizes = [s for s in steps if s['type'] == 'Resize']
            assert len(resizes) == 1 and tuple(resizes[0]['scale']) == (160, 160)
            assert [s['type'] for s in steps] == [s['type'] for s in plain[loader].dataset.pipeline]
        assert cfg.model == plain.model


def test_final_metrics_reads_the_named_metric(tmp_path):
    """A metric without a ``/`` in its name (the LiDAR metric's ``mAP_0.25``) is found when named;
    loss lines are never taken for a validation, and the last validation wins."""
    from kdtoolbox.experiments import final_metrics
    stamp = tmp_path / '20260101_000000' / 'vis_data'
    stamp.mkdir(parents=True)
    lines = [{'loss': 1.0, 'lr': 0.1, 'step': 1}, {'mAP_0.25': 0.2, 'step': 1},
             {'loss': 0.5, 'lr': 0.1, 'step': 2}, {'mAP_0.25': 0.3, 'mAP_0.50': 0.1, 'step': 2}]
    (stamp / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    assert final_metrics(str(tmp_path), 'mAP_0.25')['mAP_0.25'] == 0.3
    assert final_metrics(str(tmp_path)) is None  # no metric-looking key without the name
    assert final_metrics(str(tmp_path), 'coco/bbox_mAP') is None


def test_run_suite_passes_the_training_arguments_to_every_run(tmp_path):
    """run_suite hands the suite's training arguments (``--amp``) to every run's training script, and
    each run's result records them. (The training script is a stand-in that logs one validation
    whose value says whether it saw --amp; the real one runs in the quick-mode test.)"""
    from kdtoolbox.experiments import run_suite
    script = tmp_path / 'train.py'
    script.write_text(
        'import json, os, sys\n'
        'work = sys.argv[sys.argv.index("--work-dir") + 1]\n'
        'os.makedirs(os.path.join(work, "20260101_000000", "vis_data"), exist_ok=True)\n'
        'with open(os.path.join(work, "20260101_000000", "vis_data", "scalars.json"), "w") as f:\n'
        '    f.write(json.dumps({"acc/top1": 0.5 if "--amp" in sys.argv else 0.25, "step": 1}) + "\\n")\n')
    config = tmp_path / 'cfg.py'
    config.write_text('model = dict(type="X")\n')
    rows = [Row('baseline', str(config), role='baseline', baseline=None), Row('m', str(config))]
    with_amp = run_suite(rows, [0], str(tmp_path / 'amp'), {}, {}, str(script), 'acc/top1',
                         log=lambda msg: None, train_args=['--amp'])
    assert [(r['train_args'], r['value']) for r in with_amp] == [(['--amp'], 0.5)] * 2
    plain = run_suite(rows, [0], str(tmp_path / 'fp32'), {}, {}, str(script), 'acc/top1', log=lambda msg: None)
    assert [(r['train_args'], r['value']) for r in plain] == [([], 0.25)] * 2


def test_loss_balance_sums_distillation_and_task_terms(tmp_path):
    """The last training line's ``distill.*`` losses against the other loss terms (the total ``loss``
    and non-loss values such as ``lr`` left out); a run without distillation terms gives None."""
    from kdtoolbox.experiments import loss_balance
    stamp = tmp_path / 'run' / '20260101_000000' / 'vis_data'
    stamp.mkdir(parents=True)
    lines = [{'loss': 9.0, 'lr': 0.1, 'loss_cls': 1.0, 'distill.fpn0.loss_fg': 8.0},
             {'coco/bbox_mAP': 0.3, 'step': 1},
             {'loss': 3.5, 'lr': 0.1, 'grad_norm': 4.0, 'loss_cls': 0.25, 'loss_bbox': 0.25,
              'distill.fpn0.loss_fg': 2.0, 'distill.fpn1.loss_fg': 1.0, 'distill.fpn0.gate_mean': 0.5}]
    (stamp / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    assert loss_balance(str(tmp_path / 'run')) == (3.0, 0.5)
    plain = tmp_path / 'plain' / '20260101_000000' / 'vis_data'
    plain.mkdir(parents=True)
    (plain / 'scalars.json').write_text(json.dumps({'loss': 1.0, 'loss_cls': 1.0}) + '\n')
    assert loss_balance(str(tmp_path / 'plain')) is None


def test_run_one_waits_for_a_run_another_process_is_training(tmp_path, monkeypatch):
    """Two invocations on one work dir: a run whose folder is locked by a live process is not trained
    again; the waiting one returns the result that process writes. A stale lock (dead pid) is taken
    over, and the lock is gone after the run."""
    import subprocess
    import sys
    import threading
    from kdtoolbox import experiments
    monkeypatch.setattr(experiments, '_POLL_S', 0.05)
    row = Row('m', str(tmp_path / 'cfg.py'))
    folder = tmp_path / 'work' / 'm' / 'seed0'
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        (folder / 'running.pid').write_text(str(holder.pid))
        result = {'row': 'm', 'seed': 0, 'value': 0.5}
        timer = threading.Timer(0.3, lambda: (folder / 'result.json').write_text(json.dumps(result)))
        timer.start()
        got = experiments.run_one(row, 0, str(tmp_path / 'work'), {}, {}, '/nonexistent/train.py', 'acc',
                                  log=lambda msg: None)
        assert got == result  # (training would have failed: no config, no script)
    finally:
        holder.kill()
        holder.wait()
    # a dead holder's lock is stale: taken over, and removed after the run
    (folder / 'result.json').unlink()
    (folder / 'running.pid').write_text(str(holder.pid))
    (tmp_path / 'cfg.py').write_text('model = dict(type="X")\n')
    script = tmp_path / 'train.py'
    script.write_text('import json, os, sys\n'
                      'work = sys.argv[sys.argv.index("--work-dir") + 1]\n'
                      'os.makedirs(os.path.join(work, "s", "vis_data"), exist_ok=True)\n'
                      'open(os.path.join(work, "s", "vis_data", "scalars.json"), "w").write(\'{"acc": 0.25}\\n\')\n')
    got = experiments.run_one(row, 0, str(tmp_path / 'work'), {}, {}, str(script), 'acc', log=lambda msg: None)
    assert got['value'] == 0.25 and not (folder / 'running.pid').exists()
