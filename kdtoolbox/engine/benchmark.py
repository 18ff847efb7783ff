"""What distillation costs on top of training the student: timings and peak memory of one
training step, for any DistillationModel config (``tools/benchmark.py`` prints them).

Three variants of a training step on the same preprocessed batch, model and optimizer:

1. ``student``: the student's own step (preprocess, ``student.loss()``, backward, update);
2. ``student + teacher``: the lower bound of any distillation step: (1) plus the teacher's
   forward up to its recorded modules, no distillation loss;
3. ``distillation``: ``DistillationModel.train_step`` (teacher, student with recorders, distiller
   losses in fp32, backward through both, update).

Each is timed ``repeats`` times after ``warmup`` runs, the variants taking turns within a repeat
(so a slow spell of a shared machine hits all of them); the median is reported. Peak memory is
the peak of tensor memory allocated during one step above what was allocated before it (weights,
optimizer state): ``torch.cuda.max_memory_allocated`` on CUDA, the CPU allocator's events of
``torch.profiler`` (``profile_memory=True``, a separate untimed run) on CPU.

A fourth, instrumented run of (3) splits it: preprocessing, teacher forward, student forward,
distiller forward, backward + optimizer step; and the teacher forward is also timed without
truncation (the whole model in its forward mode) to show what truncation saves.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from mmengine.config import Config, DictAction

VARIANTS = ('student', 'student + teacher', 'distillation')


@dataclass
class BenchmarkResult:
    """Median seconds and peak bytes per variant, and the split of the distillation step."""
    times: dict = field(default_factory=dict)        # variant -> list of seconds
    peak_bytes: dict = field(default_factory=dict)   # variant -> bytes (None when not measured)
    split: dict = field(default_factory=dict)        # component -> list of seconds
    teacher: dict = field(default_factory=dict)      # 'truncated' / 'full' -> list of seconds
    stop_modules: list = field(default_factory=list)

    def median(self, variant: str) -> float:
        return statistics.median(self.times[variant])


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


def student_step(model, batch: dict, optim_wrapper) -> None:
    """Variant 1: the student's own training step (its preprocessor, loss, backward, update)."""
    with optim_wrapper.optim_context(model):
        data = model.data_preprocessor(batch, True)
        losses = model.student.loss(data['inputs'], data['data_samples'])
    parsed, _ = model.parse_losses(losses)
    optim_wrapper.update_params(parsed)


def student_teacher_step(model, batch: dict, optim_wrapper) -> None:
    """Variant 2: the student's step plus the (truncated) teacher forward; no distillation loss."""
    with optim_wrapper.optim_context(model):
        data = model.preprocess(batch, True)
        teacher_batch = data.get('teacher_batch') or data
        model.teacher_runner(teacher_batch['inputs'], teacher_batch.get('data_samples'))
        model.teacher_runner.recorder.clear()
        losses = model.student.loss(data['inputs'], data['data_samples'])
    parsed, _ = model.parse_losses(losses)
    optim_wrapper.update_params(parsed)


def distillation_step(model, batch: dict, optim_wrapper) -> None:
    """Variant 3: the full distillation step (``DistillationModel.train_step``)."""
    model.train_step(batch, optim_wrapper)


STEPS: dict[str, Callable] = {'student': student_step, 'student + teacher': student_teacher_step,
                              'distillation': distillation_step}


