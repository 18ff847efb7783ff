"""Run a suite of training configs over seeds, collect their metrics, and tabulate them.

The method-agnostic part of ``tools/demo.py`` (the suites, which name configs and methods, live in
``tools/``/``configs/``). A suite is a list of :class:`Row`: a row name, a config, extra config
options, and its role (``teacher``, ``baseline``, ``method``, or ``stage``: a prerequisite such as a
token-learning stage, trained but not tabulated). :func:`run_suite` trains each row once per seed
(``seeded=False`` rows once, seed 0), one run at a time, each through ``tools/train.py`` in a
subprocess, in ``<work_dir>/<row>/seed<k>/``:

- ``config.py``: the exact config of the run (the suite's common options, the row's options, the
  seed and the path substitutions applied): ``python tools/train.py <run>/config.py`` repeats it;
- ``train.log``: the training output;
- ``result.json``: written when the run has finished: the row, seed, config, the final
  validation's metrics (the config's evaluator, e.g. mmdet's ``CocoMetric`` with pycocotools), the
  wall time and the checkpoint.

It is resumable: a run with a ``result.json`` is skipped, an unfinished one resumes from its last
checkpoint (``tools/train.py --resume``). Path placeholders in option values and substitutions,
``{ckpt:<row>}`` (the last checkpoint of that row's seed-0 run) and ``{dir:<row>}`` (its run
folder), tie a row to an earlier one (a student to the teacher), so the teacher is trained once
and reused.

:func:`summarize` turns the results into one entry per tabulated row (mean, sample standard
deviation over seeds, per-seed values, delta to the row's baseline); :func:`format_table` writes
them as markdown and :func:`plot_table` as a bar chart with error bars.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

__all__ = ['Row', 'run_suite', 'run_one', 'load_results', 'summarize', 'format_table', 'plot_table',
           'final_metrics', 'loss_balance']

ROLES = ('teacher', 'baseline', 'method', 'stage')
_PLACEHOLDER = re.compile(r'\{(ckpt|dir):([\w.-]+)\}')


@dataclass
class Row:
    """One row of a suite.

    Args:
        name: the row's name (a folder name: letters, digits, ``_.-``).
        config: the config file.
        role: ``teacher``, ``baseline``, ``method`` or ``stage`` (trained, not tabulated).
        options: config overrides, ``{'dotted.key': value}`` (mmengine ``merge_from_dict``); string
            values may hold ``{ckpt:<row>}``/``{dir:<row>}`` placeholders.
        seeded: trained once per seed; False: once (seed 0), e.g. the teacher.
        baseline: the row this one is compared with (its delta); None for none.
        needs: rows that must have finished first (besides those named by placeholders).
        note: a line for the table's notes (why a row is set up the way it is).
    """
    name: str
    config: str
    role: str = 'method'
    options: dict = field(default_factory=dict)
    seeded: bool = True
    baseline: Optional[str] = 'baseline'
    needs: Sequence[str] = ()
    note: str = ''

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f'row {self.name!r}: role must be one of {ROLES}, got {self.role!r}')
        if not re.fullmatch(r'[\w.-]+', self.name):
            raise ValueError(f'row name {self.name!r}: only letters, digits and _.- are allowed')


# ------------------------------------------------------------------------------ one run
def run_dir(work_dir: str, row: Row, seed: int) -> str:
    return osp.join(work_dir, row.name, f'seed{seed if row.seeded else 0}')


def _last_checkpoint(folder: str) -> Optional[str]:
    """The checkpoint named in mmengine's ``last_checkpoint`` file of ``folder``, if it exists."""
    marker = osp.join(folder, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    if path and not osp.isabs(path) and not osp.isfile(path):
        path = osp.join(folder, osp.basename(path))
    return path if path and osp.isfile(path) else None


def _resolve(value: Any, lookup: Callable[[str, str], str]) -> Any:
    """``value`` with every ``{ckpt:row}``/``{dir:row}`` in its strings replaced (recursively)."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: lookup(m.group(1), m.group(2)), value)
    if isinstance(value, dict):
        return {k: _resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, lookup) for v in value)
    return value


def _substitute(node: Any, table: dict) -> Any:
    """Replace every string leaf of a config node equal to a key of ``table`` by its value."""
    if isinstance(node, str):
        return table.get(node, node)
    if isinstance(node, dict):
        for k in list(node.keys()):
            node[k] = _substitute(node[k], table)
        return node
    if isinstance(node, list):
        return [_substitute(v, table) for v in node]
    if isinstance(node, tuple):
        return tuple(_substitute(v, table) for v in node)
    return node


def _strings(node: Any) -> Iterable[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)


def referenced_rows(row: Row, common: dict, substitutions: dict) -> list[str]:
    """Rows whose outputs ``row`` reads (placeholders in its options and the common ones, plus
    ``needs``)."""
    names = list(row.needs)
    # (the substitutions' placeholders count only for rows whose config holds the replaced string,
    # which is known after loading it: the suite names those in ``needs``)
    text = json.dumps([row.options, common], default=str)
    names += [m.group(2) for m in _PLACEHOLDER.finditer(text)]
    return list(dict.fromkeys(n for n in names if n != row.name))


def build_run_config(row: Row, seed: int, folder: str, common: dict, substitutions: dict,
                     lookup: Callable[[str, str], str], transform: Optional[Callable[[dict], dict]] = None):
    """The mmengine ``Config`` of one run: the row's config, ``common`` then ``row.options`` merged,
    ``randomness.seed``, the path ``substitutions`` (old string -> new) applied, then ``transform``
    (the suite's own rewrite of the config dict, for what dotted keys cannot reach), ``work_dir``."""
    from mmengine.config import Config
    if not osp.isfile(row.config):
        raise FileNotFoundError(f'row {row.name!r}: config {row.config} not found')
    cfg = Config.fromfile(row.config)
    cfg.merge_from_dict(_resolve(dict(common), lookup))
    cfg.merge_from_dict(_resolve(dict(row.options), lookup))
    cfg.merge_from_dict({'randomness.seed': seed})
    plain = cfg.to_dict()
    present = set(_strings(plain))
    # only the substitutions whose old string the config holds (a row that does not read the
    # teacher's checkpoint must not need it to exist)
    table = {k: _resolve(v, lookup) for k, v in substitutions.items() if k in present}
    if table:
        plain = _substitute(plain, table)
    if transform is not None:
        plain = transform(plain)
    if table or transform is not None:
        cfg = Config(plain, filename=cfg.filename)
    cfg.work_dir = folder
    return cfg


def _scalar_lines(folder: str) -> Iterable[dict]:
    """The lines of mmengine's ``<stamp>/vis_data/scalars.json`` under ``folder``, oldest run first
    (a resumed run logs into a new stamp); unreadable lines are skipped."""
    for stamp in sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d, 'vis_data'))):
        path = osp.join(folder, stamp, 'vis_data', 'scalars.json')
        if not osp.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def final_metrics(folder: str, metric: Optional[str] = None) -> Optional[dict]:
    """The metrics of the last validation logged under ``folder`` (mmengine's ``vis_data/scalars.json``
    lines that hold ``metric``, or, without one, a metric-looking key: a ``/`` in a key other than the
    loss/time ones), or None."""
    last = None
    for entry in _scalar_lines(folder):
        if 'loss' in entry or 'lr' in entry:
            continue
        if (metric in entry) if metric else any('/' in k for k in entry):
            last = entry
    return last


