"""What distillation costs: median times and peak memory of the student's training step, the lower
bound (student step + teacher forward up to its recorded modules) and the full distillation step,
with the ratios 3/2 and 3/1 and the split of the distillation step (see kdtoolbox/engine/benchmark.py).

    python tools/benchmark.py CONFIG [--device cpu|cuda] [--threads N] [--warmup 2] [--repeats 5]
        [--random-teacher] [--data-from CONFIG] [--batch-size N] [--amp] [--cfg-options k=v ...]

The model is built from the config with random weights (no init_weights(): nothing is downloaded;
the costs do not depend on the values); ``--random-teacher`` also skips the teacher checkpoint.
``--data-from`` takes the training data loader of another config (e.g. the shapes data for a COCO
config). One batch of the training loader is used for every step: data loading is not timed.
"""
import argparse
import os
import platform
import shlex
import sys

import torch
from mmengine.config import Config, DictAction


def parse_args():
    p = argparse.ArgumentParser(description='Time a distillation step against the student alone')
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
    return p.parse_args()


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
        from kdtoolbox.engine.amp import configure_amp
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


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import kdtoolbox
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import Runner

    from kdtoolbox.engine.benchmark import format_result, run_benchmark
    from kdtoolbox.engine.model import DistillationModel

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
        'command: ' + ' '.join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        f'batch: {shapes} | optim wrapper: {type(optim_wrapper).__name__} | '
        f'warm-up {args.warmup}, repeats {args.repeats} | load average before: {load}'])
    print(header, flush=True)
    result = run_benchmark(model, batch, optim_wrapper, device, args.warmup, args.repeats,
                           memory=not args.no_memory, log=lambda s: print('  ' + s, file=sys.stderr, flush=True))
    print(format_result(result), flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == '__main__':
    main()
