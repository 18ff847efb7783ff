#!/usr/bin/env python
"""The results table on generated data: teacher, student baseline and distilled students, over seeds.

    python tools/demo.py --quick                     # teacher (8 epochs), baseline and GID, one seed
    python tools/demo.py                             # every method with a demo config, seeds 0 1 2
    python tools/demo.py --methods FGD PGD --seeds 0 1 --work-dir work_dirs/demo_shapes

Suite ``shapes`` (detection): the RetinaNet R50 teacher (``configs/demo/bench/retinanet_r50_teacher.py``,
trained once, longer), the RetinaNet R18 student alone (``configs/demo/bench/retinanet_r18_student.py``)
and one student per registered 2D distiller with a demo config (``configs/demo/<method>_*_shapes.py``,
switched to the benchmark teacher and the 128-channel FPN/head), all on the benchmark data
(``data/shapes_bench/``: more, smaller, overlapping shapes, unlabelled look-alike clutter, colour
noise; 256 training and 256 validation images) with the same schedule and seeds. MasKD runs its
token stage first; Mimic (a Faster R-CNN method) has its own Faster R-CNN teacher and baseline
(the demo's 256-channel models). COCO bbox mAP from each run's final validation (mmdet's
``CocoMetric``, pycocotools).

Each run lives in ``<work-dir>/<row>/seed<k>/`` (``config.py``: the exact config, ``train.log``,
``result.json``); rerunning skips finished runs and resumes unfinished ones, the teacher is trained
once. At the end ``<work-dir>/table.md`` and ``table.png`` are written (also with ``--table-only``,
from whatever has finished).

Suite ``av`` (``--suite av``): the audio-visual demo (configs/av/demo/): a linear probe on the audio
embeddings (teacher row), the R(2+1)D video student alone, and KD, CRD, RKD, MNF+CSC students;
video top-1 (``VideoAccuracy``). A 3D (BEV) suite goes into ``SUITES`` the same way (rows, common
options, path substitutions).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Callable

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout

from kdtoolbox.experiments import (Row, format_table, load_results, loss_balance, plot_table,  # noqa: E402
                                   run_suite, summarize)

DEMO = osp.join(REPO, 'configs', 'demo')
BENCH = osp.join(DEMO, 'bench')
TRAIN = osp.join(REPO, 'tools', 'train.py')


# ------------------------------------------------------------------------------ schedules and data
def epoch_schedule(epochs: int, warmup_iters: int = 50) -> dict:
    """Options for an ``EpochBasedTrainLoop`` config of ``epochs`` epochs: linear warm-up, x0.1 at
    3/4 and 11/12 of the schedule (mmdet's 1x shape), validation and the only checkpoint at the end."""
    milestones = sorted({max(1, round(epochs * 3 / 4)), max(1, round(epochs * 11 / 12))})
    milestones = [m for m in milestones if m < epochs] or [epochs]
    return {'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
            'param_scheduler': [
                dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
                dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True, milestones=milestones,
                     gamma=0.1)],
            'default_hooks.checkpoint.interval': epochs}


def iter_schedule(iters: int) -> dict:
    """Options for an ``IterBasedTrainLoop`` stage of ``iters`` iterations (MasKD's tokens)."""
    return {'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
            'param_scheduler.0.T_max': iters, 'param_scheduler.0.end': iters,
            'default_hooks.checkpoint.interval': iters}


# The benchmark data: harder than the demo default (data/shapes/, 64 + 16 images of 1-4 large
# shapes), so that a bigger teacher has something to teach and the validation set is large enough
# for seed spread to be small next to the teacher-student gap. Generated at 256 px, trained and
# evaluated resized to BENCH_SCALE (192 px: 0.56x the compute of 256 px; objects 17-48 px, still
# matched by the stride-8 anchors).
BENCH_SHAPES = dict(num_train=256, num_val=256, img_size=256, seed=0, max_shapes=8)
BENCH_VARIANT = dict(min_size=0.09, max_size=0.25, min_visible=0.5, clutter=4, shape_noise=24,
                     min_saturation=0.35)
BENCH_SCALE = 192


def shapes_data_options(root: str, shapes_args: dict, variant: dict) -> dict:
    root = root.rstrip('/') + '/'
    opts = {'val_evaluator.ann_file': root + 'annotations/val.json',
            'test_evaluator.ann_file': root + 'annotations/val.json'}
    for loader in ('train', 'val', 'test'):
        opts[f'{loader}_dataloader.dataset.data_root'] = root
        opts.update({f'{loader}_dataloader.dataset.{k}': v for k, v in shapes_args.items()})
        opts[f'{loader}_dataloader.dataset.shapes_variant'] = dict(variant)
    return opts