def loss_balance(folder: str) -> Optional[tuple[float, float]]:
    """(distillation, task) loss of the last training line logged under ``folder``: the sums of the
    ``distill.*`` keys and of the other ``loss*`` keys (not the total ``loss``), or None when the run
    logged no distillation term. Read from mmengine's ``vis_data/scalars.json``."""
    last = None
    for entry in _scalar_lines(folder):
        if 'loss' in entry:
            last = entry
    if last is None:
        return None
    distill = sum(v for k, v in last.items() if k.startswith('distill.') and 'loss' in k.rsplit('.', 1)[-1])
    task = sum(v for k, v in last.items() if not k.startswith('distill.') and k != 'loss'
               and 'loss' in k.rsplit('.', 1)[-1])
    has_distill = any(k.startswith('distill.') for k in last)
    return (float(distill), float(task)) if has_distill else None


def run_one(row: Row, seed: int, work_dir: str, common: dict, substitutions: dict,
            train_script: str, metric: str, log: Callable[[str], None] = print,
            env: Optional[dict] = None, transform: Optional[Callable[[dict], dict]] = None,
            train_args: Sequence[str] = ()) -> dict:
    """Train one run (skipped when its ``result.json`` exists) and return its result dict.
    ``train_args``: extra arguments of the training script (e.g. ``--amp``)."""
    folder = run_dir(work_dir, row, seed)
    result_file = osp.join(folder, 'result.json')
    if osp.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(folder, exist_ok=True)
    # Another invocation on the same work dir may be training this run (two suites sharing the
    # teacher, or a second process for other seeds): wait for its result instead of training over it.
    while not _take_lock(folder):
        log(f'[{row.name} seed {seed}] being trained by another process (pid in {_LOCK}): waiting')
        while _lock_holder(folder) is not None and not osp.isfile(result_file):
            time.sleep(_POLL_S)
        if osp.isfile(result_file):
            with open(result_file) as f:
                return json.load(f)
    try:
        return _train_one(row, seed, folder, work_dir, common, substitutions, train_script, metric, log,
                          env, transform, train_args)
    finally:
        _release_lock(folder)


