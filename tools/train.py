"""Train a model (a DistillationModel or any mmdet/mmdet3d model) from a config with mmengine.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NUM_PROCS [args...]    (launcher: pytorch, through torchrun)
    bash tools/slurm_train.sh PARTITION JOB CONFIG NUM_PROCS [args...]   (launcher: slurm, srun)
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import kdtoolbox
from kdtoolbox.engine.amp import configure_amp
from kdtoolbox.engine.distributed import prepare_distributed
from kdtoolbox.engine.preflight import add_preflight_hook
from kdtoolbox.engine.safe_checkpoint import make_resumable


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector, with or without distillation')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: on CUDA fp16 autocast with a dynamic loss scale (mmengine '
                             'AmpOptimWrapper); on CPU bf16 autocast, no loss scale '
                             '(kdtoolbox.AutocastOptimWrapper). The teacher follows the student\'s '
                             'autocast (model.teacher_autocast=False keeps it fp32); distillation '
                             'losses are computed in fp32')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir if no path')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_iters=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--debug', action='store_true',
                        help='show the full traceback of an error instead of its one-line message')
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        configure_amp(cfg)
    make_resumable(cfg)  # atomic checkpoints (old ones removed after the new one is saved), RNG states saved
    add_preflight_hook(cfg)  # one batch through teacher and student before the first iteration
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def train(args) -> None:
    kdtoolbox.load_plugins()  # report broken plugins before the (long) model build
    cfg = build_cfg(args)
    prepare_distributed(cfg)  # kdtoolbox's DDP wrapper; gloo init when there is no CUDA
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    # Tear the process group down before the interpreter exits: gloo's threads left to interpreter
    # shutdown can abort the process ("terminate called without an active exception", seen in CI).
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main():
    args = parse_args()
    if args.debug:
        return train(args)
    try:
        train(args)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  one message, the traceback in the log
        report_error(exc)
        sys.exit(1)


def report_error(exc: BaseException) -> None:
    """Print the error as one message (the config key / module / file it names), keep the
    traceback in the run's log file when a logger exists."""
    import traceback

    from mmengine.logging import MMLogger
    detail = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if MMLogger.check_instance_created(MMLogger.get_current_instance().instance_name):
        MMLogger.get_current_instance().error(detail)
    message = str(exc).strip() or type(exc).__name__
    print(f'\nkdtoolbox train: {type(exc).__name__}: {message}\n(the traceback is in the log file; '
          f'--debug shows it here)', file=sys.stderr)


if __name__ == '__main__':
    main()