def resize_transform(size: int) -> Callable[[dict], dict]:
    """A config rewrite: every ``Resize`` of the train/val/test pipelines scales to ``size`` px (the
    pipelines' positions differ between configs, so they are found by type, not by index)."""
    def transform(cfg: dict) -> dict:
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            pipeline = cfg.get(loader, {}).get('dataset', {}).get('pipeline', [])
            for step in pipeline:
                if isinstance(step, dict) and step.get('type') == 'Resize':
                    step['scale'] = (size, size)
        return cfg
    return transform


# ------------------------------------------------------------------------------ the shapes suite
# Student side of the 128-channel benchmark models, for the RetinaNet distillation demo configs
# (their student is retinanet_r18_shapes.py's model, their distiller takes the channel counts).
_STUDENT_128 = {'model.student.neck.out_channels': 128, 'model.student.bbox_head.in_channels': 128,
                'model.student.bbox_head.feat_channels': 128}
_DISTILLER_128 = {'model.distiller.student_channels': 128, 'model.distiller.teacher_channels': 128}

# method name -> (demo config, extra options, needs): the registered 2D distillers with a demo config.
RETINANET_METHODS = {
    'FitNet': ('fitnet_retinanet_shapes.py', _DISTILLER_128),
    'FGD': ('fgd_retinanet_shapes.py', _DISTILLER_128),
    'DeFeat': ('defeat_retinanet_shapes.py', _DISTILLER_128),
    'FGFI': ('fgfi_retinanet_shapes.py', _DISTILLER_128),
    'FRS': ('frs_retinanet_shapes.py', _DISTILLER_128),
    'GID': ('gid_retinanet_shapes.py', _DISTILLER_128),
    'PGD': ('pgd_retinanet_shapes.py', {}),  # no channel arguments: it needs equal channels
    'RM-PFI': ('rm_pfi_retinanet_shapes.py', _DISTILLER_128),
    'MasKD': ('maskd_retinanet_shapes.py', _DISTILLER_128),
}
FASTER_RCNN_METHODS = {'Mimic': ('mimic_faster_rcnn_shapes.py', {})}
# The demo configs that start the student's neck and head from the teacher's (the official
# inheriting strategy of FGD, PGD and MasKD): compared with the 'inherit' row, not the plain baseline.
INHERITING_METHODS = ('FGD', 'PGD', 'MasKD')


