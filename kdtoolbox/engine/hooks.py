"""mmengine hooks that schedule the distillation loss weight."""
from __future__ import annotations

import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


def distill_scale(iteration: int, epoch: int, warmup_iters: int = 0, decay: Optional[str] = None,
                  decay_begin_iter: int = 0, decay_end_iter: Optional[int] = None,
                  min_scale: float = 0.0, stop_epoch: Optional[int] = None,
                  warmup_mode: str = 'off') -> float:
    """The multiplier of the distillation losses at (0-based) ``iteration`` / ``epoch``.

    - warm-up over ``warmup_iters`` iterations: ``warmup_mode='off'`` switches distillation off
      (FGFI's imitation warm-up), ``'linear'`` ramps the scale as ``iteration / warmup_iters``
      (FRS's ``Increase_Hook``); 1 afterwards;
    - decay: 'linear' or 'cosine' from 1 at ``decay_begin_iter`` to ``min_scale`` at
      ``decay_end_iter`` (held there afterwards);
    - stop: 0 from epoch ``stop_epoch`` on (0-based, as mmengine counts).
    """
    if stop_epoch is not None and epoch >= stop_epoch:
        return 0.0
    if warmup_mode not in ('off', 'linear'):
        raise ValueError(f"DistillLossScheduleHook: warmup_mode must be 'off' or 'linear', got {warmup_mode!r}")
    if iteration < warmup_iters:
        return 0.0 if warmup_mode == 'off' else iteration / warmup_iters
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
                 stop_epoch: Optional[int] = None, warmup_mode: str = 'off'):
        self.kwargs = dict(warmup_iters=warmup_iters, decay=decay, decay_begin_iter=decay_begin_iter,
                           decay_end_iter=decay_end_iter, min_scale=min_scale, stop_epoch=stop_epoch,
                           warmup_mode=warmup_mode)
        distill_scale(0, 0, **self.kwargs)  # validate the arguments now, not at iteration N

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'distill_loss_scale'):
            raise TypeError(f'DistillLossScheduleHook needs a DistillationModel, got {type(model).__name__}')
        scale = distill_scale(runner.iter, runner.epoch, **self.kwargs)
        model.distill_loss_scale = scale
        runner.message_hub.update_scalar('train/distill_scale', scale)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Saves the random number generators' states in every checkpoint and restores them on resume.

    mmengine re-seeds at start-up, so without this a resumed run draws other random numbers
    (augmentation flips, samplers in the main process) than the uninterrupted run would have: the
    same schedule, but not the same run. The states of Python's ``random``, numpy's global
    generator, torch's CPU generator and every CUDA device's are stored under
    ``checkpoint['meta']['rng_state']`` as tensors and tuples (loadable with ``weights_only``), and
    put back at ``before_train``, i.e. after mmengine's own seeding and resume. Epoch-based loops
    resume exactly; an iteration-based loop that resumes mid-epoch replays the skipped batches'
    augmentation, so it is exact only with ``num_workers > 0`` (worker seeds are per epoch).
    ``tools/train.py`` adds this hook to every config.
    """

    priority = 'VERY_LOW'

    def __init__(self):
        self._pending = None

    @staticmethod
    def capture() -> dict:
        import random

        import numpy as np
        import torch
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = dict(python=random.getstate(), torch=torch.get_rng_state(),
                     numpy=(name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                            float(cached)))
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def restore(state: dict) -> None:
        import random

        import numpy as np
        import torch
        random.setstate(state['python'])
        torch.set_rng_state(state['torch'])
        name, keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state['cuda'])

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_state'] = self.capture()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # only on resume: a checkpoint loaded as initial weights (load_from) starts a new run
        if runner._resume:
            self._pending = (checkpoint.get('meta') or {}).get('rng_state')

    def before_train(self, runner) -> None:
        if self._pending is not None:
            self.restore(self._pending)
            self._pending = None
