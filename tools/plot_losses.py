"""Loss curves of a training run: the student's task losses and each distillation term.

    python tools/plot_losses.py WORK_DIR [--out curves.png] [--keys loss_cls distill.fpn0.loss_fg ...]

Reads mmengine's scalar log (``WORK_DIR/<timestamp>/vis_data/scalars.json``, every run of the work
dir in time order, so a resumed run continues its curve) and draws two panels against the
iteration: the student's terms (``loss_*``) and the distillation terms (``distill.*``), plus the
total ``loss`` in the first. Writes a PNG (default ``WORK_DIR/loss_curves.png``).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict


def read_scalars(work_dir: str) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(iteration, value), ...]}`` of every loss-like training scalar in ``work_dir``."""
    paths = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not paths:
        raise FileNotFoundError(f'plot_losses: no */vis_data/scalars.json under {work_dir!r} '
                                f'(is it the work dir of a tools/train.py run?)')
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for path in paths:
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f'plot_losses: {path}:{line_no} is not JSON: {exc}') from exc
                if 'iter' not in record or 'loss' not in record:  # validation records
                    continue
                for key, value in record.items():
                    if 'loss' in key and isinstance(value, (int, float)):
                        series[key][int(record['iter'])] = float(value)  # a resumed run overwrites
    return {k: sorted(v.items()) for k, v in series.items()}


def split_terms(keys) -> tuple[list[str], list[str]]:
    """(student terms incl. the total ``loss``, distillation terms), each sorted."""
    distill = sorted(k for k in keys if k.startswith('distill.'))
    student = sorted(k for k in keys if not k.startswith('distill.'))
    return student, distill


def plot(series: dict, out: str, keys=None) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if keys:
        missing = [k for k in keys if k not in series]
        if missing:
            raise KeyError(f'plot_losses: no scalar {missing} in the log (have: {", ".join(sorted(series))})')
        series = {k: series[k] for k in keys}
    student, distill = split_terms(series)
    panels = [(title, names) for title, names in (('student', student), ('distillation', distill)) if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            its, values = zip(*series[name])
            ax.plot(its, values, label=name, linewidth=1.2)
        ax.set_title(f'{title} losses')
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', help='PNG path (default WORK_DIR/loss_curves.png)')
    parser.add_argument('--keys', nargs='+', help='only these scalars')
    args = parser.parse_args(argv)
    try:
        out = plot(read_scalars(args.work_dir), args.out or os.path.join(args.work_dir, 'loss_curves.png'),
                   args.keys)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(exc.args[0] if exc.args else exc, file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