def shapes_suite(methods, epochs: int, teacher_epochs: int, token_iters: int, score_thr=None):
    """(rows, path substitutions) of the detection suite for ``methods``. ``score_thr``: the
    detectors' test score threshold, when not the configs' (a test's untrained models need a low one)."""
    student = epoch_schedule(epochs)
    rows = [Row('teacher', osp.join(BENCH, 'retinanet_r50_teacher.py'), role='teacher', seeded=False,
                options=epoch_schedule(teacher_epochs), baseline=None),
            Row('baseline', osp.join(BENCH, 'retinanet_r18_student.py'), role='baseline', options=student,
                baseline=None)]
    frcnn = [m for m in methods if m in FASTER_RCNN_METHODS]
    inheriting = [m for m in methods if m in INHERITING_METHODS]
    if inheriting:  # their students start from the teacher's neck and head: compare like with like
        rows.append(Row('inherit', osp.join(BENCH, 'retinanet_r18_inherit.py'), options=student,
                        needs=['teacher'], note="the baseline with FGD's inheriting strategy (neck and head "
                        f"initialised from the teacher), no loss: the reference of {', '.join(inheriting)}"))
    for name in methods:
        if name in RETINANET_METHODS:
            config, extra = RETINANET_METHODS[name]
            opts = {**student, **_STUDENT_128, **extra}
            needs = ['teacher']
            if name == 'MasKD':  # stage 1: the receptive tokens on the frozen teacher, trained once
                rows.append(Row('maskd_tokens', osp.join(DEMO, 'maskd_tokens_retinanet_shapes.py'),
                                role='stage', seeded=False, baseline=None, needs=['teacher'],
                                options={**iter_schedule(token_iters), 'model.channels': 128}))
                needs.append('maskd_tokens')
            rows.append(Row(name, osp.join(DEMO, config), options=opts, needs=needs,
                            baseline='inherit' if name in INHERITING_METHODS else 'baseline'))
    if frcnn:
        rows.append(Row('frcnn_teacher', osp.join(DEMO, 'faster_rcnn_r50_shapes_teacher.py'), role='teacher',
                        seeded=False, options=epoch_schedule(teacher_epochs), baseline=None))
        rows.append(Row('frcnn_baseline', osp.join(DEMO, 'faster_rcnn_r18_shapes.py'), role='baseline',
                        options=student, baseline=None))
        for name in frcnn:
            config, extra = FASTER_RCNN_METHODS[name]
            rows.append(Row(name, osp.join(DEMO, config), options={**student, **extra},
                            baseline='frcnn_baseline', needs=['frcnn_teacher']))
    unknown = [m for m in methods if m not in RETINANET_METHODS and m not in FASTER_RCNN_METHODS]
    if unknown:
        raise SystemExit(f'unknown method(s) {unknown}; known: '
                         f'{sorted(RETINANET_METHODS) + sorted(FASTER_RCNN_METHODS)}')
    if score_thr is not None:
        for row in rows:
            distilled = row.name in RETINANET_METHODS or row.name in FASTER_RCNN_METHODS
            prefix = 'model.student.' if distilled else 'model.'
            if row.role != 'stage':
                key = prefix + ('test_cfg.rcnn.score_thr' if 'frcnn' in row.name or row.name in FASTER_RCNN_METHODS
                                else 'test_cfg.score_thr')
                row.options = {**row.options, key: score_thr}
    # The demo configs name the demo teacher's config and work dirs: point them at this suite's.
    demo_teacher_cfg = osp.join(DEMO, 'retinanet_r50_shapes_teacher.py')
    substitutions = {
        demo_teacher_cfg: osp.join(BENCH, 'retinanet_r50_teacher.py'),
        'work_dirs/retinanet_r50_shapes_teacher/epoch_12.pth': '{ckpt:teacher}',
        'work_dirs/retinanet_r50_shapes_teacher': '{ckpt:teacher}',
        'work_dirs/maskd_tokens_retinanet_shapes': '{dir:maskd_tokens}',
    }
    if frcnn:
        substitutions.update({'work_dirs/faster_rcnn_r50_shapes_teacher/epoch_12.pth': '{ckpt:frcnn_teacher}',
                              'work_dirs/faster_rcnn_r50_shapes_teacher': '{ckpt:frcnn_teacher}'})
    return rows, substitutions


# ------------------------------------------------------------------------------ the audio-visual suite
AV_DEMO = osp.join(REPO, 'configs', 'av', 'demo')
# method -> demo config: audio (precomputed embeddings) -> video R(2+1)D student
AV_METHODS = {'KD': 'kd_r2plus1d_avdemo.py', 'CRD': 'crd_r2plus1d_avdemo.py', 'RKD': 'rkd_r2plus1d_avdemo.py',
              'MNF-CSC': 'mnfcsc_r2plus1d_avdemo.py'}


# The harder audio-visual variant (data/av_bench/): the demo data (data/av_demo/, pixel noise 30,
# grating amplitude 180) is separable at a glance (the unimodal student reached 100 % top-1), so
# the class signal is weakened (amplitude 50 under noise 70), more audio tracks are noisy (70 %),
# and the validation set is 4x larger (64 videos: one video is 1.6 points of top-1, not 6.25).
AV_BENCH_ROOT = 'data/av_bench/'
AV_BENCH_VARIANT = dict(visual_noise=70.0, visual_contrast=50.0, noisy_fraction=0.7, num_val=64)


def av_bench_transform(cfg: dict) -> dict:
    """Every ``generate=dict(...)`` of the config (train/val/test sets and the retrieval gallery in
    ``custom_hooks``) gets the harder variant, so they all agree on the folder's contents."""
    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get('generate'), dict):
                node['generate'] = {**node['generate'], **AV_BENCH_VARIANT}
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
    walk(cfg)
    return cfg