_LOCK = 'running.pid'
_POLL_S = 10.0  # how often a waiting invocation looks again


def _lock_holder(folder: str) -> Optional[int]:
    """The pid of the live process holding ``folder``'s run lock, or None."""
    try:
        with open(osp.join(folder, _LOCK)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # its holder died: the lock is stale
    except PermissionError:
        pass
    return pid


def _take_lock(folder: str) -> bool:
    """Create ``folder``'s run lock for this process (atomically); False when a live process holds it."""
    path = osp.join(folder, _LOCK)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_holder(folder) is not None:
                return False
            os.remove(path)  # stale: take it over
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(str(os.getpid()))
        return True
    return False


def _release_lock(folder: str) -> None:
    try:
        os.remove(osp.join(folder, _LOCK))
    except OSError:
        pass


def _train_one(row: Row, seed: int, folder: str, work_dir: str, common: dict, substitutions: dict,
               train_script: str, metric: str, log: Callable[[str], None], env: Optional[dict],
               transform: Optional[Callable[[dict], dict]], train_args: Sequence[str]) -> dict:
    result_file = osp.join(folder, 'result.json')

    def lookup(kind: str, name: str) -> str:
        other = osp.join(work_dir, name, 'seed0')
        if kind == 'dir':
            return other
        ckpt = _last_checkpoint(other)
        if ckpt is None:
            raise FileNotFoundError(f'row {row.name!r} needs the checkpoint of row {name!r}, but '
                                    f'{other} has none (train {name!r} first)')
        return ckpt

    cfg = build_run_config(row, seed, folder, common, substitutions, lookup, transform)
    config_file = osp.join(folder, 'config.py')
    cfg.dump(config_file)
    cmd = [sys.executable, train_script, config_file, '--work-dir', folder, *train_args]
    resumed = _last_checkpoint(folder)
    if resumed:
        cmd.append('--resume')
    log(f'[{row.name} seed {seed}] training{" (resuming " + resumed + ")" if resumed else ""}: '
        f'log {osp.join(folder, "train.log")}')
    start, cpu_start = time.time(), _children_cpu()
    with open(osp.join(folder, 'train.log'), 'a') as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed, cpu = time.time() - start, _children_cpu() - cpu_start
    if proc.returncode != 0:
        raise RuntimeError(f'row {row.name!r} seed {seed}: tools/train.py exited with {proc.returncode}; '
                           f'see {osp.join(folder, "train.log")}')
    metrics = final_metrics(folder, metric) or {}
    result = {'row': row.name, 'role': row.role, 'seed': seed, 'config': row.config,
              'run_config': config_file, 'train_args': list(train_args),
              'metrics': {k: v for k, v in metrics.items() if k not in ('data_time', 'time', 'step')},
              'metric': metric, 'train_time_s': round(elapsed, 1),  # of the last attempt if resumed
              'cpu_time_s': round(cpu, 1),  # user + system: less sensitive to other load than wall time
              'resumed': bool(resumed),
              'checkpoint': _last_checkpoint(folder)}
    if metric in result['metrics']:
        result['value'] = float(result['metrics'][metric])
    else:
        # mmdet's CocoMetric reports nothing when there is no detection at all; pycocotools scores
        # an empty detection set 0.0, which is what the run is worth.
        result['value'] = 0.0
        result['note'] = f'no {metric} logged (no detections): counted as 0.0'
    _atomic_json(result_file, result)
    log(f'[{row.name} seed {seed}] {metric} = {result["value"]:.4f} ({elapsed:.0f} s)')
    return result


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children."""
    try:
        import resource
    except ImportError:  # pragma: no cover (not Unix)
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _atomic_json(path: str, obj: Any) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ the suite
def run_suite(rows: Sequence[Row], seeds: Sequence[int], work_dir: str, common: dict,
              substitutions: dict, train_script: str, metric: str,
              log: Callable[[str], None] = print, env: Optional[dict] = None,
              keep_going: bool = True, transform: Optional[Callable[[dict], dict]] = None,
              train_args: Sequence[str] = ()) -> list[dict]:
    """Train every row for every seed (rows a row depends on first), one run at a time; return the
    results of all runs (finished ones read back from their ``result.json``). With ``keep_going``
    a run that fails is logged and written to its ``failed.json``, and the row skipped from then on
    (rows that need it fail in turn); otherwise the error propagates."""
    by_name = {r.name: r for r in rows}
    if len(by_name) != len(rows):
        raise ValueError('row names must be unique')
    order: list[Row] = []

    def visit(row: Row, stack: tuple = ()) -> None:
        if row in order:
            return
        if row.name in stack:
            raise ValueError(f'rows depend on each other in a cycle: {" -> ".join(stack + (row.name,))}')
        for name in referenced_rows(row, common, substitutions):
            if name not in by_name:
                raise KeyError(f'row {row.name!r} refers to row {name!r}, which is not in the suite')
            visit(by_name[name], stack + (row.name,))
        order.append(row)

    for row in rows:
        visit(row)
    results, failed = [], set()
    # Seed by seed (all rows of seed 0 first): a partial table is a complete one for fewer seeds.
    for seed in seeds:
        for row in order:
            if not row.seeded and seed != seeds[0]:
                continue
            if row.name in failed:
                continue
            try:
                results.append(run_one(row, seed if row.seeded else 0, work_dir, common, substitutions,
                                       train_script, metric, log, env, transform, train_args))
            except (RuntimeError, FileNotFoundError) as exc:
                if not keep_going:
                    raise
                # one broken row must not cost the rest of a long suite: note it, go on
                failed.add(row.name)
                log(f'[{row.name} seed {seed}] FAILED: {exc}')
                _atomic_json(osp.join(run_dir(work_dir, row, seed), 'failed.json'),
                             {'row': row.name, 'seed': seed, 'error': str(exc)})
    return results


def load_results(work_dir: str) -> list[dict]:
    """Every ``result.json`` under ``work_dir/<row>/seed<k>/``."""
    out = []
    if not osp.isdir(work_dir):
        return out
    for name in sorted(os.listdir(work_dir)):
        folder = osp.join(work_dir, name)
        if not osp.isdir(folder):
            continue
        for sub in sorted(os.listdir(folder)):
            path = osp.join(folder, sub, 'result.json')
            if sub.startswith('seed') and osp.isfile(path):
                with open(path) as f:
                    out.append(json.load(f))
    return out


# ------------------------------------------------------------------------------ the table
def _mean_std(values: Sequence[float]) -> tuple[float, Optional[float]]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: Sequence[Row], results: Iterable[dict]) -> list[dict]:
    """One entry per tabulated row that has results, in suite order: ``name``, ``role``, ``config``,
    ``seeds``, ``values`` (per seed), ``mean``, ``std`` (sample std, None for one seed),
    ``time_s`` (mean run time), ``baseline``, ``delta`` (mean minus the baseline's mean) and
    ``verdict`` (``above``/``below``: the delta exceeds the spread, ``within spread`` otherwise)."""
    by_row: dict[str, list[dict]] = {}
    for r in results:
        by_row.setdefault(r['row'], []).append(r)
    entries = {}
    for row in rows:
        if row.role == 'stage' or row.name not in by_row:
            continue
        runs = sorted(by_row[row.name], key=lambda r: r['seed'])
        values = [r['value'] for r in runs]
        mean, std = _mean_std(values)
        entries[row.name] = dict(name=row.name, role=row.role, config=row.config, note=row.note,
                                 seeds=[r['seed'] for r in runs], values=values, mean=mean, std=std,
                                 time_s=sum(r['train_time_s'] for r in runs) / len(runs),
                                 cpu_s=sum(r.get('cpu_time_s', 0.0) for r in runs) / len(runs),
                                 baseline=row.baseline if row.role == 'method' else None,
                                 delta=None, verdict='')
    for e in entries.values():
        base = entries.get(e['baseline']) if e['baseline'] else None
        if base is None:
            continue
        e['delta'] = e['mean'] - base['mean']
        # the spread of a difference of two means over n and m seeds
        if e['std'] is None or base['std'] is None:
            e['verdict'] = 'one seed'
            continue
        spread = math.sqrt(e['std'] ** 2 / len(e['values']) + base['std'] ** 2 / len(base['values']))
        e['spread'] = spread
        e['verdict'] = ('above' if e['delta'] > 2 * spread else 'below' if e['delta'] < -2 * spread
                        else 'within spread')
    return list(entries.values())


def _short(path: str) -> str:
    """``path`` relative to the working directory when inside it (the table reads in a checkout)."""
    rel = osp.relpath(path) if osp.isabs(path) else path
    return path if rel.startswith('..') else rel


def _pct(v: Optional[float], scale: float = 100.0) -> str:
    return '–' if v is None else f'{scale * v:.1f}'


def format_table(entries: Sequence[dict], metric: str = 'coco/bbox_mAP', scale: float = 100.0) -> str:
    """A markdown table of :func:`summarize`'s entries, values times ``scale`` (100: a metric in
    [0, 1] such as COCO mAP shown in percent; 1: a metric already in percent)."""
    lines = [f'| row | config | {metric} (%) mean ± std | per seed | Δ vs baseline | vs baseline | '
             f'run time (min, wall / CPU) |',
             '|---|---|---|---|---|---|---|']
    for e in entries:
        ms = _pct(e['mean'], scale) + ('' if e['std'] is None else f' ± {_pct(e["std"], scale)}')
        per_seed = ', '.join(f'{_pct(v, scale)}' for v in e['values'])
        delta = '' if e['delta'] is None else f'{scale * e["delta"]:+.1f}'
        if delta and e['baseline'] != 'baseline':  # a row compared with another reference names it
            delta += f' (vs {e["baseline"]})'
        lines.append(f'| {e["name"]} | `{_short(e["config"])}` | {ms} | {per_seed} (seeds '
                     f'{",".join(map(str, e["seeds"]))}) | {delta} | {e["verdict"]} | '
                     f'{e["time_s"] / 60:.1f} / {e["cpu_s"] / 60:.1f} |')
    return '\n'.join(lines) + '\n'


def plot_table(entries: Sequence[dict], path: str, metric: str = 'coco/bbox_mAP', title: str = '',
               scale: float = 100.0) -> None:
    """A bar chart of the entries' means (times ``scale``, as in :func:`format_table`) with
    sample-std error bars; the first baseline's mean as a dashed line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    colours = {'teacher': '#4c72b0', 'baseline': '#8c8c8c', 'method': '#dd8452'}
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(entries) + 1.5), 3.6))
    xs = range(len(entries))
    means = [scale * e['mean'] for e in entries]
    errs = [0 if e['std'] is None else scale * e['std'] for e in entries]
    ax.bar(xs, means, yerr=errs, capsize=3, color=[colours[e['role']] for e in entries])
    for x, e in zip(xs, entries):
        ax.plot([x] * len(e['values']), [scale * v for v in e['values']], 'k.', markersize=3)
    base = next((e for e in entries if e['role'] == 'baseline'), None)
    if base is not None:
        ax.axhline(scale * base['mean'], color='k', linestyle='--', linewidth=0.8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([e['name'] for e in entries], rotation=35, ha='right')
    ax.set_ylabel(f'{metric} (%)')
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
