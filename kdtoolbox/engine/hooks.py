"""mmengine hooks that schedule the distillation loss weight."""
from __future__ import annotations

import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


def distill_scale(iteration: int, epoch: int, warmup_iters: int = 0, decay: Optional[str] = None,
                  decay_begin_iter: int = 0, decay_end_iter: Optional[int] = None,
                  min_scale: float = 0.0, stop_epoch: Optional[int] = None) -> float:
    """The multiplier of the distillation losses at (0-based) ``iteration`` / ``epoch``.

    - warm-up: ``warmup_iters`` iterations of distillation switched off (FGFI's imitation
      warm-up), then 1;
    - decay: 'linear' or 'cosine' from 1 at ``decay_begin_iter`` to ``min_scale`` at
      ``decay_end_iter`` (held there afterwards);
    - stop: 0 from epoch ``stop_epoch`` on (0-based, as mmengine counts).
    """
    if stop_epoch is not None and epoch >= stop_epoch:
        return 0.0
    if iteration < warmup_iters:
        return 0.0
    if decay is None:
        return 1.0
    if decay_end_iter is None or decay_end_iter <= decay_begin_iter:
        raise ValueError('DistillLossScheduleHook: decay needs decay_end_iter > decay_begin_iter')
    progress = min(max((iteration - decay_begin_iter) / (decay_end_iter - decay_begin_iter), 0.0), 1.0)
    if decay == 'linear':
        factor = 1.0 - progress
    elif decay == 'cosine':
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"DistillLossScheduleHook: decay must be 'linear', 'cosine' or None, got {decay!r}")
    return min_scale + (1.0 - min_scale) * factor


@HOOKS.register_module()
class DistillLossScheduleHook(Hook):
    """Sets ``model.distill_loss_scale`` before every training iteration (see :func:`distill_scale`).

    A scale of 0 skips the teacher pass, so warm-up and stopped epochs cost what the student
    alone costs. The current scale is logged as ``distill_scale``.
    """

    priority = 'NORMAL'

    def __init__(self, warmup_iters: int = 0, decay: Optional[str] = None, decay_begin_iter: int = 0,
                 decay_end_iter: Optional[int] = None, min_scale: float = 0.0,
                 stop_epoch: Optional[int] = None):
        self.kwargs = dict(warmup_iters=warmup_iters, decay=decay, decay_begin_iter=decay_begin_iter,
                           decay_end_iter=decay_end_iter, min_scale=min_scale, stop_epoch=stop_epoch)
        distill_scale(0, 0, **self.kwargs)  # validate the arguments now, not at iteration N

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'distill_loss_scale'):
            raise TypeError(f'DistillLossScheduleHook needs a DistillationModel, got {type(model).__name__}')
        scale = distill_scale(runner.iter, runner.epoch, **self.kwargs)
        model.distill_loss_scale = scale
        runner.message_hub.update_scalar('train/distill_scale', scale)