def av_suite(methods):
    """(rows, path substitutions) of the audio-visual suite: the teacher row is the linear probe on
    the audio embeddings (KD's soft targets come from it), the baseline the video student alone;
    every config keeps its own data (data/av_demo/) and schedule."""
    unknown = [m for m in methods if m not in AV_METHODS]
    if unknown:
        raise SystemExit(f'unknown method(s) {unknown}; known: {sorted(AV_METHODS)}')
    rows = [Row('teacher', osp.join(AV_DEMO, 'probe_embedding_avdemo.py'), role='teacher', seeded=False,
                baseline=None, note='a linear probe on the precomputed audio embeddings'),
            Row('baseline', osp.join(AV_DEMO, 'unimodal_r2plus1d_avdemo.py'), role='baseline', baseline=None)]
    rows += [Row(m, osp.join(AV_DEMO, AV_METHODS[m]), needs=['teacher'] if m == 'KD' else []) for m in methods]
    return rows, {'work_dirs/probe_embedding_avdemo/epoch_30.pth': '{ckpt:teacher}',
                  'data/av_demo/': AV_BENCH_ROOT}


def _shapes(methods, args):
    rows, subs = shapes_suite(methods, args.epochs, args.teacher_epochs, args.token_iters, args.score_thr)
    shapes_args = {**BENCH_SHAPES, 'num_train': args.num_train, 'num_val': args.num_val}
    header = (f'{args.num_val} generated validation images (`{args.data_root}`, {args.img_size} px), student '
              f'{args.epochs} epochs of {args.num_train} images, teacher {args.teacher_epochs} epochs')
    return (rows, shapes_data_options(args.data_root, shapes_args, BENCH_VARIANT), subs, header,
            resize_transform(args.img_size))


def _av(methods, args):
    rows, subs = av_suite(methods)
    return (rows, {}, subs, f'the harder generated audio-visual data ({AV_BENCH_ROOT}, {AV_BENCH_VARIANT}), '
            f'each config\'s schedule', av_bench_transform)


# ------------------------------------------------------------------------------ the LiDAR (3D) suite
BEV_DEMO = osp.join(REPO, 'configs', 'bev', 'demo')
# method -> demo config: CenterPoint voxel teacher (width 1) -> the same network at half width
BEV_METHODS = {'SparseKD': 'sparsekd_voxel_half_scenes.py',
               'SparseImitation': 'sparse_imitation_voxel_half_scenes.py'}
# The benchmark scenes (data/lidar_bench/): the demo's generator and 64 training scenes, 64 validation
# scenes instead of 16 (one scene's boxes move the demo's AP by several points).
BEV_BENCH_ROOT = 'data/lidar_bench/'
BEV_BENCH_VAL = 64


def bev_data_options(root: str, num_val: int) -> dict:
    opts = {}
    for loader in ('train', 'val', 'test'):  # they share the folder: the same generator arguments
        opts[f'{loader}_dataloader.dataset.data_root'] = root
        opts[f'{loader}_dataloader.dataset.num_val'] = num_val
    return opts


def cosine_epoch_schedule(epochs: int) -> dict:
    """Options for the LiDAR configs' schedule (linear warm-up, cosine over epochs) of ``epochs``."""
    return {'train_cfg.max_epochs': epochs, 'train_cfg.val_interval': epochs,
            'param_scheduler.1.T_max': epochs, 'param_scheduler.1.end': epochs,
            'default_hooks.checkpoint.interval': epochs}


# The LiDAR teacher trains 3x the students' 12 epochs: at 12 epochs the full-width CenterPoint was
# below its half-width student (measured: mAP@0.25 21.5 vs 27.5 and 41.8 for two student seeds).
BEV_TEACHER_EPOCHS = 36


def bev_suite(methods, teacher_epochs: int = BEV_TEACHER_EPOCHS):
    """(rows, path substitutions) of the LiDAR suite: the CenterPoint voxel teacher (``teacher_epochs``),
    its half-width student alone, and the half-width student with each method (the configs' 12 epochs)."""
    unknown = [m for m in methods if m not in BEV_METHODS]
    if unknown:
        raise SystemExit(f'unknown method(s) {unknown}; known: {sorted(BEV_METHODS)}')
    rows = [Row('teacher', osp.join(BEV_DEMO, 'centerpoint_voxel_scenes_teacher.py'), role='teacher',
                seeded=False, baseline=None, options=cosine_epoch_schedule(teacher_epochs)),
            Row('baseline', osp.join(BEV_DEMO, 'centerpoint_voxel_half_scenes.py'), role='baseline',
                baseline=None)]
    if 'SparseKD' in methods:  # its student starts from the teacher narrowed to its width (TGI)
        rows.append(Row('tgi', osp.join(BEV_DEMO, BEV_METHODS['SparseKD']), needs=['teacher'],
                        options={'model.distiller.hm_weight': 0.0, 'model.distiller.reg_weight': 0.0,
                                 'model.distiller.label_kd': False},
                        note="SparseKD's teacher-guided initialisation alone (its config, every KD loss "
                             "off): the reference of SparseKD"))
    rows += [Row(m, osp.join(BEV_DEMO, BEV_METHODS[m]), needs=['teacher'],
                 baseline='tgi' if m == 'SparseKD' else 'baseline') for m in methods]
    return rows, {'work_dirs/centerpoint_voxel_scenes_teacher': '{ckpt:teacher}'}