def peak_step_bytes(step: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak tensor bytes allocated during ``step()`` above the level before it."""
    if device.type == 'cuda':
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if device.type != 'cpu':
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU)
    level = peak = 0
    for _, nbytes in events:
        level += nbytes
        peak = max(peak, level)
    return peak


class _TimedTeacher:
    """Stands in for ``model.teacher_runner`` and notes when each call starts and ends."""

    def __init__(self, runner, device, marks: dict):
        self._runner, self._device, self._marks = runner, device, marks

    def __call__(self, *args, **kwargs):
        self._marks['teacher_start'] = _clock(self._device)
        records = self._runner(*args, **kwargs)
        self._marks['teacher_end'] = _clock(self._device)
        return records

    def __getattr__(self, name):
        return getattr(self._runner, name)


@contextmanager
def instrumented(model, device: torch.device, marks: dict):
    """Note the times of the teacher call and the distiller's forward inside a distillation step."""
    runner = model.teacher_runner
    object.__setattr__(model, 'teacher_runner', _TimedTeacher(runner, device, marks))
    handles = [model.distiller.register_forward_pre_hook(
                   lambda *a: marks.__setitem__('distiller_start', _clock(device))),
               model.distiller.register_forward_hook(
                   lambda *a: marks.__setitem__('distiller_end', _clock(device)))]
    try:
        yield
    finally:
        object.__setattr__(model, 'teacher_runner', runner)
        for handle in handles:
            handle.remove()


def split_distillation_step(model, batch: dict, optim_wrapper, device: torch.device) -> dict:
    """Seconds of each part of one distillation step (instrumented: synchronises on CUDA)."""
    marks: dict = {}
    with instrumented(model, device, marks):
        start = _clock(device)
        distillation_step(model, batch, optim_wrapper)
        end = _clock(device)
    return {'preprocess': marks['teacher_start'] - start,
            'teacher forward': marks['teacher_end'] - marks['teacher_start'],
            'student forward (loss)': marks['distiller_start'] - marks['teacher_end'],
            'distiller forward (losses, fp32)': marks['distiller_end'] - marks['distiller_start'],
            'backward + optimizer step': end - marks['distiller_end']}


def teacher_forward(model, batch: dict, truncate: bool) -> None:
    """The teacher's forward alone on the preprocessed batch, truncated or whole."""
    data = model.preprocess(batch, True)
    teacher_batch = data.get('teacher_batch') or data
    runner = model.teacher_runner
    old = runner.truncate
    runner.truncate = truncate
    try:
        runner(teacher_batch['inputs'], teacher_batch.get('data_samples'))
    finally:
        runner.truncate = old
        runner.recorder.clear()


def run_benchmark(model, batch: dict, optim_wrapper, device: torch.device, warmup: int = 2,
                  repeats: int = 5, memory: bool = True, log: Callable[[str], None] = lambda s: None
                  ) -> BenchmarkResult:
    """Time the three variants, the split of the distillation step and the teacher forward.

    ``model``: a DistillationModel on ``device`` in train mode; ``batch``: one collated batch from
    the training data loader (the same batch every time: data loading is not timed).
    """
    result = BenchmarkResult(times={v: [] for v in VARIANTS}, stop_modules=list(model.teacher_runner.stop_modules))
    for i in range(warmup):
        for variant in VARIANTS:
            STEPS[variant](model, batch, optim_wrapper)
        log(f'warm-up {i + 1}/{warmup} done')
    for i in range(repeats):
        for variant in VARIANTS:
            start = _clock(device)
            STEPS[variant](model, batch, optim_wrapper)
            result.times[variant].append(_clock(device) - start)
        log(f'repeat {i + 1}/{repeats}: ' + ', '.join(f'{v} {result.times[v][-1]:.3f} s' for v in VARIANTS))
    for i in range(repeats):
        for part, seconds in split_distillation_step(model, batch, optim_wrapper, device).items():
            result.split.setdefault(part, []).append(seconds)
        for name, truncate in (('truncated', True), ('full', False)):
            with torch.no_grad():
                start = _clock(device)
                teacher_forward(model, batch, truncate)
                result.teacher.setdefault(name, []).append(_clock(device) - start)
    for variant in VARIANTS:
        result.peak_bytes[variant] = (peak_step_bytes(lambda: STEPS[variant](model, batch, optim_wrapper), device)
                                      if memory else None)
    return result


def format_result(result: BenchmarkResult, header: str = '') -> str:
    """The tables that tools/benchmark.py prints."""
    med = {v: result.median(v) for v in VARIANTS}

    def mib(v):
        b = result.peak_bytes.get(v)
        return '       n/a' if b is None else f'{b / 2 ** 20:10.1f}'
    n = len(result.times[VARIANTS[0]])
    lines = [header] if header else []
    lines += [f'median of {n} repeats; peak = tensor memory allocated during one step above the level before it',
              f"{'variant':<34}| {'median ms':>10} | {'min ms':>10} | {'peak MiB':>10}",
              '-' * 74]
    for i, v in enumerate(VARIANTS, 1):
        lines.append(f'{f"{i}. {v}":<34}| {med[v] * 1e3:10.1f} | {min(result.times[v]) * 1e3:10.1f} | {mib(v)}')
    low = {v: min(result.times[v]) for v in VARIANTS}
    lines += ['-' * 74,
              f'ratio 3/2 (distillation overhead over the lower bound): {med[VARIANTS[2]] / med[VARIANTS[1]]:.3f}'
              f'  ({(med[VARIANTS[2]] / med[VARIANTS[1]] - 1) * 100:+.1f} %; goal: within +5 %)'
              f'  | of the minima: {low[VARIANTS[2]] / low[VARIANTS[1]]:.3f}',
              f'ratio 3/1 (distillation step over the student alone):    {med[VARIANTS[2]] / med[VARIANTS[0]]:.3f}'
              f'  | of the minima: {low[VARIANTS[2]] / low[VARIANTS[0]]:.3f}',
              f'distillation losses fwd+bwd (3 - 2):                     '
              f'{(med[VARIANTS[2]] - med[VARIANTS[1]]) * 1e3:.1f} ms',
              '',
              f"{f'split of step 3 (instrumented, median of {n})':<48}| {'median ms':>10} | share",
              '-' * 74]
    total = sum(statistics.median(v) for v in result.split.values())
    for part, values in result.split.items():
        m = statistics.median(values)
        lines.append(f'{part:<48}| {m * 1e3:10.1f} | {m / total * 100:4.1f} %')
    stops = ', '.join(result.stop_modules) or 'no truncation'
    t, f = statistics.median(result.teacher['truncated']), statistics.median(result.teacher['full'])
    lines += ['-' * 74,
              f'teacher forward alone, truncated after [{stops}]: {t * 1e3:.1f} ms; whole model: {f * 1e3:.1f} ms '
              f'(truncation saves {(1 - t / f) * 100:.1f} %)']
    return '\n'.join(lines)


# --- the command line (tools/benchmark.py, kdtoolbox benchmark) ------------------------------
def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The options of ``tools/benchmark.py`` / ``kdtoolbox benchmark``."""
    p = argparse.ArgumentParser(prog=prog, description='Time a distillation step against the student alone')
    p.add_argument('config')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, help='torch intra-op threads (1 gives steadier CPU figures)')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--random-teacher', action='store_true', help='model.teacher_checkpoint=None')
    p.add_argument('--data-from', help="use this config's train_dataloader")
    p.add_argument('--batch-size', type=int, help='train_dataloader.batch_size')
    p.add_argument('--amp', action='store_true', help='as tools/train.py --amp (bf16 on CPU, fp16 on CUDA)')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return p


def build_cfg(args) -> Config:
    cfg = Config.fromfile(args.config)
    if args.data_from:
        cfg.train_dataloader = Config.fromfile(args.data_from).train_dataloader
    if args.random_teacher:
        cfg.model.teacher_checkpoint = None
    if args.batch_size:
        cfg.train_dataloader.batch_size = args.batch_size
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    if args.amp:
        from .amp import configure_amp
        configure_amp(cfg, cuda=args.device.startswith('cuda'))
    return cfg


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def describe(value) -> str:
    """Shapes of the tensors of a preprocessed input (a tensor, or a dict/list of them)."""
    if isinstance(value, torch.Tensor):
        return 'x'.join(map(str, value.shape)) + f' {str(value.dtype).replace("torch.", "")}'
    if isinstance(value, dict):
        return '{' + ', '.join(f'{k}: {describe(v)}' for k, v in value.items()) + '}'
    if isinstance(value, (list, tuple)):
        return f'[{len(value)} x {describe(value[0])}]' if value else '[]'
    return type(value).__name__


def main(argv: Optional[list] = None, prog: Optional[str] = None) -> None:
    """Build the config's model, time it, print the tables (``argv``: the command-line arguments)."""
    args = build_parser(prog).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import kdtoolbox
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner

    from .model import DistillationModel

    kdtoolbox.load_plugins()
    cfg = build_cfg(args)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    if not isinstance(model, DistillationModel):
        sys.exit(f'{args.config}: model.type is {type(model).__name__}, not kdtoolbox.DistillationModel')
    model.to(device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    with torch.no_grad():
        shapes = describe(model.data_preprocessor(batch, True)['inputs'])

    if device.type == 'cuda':
        where = f'{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}'
    else:
        where = f'{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'
    load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    header = '\n'.join([
        f'kdtoolbox benchmark | {args.config} | device: {device.type} ({where}) | torch {torch.__version__}',
        'command: ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + list(sys.argv[1:] if argv is None else argv)),
        f'batch: {shapes} | optim wrapper: {type(optim_wrapper).__name__} | '
        f'warm-up {args.warmup}, repeats {args.repeats} | load average before: {load}'])
    print(header, flush=True)
    result = run_benchmark(model, batch, optim_wrapper, device, args.warmup, args.repeats,
                           memory=not args.no_memory, log=lambda s: print('  ' + s, file=sys.stderr, flush=True))
    print(format_result(result), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
