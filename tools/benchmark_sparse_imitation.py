"""Time and peak memory of sparse feature imitation against densify-then-MSE, at a nuScenes-size grid.

    python tools/benchmark_sparse_imitation.py [--device cpu|cuda] [--repeats 5] [--channels 4]
        [--occupancy 0.05 0.10] [--batch 1] [--threads 1] [--variants sparse dense]

Setting (mmdet3d's CenterPoint voxel 0.1 on nuScenes): the grid of SparseEncoder's first stage,
``(D, H, W) = (41, 1024, 1024)``, batch 1 by default. A scan occupies a fraction ``--occupancy`` of
the 1024 x 1024 BEV columns (one voxel at a random height in each): 5 % is 52,429 voxels and 10 %
104,858, the range of real nuScenes sweeps after voxelisation (60k-190k, ``max_voxels`` 90k/120k).
Teacher and student each keep a different random 95 % of the scan (their ``max_voxels``
truncations), in different row orders, so about 90 % of the sites match. ``C`` channels per voxel
(16 at the first SparseEncoder stage; see --channels: the dense variant needs about 5 dense
``[B, C, 41, 1024, 1024]`` float32 tensors at its peak, 2.75 GB each at C = 16).

Variants, each one forward and backward pass (gradient to the student's features):
- sparse: ``gather_matched_features`` (key sort + searchsorted) then ``sparse_imitation_loss``;
- dense: both densified to ``[B, C, 41, 1024, 1024]`` (``sparse_to_dense``), occupancy masks, masked
  MSE over the cells active in both, normalised by ``M * C`` as the sparse loss.

Each variant runs in its own process (so memory is measured alone): 1 warm-up, then --repeats timed
runs; the figure is the median. Peak memory: CUDA ``max_memory_allocated`` above what the inputs
hold; CPU the peak resident set size above the one before the run (``VmHWM`` of /proc/self/status,
reset through /proc/self/clear_refs before each run; ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed
tensors leave the resident set), the largest over the timed runs. The loss and the student's gradient of the
warm-up run must agree between the variants (relative 1e-4), else the script stops before printing
any timing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kdtoolbox.ops.sparse_imitation import (SparseFeatures, gather_matched_features,  # noqa: E402
                                            sparse_imitation_loss, sparse_to_dense)

GRID = (41, 1024, 1024)
VARIANTS = ('sparse', 'dense')
KEEP = 0.95  # each model keeps this fraction of the scan's voxels (max_voxels truncation)


def make_inputs(occupancy, channels, batch, device, seed=0):
    """Teacher and student sparse tensors of one scan per sample (see the module docstring)."""
    D, H, W = GRID
    g = torch.Generator().manual_seed(seed)
    n = round(occupancy * H * W)
    sites = []
    for b in range(batch):
        cols = torch.randperm(H * W, generator=g)[:n]
        z = torch.randint(0, D, (n,), generator=g)
        sites.append(torch.stack([torch.full((n,), b), z, cols // W, cols % W], 1))
    sites = torch.cat(sites)
    keep = round(KEEP * len(sites))
    t_idx = sites[torch.randperm(len(sites), generator=g)[:keep]]
    s_idx = sites[torch.randperm(len(sites), generator=g)[:keep]]
    ft = torch.randn(keep, channels, generator=g)
    fs = torch.randn(keep, channels, generator=g)
    return (fs.to(device).requires_grad_(True), s_idx.int().to(device), ft.to(device), t_idx.int().to(device))


def run_sparse(fs, s_idx, ft, t_idx, batch):
    a, b, info = gather_matched_features(SparseFeatures(fs, s_idx, GRID, batch), SparseFeatures(ft, t_idx, GRID, batch))
    loss = sparse_imitation_loss(a, b)
    loss.backward()
    return loss, info['num_matched']


def run_dense(fs, s_idx, ft, t_idx, batch):
    ds = sparse_to_dense(fs, s_idx, GRID, batch)   # [B, C, D, H, W]
    dt = sparse_to_dense(ft, t_idx, GRID, batch)
    occ_s = torch.zeros((batch, *GRID), dtype=torch.bool, device=fs.device)
    occ_s[tuple(s_idx.long().T)] = True
    occ_t = torch.zeros_like(occ_s)
    occ_t[tuple(t_idx.long().T)] = True
    mask = (occ_s & occ_t)[:, None]
    num = mask.sum()
    loss = (((ds - dt) ** 2) * mask).sum() / (num * fs.shape[1])
    loss.backward()
    return loss, int(num)


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak_rss():
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets VmHWM to the current RSS (Linux >= 4.0)


def child(args):
    """One variant at one occupancy: prints one JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fs, s_idx, ft, t_idx = make_inputs(args.occ, args.channels, args.batch, device)
    fn = run_sparse if args.child == 'sparse' else run_dense
    cuda = device.type == 'cuda'
    times, peaks, result = [], [], {}
    for i in range(args.repeats + 1):
        fs.grad = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            base = _status_kb('VmRSS') * 1024
        t0 = time.perf_counter()
        loss, matched = fn(fs, s_idx, ft, t_idx, args.batch)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() if cuda else _status_kb('VmHWM') * 1024) - base
        if i == 0:  # warm-up: the values to compare
            g = fs.grad.double()
            result = dict(loss=loss.item(), grad_abs_sum=g.abs().sum().item(), grad_norm=g.norm().item(),
                          matched=matched, n_student=len(s_idx), n_teacher=len(t_idx))
        else:
            times.append(elapsed)
            peaks.append(peak)
        del loss
    result.update(variant=args.child, occupancy=args.occ, times=times, peak_bytes=max(peaks))
    print('RESULT ' + json.dumps(result), flush=True)