def _bev(methods, args):
    rows, subs = bev_suite(methods)
    return (rows, bev_data_options(BEV_BENCH_ROOT, BEV_BENCH_VAL), subs,
            f'{BEV_BENCH_VAL} generated LiDAR validation scenes ({BEV_BENCH_ROOT}), students 12 epochs of 64 '
            f'scenes (the configs\' schedule), teacher {BEV_TEACHER_EPOCHS} epochs', None)


AMP_BY_DEFAULT = {'shapes'}
QUICK_TEACHER_EPOCHS = 8

SUITES = {
    # name: (default methods, quick method, metric, table scale (100: a [0, 1] metric shown in %),
    #        builder(methods, args) -> rows, common options, substitutions, description, transform)
    'shapes': (list(RETINANET_METHODS) + list(FASTER_RCNN_METHODS), 'GID', 'coco/bbox_mAP', 100.0, _shapes),
    'av': (list(AV_METHODS), 'MNF-CSC', 'av/top1', 1.0, _av),
    'bev': (list(BEV_METHODS), 'SparseKD', 'mAP_0.25', 100.0, _bev),
}


# ------------------------------------------------------------------------------ command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--suite', default='shapes', choices=sorted(SUITES))
    p.add_argument('--quick', action='store_true',
                   help='teacher, baseline and one method (--methods; shapes: GID, bev: SparseKD, av: MNF-CSC), one '
                        'seed (--seeds, default 0); shapes: the teacher trains QUICK_TEACHER_EPOCHS (8, not 12) '
                        'epochs, in its own work dir (work_dirs/demo_shapes_quick)')
    p.add_argument('--methods', nargs='+', help='methods (rows) to train (default: all of the suite)')
    p.add_argument('--seeds', nargs='+', type=int, help='seeds (default: 0 1 2; --quick: 0)')
    p.add_argument('--work-dir', help='default: work_dirs/demo_<suite> (shapes --quick: work_dirs/demo_shapes_quick)')
    p.add_argument('--epochs', type=int, default=2, help='shapes: student schedule in epochs (default: 2)')
    p.add_argument('--teacher-epochs', type=int,
                   help=f'shapes: teacher schedule in epochs (default: 12; --quick: {QUICK_TEACHER_EPOCHS})')
    p.add_argument('--img-size', type=int, default=BENCH_SCALE,
                   help=f'shapes: training and test resize in px (default: {BENCH_SCALE})')
    p.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                   help='train with tools/train.py --amp (CPU: bf16 autocast, about 2x faster on CPUs with '
                        'AMX/AVX512-BF16; CUDA: fp16); --no-amp: fp32 (default: --amp for the shapes suite, '
                        'fp32 for the others: spconv and the AV models gain nothing from it on CPU)')
    p.add_argument('--token-iters', type=int, default=100, help="MasKD's token stage, iterations (default: 100)")
    p.add_argument('--data-root', default='data/shapes_bench/', help='benchmark data folder')
    p.add_argument('--num-train', type=int, default=BENCH_SHAPES['num_train'])
    p.add_argument('--num-val', type=int, default=BENCH_SHAPES['num_val'])
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra options for every run (a value is parsed as a Python literal when it is one)')
    p.add_argument('--score-thr', type=float, help="detectors' test score threshold (default: the configs' 0.05)")
    p.add_argument('--table-only', action='store_true', help='write the table from finished runs, train nothing')
    return p.parse_args(argv)


def _literal(text: str):
    import ast
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
            f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, load average {load:.1f} at the end')


def write_table(rows, results, work_dir: str, metric: str, header: str, scale: float = 100.0) -> str:
    entries = summarize(rows, results)
    table = format_table(entries, metric, scale)
    notes = [f'- {e["name"]}: {e["note"]}' for e in entries if e.get('note')]
    for row in rows:
        for seed_dir in sorted(glob.glob(osp.join(work_dir, row.name, 'seed*'))):
            failed = osp.join(seed_dir, 'failed.json')
            if osp.isfile(failed) and not osp.isfile(osp.join(seed_dir, 'result.json')):
                with open(failed) as f:
                    notes.append(f'- {row.name} ({osp.basename(seed_dir)}) FAILED: {json.load(f)["error"]}')
    for r in sorted(results, key=lambda r: (r['row'], r['seed'])):
        if r.get('resumed') and r['row'] in {e['name'] for e in entries}:
            notes.append(f'- {r["row"]} (seed {r["seed"]}): resumed from a checkpoint; its run time is that of '
                         f'the last attempt only')
    balance = []
    for e in entries:
        if e['role'] != 'method':
            continue
        ratios = [b[0] / b[1] for seed in e['seeds']
                  for b in [loss_balance(osp.join(work_dir, e['name'], f'seed{seed}'))] if b and b[1] > 0]
        if ratios:
            balance.append(f'{e["name"]} {sum(ratios) / len(ratios):.2g}x')
    if balance:  # how much of the objective the distillation terms are (explains some rows)
        notes.append('- distillation / task loss at the end of training (mean over seeds): ' + ', '.join(balance))
    teacher = next((e for e in entries if e['role'] == 'teacher'), None)
    base = next((e for e in entries if e['role'] == 'baseline'), None)
    if teacher and base:
        notes.insert(0, f'- teacher − baseline: {scale * (teacher["mean"] - base["mean"]):+.1f} points of {metric} (%)')
    text = header + '\n\n' + table + ('\n' + '\n'.join(notes) + '\n' if notes else '')
    with open(osp.join(work_dir, 'table.md'), 'w') as f:
        f.write(text)
    if entries:
        plot_table(entries, osp.join(work_dir, 'table.png'), metric, title=osp.basename(work_dir.rstrip('/')),
                   scale=scale)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    all_methods, quick_method, metric, scale, builder = SUITES[args.suite]
    methods = args.methods or ([quick_method] if args.quick else all_methods)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    # The detection quick mode must fit 15 minutes on 2 cores from nothing: its teacher trains 8
    # epochs instead of 12 (measured: 12 epochs alone take ~11.5 of them), so its runs are not the
    # full table's and get their own work dir. The other suites' quick rows are runs of their table.
    quick_shapes = args.quick and args.suite == 'shapes'
    if args.teacher_epochs is None:
        args.teacher_epochs = QUICK_TEACHER_EPOCHS if quick_shapes else 12
    suffix = '_quick' if quick_shapes and args.teacher_epochs != 12 else ''
    work_dir = args.work_dir or osp.join('work_dirs', f'demo_{args.suite}{suffix}')
    os.makedirs(work_dir, exist_ok=True)
    rows, common, substitutions, what, transform = builder(methods, args)
    amp = args.suite in AMP_BY_DEFAULT if args.amp is None else args.amp
    if amp:
        what += ', mixed precision (tools/train.py --amp)'
    for item in args.cfg_options:
        key, sep, value = item.partition('=')
        if not sep:
            raise SystemExit(f'--cfg-options: expected KEY=VALUE, got {item!r}')
        common[key] = _literal(value)
    command = ' '.join(['python tools/demo.py'] + [a for a in (argv if argv is not None else sys.argv[1:])
                                                   if a != '--table-only'])
    start = time.time()
    log_file = open(osp.join(work_dir, 'demo.log'), 'a')

    def log(msg: str) -> None:
        line = f'{datetime.datetime.now():%H:%M:%S} {msg}'
        print(line, flush=True)
        log_file.write(line + '\n')
        log_file.flush()

    log(f'suite {args.suite}: rows {[r.name for r in rows]}, seeds {seeds}, work dir {work_dir}')
    if not args.table_only:
        run_suite(rows, seeds, work_dir, common, substitutions, TRAIN, metric, log=log, transform=transform,
                  train_args=['--amp'] if amp else [])
    results = load_results(work_dir)
    ran = [r for r in results if r['row'] in {x.name for x in rows}]
    header = (f'Suite `{args.suite}`, {metric} on {what}. Reproduce: `{command}`. Machine: {_machine()}. '
              f'{len(ran)} runs, {sum(r["train_time_s"] for r in ran) / 60:.1f} min of wall time in all '
              f'(this invocation: {(time.time() - start) / 60:.1f} min).')
    text = write_table(rows, ran, work_dir, metric, header,
                       scale)
    log(f'wrote {osp.join(work_dir, "table.md")} and table.png')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