def machine(device):
    if device == 'cuda':
        return f'{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})'
    model = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            model = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{model}, {os.cpu_count()} cores'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--channels', type=int, default=4,
                        help='C per voxel (16 at SparseEncoder stage 1; 4 by default so the dense variant, '
                             '~5 x B*C*41*1024*1024*4 bytes at its peak, fits next to other jobs)')
    parser.add_argument('--occupancy', type=float, nargs='+', default=[0.05, 0.10],
                        help='fraction of the 1024 x 1024 BEV columns with a voxel')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (CPU)')
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=list(VARIANTS),
                        help='run only these (values are compared only when both run)')
    parser.add_argument('--child', choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument('--occ', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: CUDA is not available')

    print(f'machine: {machine(args.device)}; torch {torch.__version__}, {args.threads} thread(s); '
          f'grid {GRID}, batch {args.batch}, C={args.channels}, {args.repeats} repeats after 1 warm-up')
    rows = []
    for occ in args.occupancy:
        results = {}
        for variant in args.variants:
            cmd = [sys.executable, os.path.abspath(__file__), '--child', variant, '--occ', str(occ),
                   '--device', args.device, '--repeats', str(args.repeats), '--channels', str(args.channels),
                   '--batch', str(args.batch), '--threads', str(args.threads)]
            # a fixed mmap threshold: every allocation >= 64 KiB is mapped on allocation and unmapped on
            # free, so the resident set follows the live tensors (glibc's dynamic threshold would keep
            # freed buffers resident and hide the second run's allocations)
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', OMP_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
            if proc.returncode != 0 or not lines:
                results[variant] = None
                print(f'occupancy {occ:.0%} {variant}: failed (exit code {proc.returncode}; -9 is usually the '
                      f'out-of-memory killer)\n{proc.stderr[-1500:]}')
                continue
            results[variant] = json.loads(lines[-1][len('RESULT '):])
        rows.append((occ, results))
        s, d = results.get('sparse'), results.get('dense')
        if s and d:  # values must agree before any timing is reported
            for key in ('loss', 'grad_abs_sum', 'grad_norm'):
                if abs(s[key] - d[key]) > 1e-4 * max(abs(d[key]), 1e-12):
                    sys.exit(f'occupancy {occ}: {key} differs: sparse {s[key]!r} vs dense {d[key]!r}')
            if s['matched'] != d['matched']:
                sys.exit(f'occupancy {occ}: matched sites differ: sparse {s["matched"]} vs dense {d["matched"]}')
            print(f'occupancy {occ:.0%}: values equal (loss {s["loss"]:.6f}, |grad| sum {s["grad_abs_sum"]:.6f}, '
                  f'{s["matched"]} matched sites)')

    print()
    print('| occupancy | voxels (student / teacher / matched) | variant | time fwd+bwd (median) | peak memory | '
          'dense / sparse |')
    print('|---|---|---|---|---|---|')
    for occ, results in rows:
        s = results.get('sparse')
        for variant in args.variants:
            r = results.get(variant)
            if r is None:
                print(f'| {occ:.0%} | | {variant} | failed | | |')
                continue
            t = statistics.median(r['times'])
            ratio = ''
            if variant == 'dense' and s:
                ratio = (f'{t / statistics.median(s["times"]):.1f}x time, '
                         f'{r["peak_bytes"] / max(s["peak_bytes"], 1):.0f}x memory')
            print(f'| {occ:.0%} | {r["n_student"]:,} / {r["n_teacher"]:,} / {r["matched"]:,} | {variant} | '
                  f'{t * 1e3:.1f} ms | {r["peak_bytes"] / 2 ** 20:,.1f} MiB | {ratio} |')


if __name__ == '__main__':
    main()
