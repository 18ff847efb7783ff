"""Non-finite losses: stop with a message naming the loss and the iteration, or skip the step.

A NaN or Inf loss back-propagated once corrupts every weight it reaches (and the optimizer's
momentum). :func:`check_losses` runs on the parsed loss dict of every training step, before the
backward pass:

- policy ``'raise'`` (default): :class:`NonFiniteLossError` names every non-finite term, the
  iteration and the epoch; the parameters are those of the previous step, the last checkpoint is
  intact;
- policy ``'skip'``: the step runs no optimizer update: the parameters and the optimizer state are
  untouched (BatchNorm running statistics have seen the batch, as after any forward). The backward
  pass still runs, on a zero surrogate, so that DDP's gradient synchronisation stays in step on
  every rank; the gradients are then dropped; the step's log has ``nonfinite_skipped = 1``. Under DDP the ranks agree (an
  all-reduce of the flag), so either all of them update or none does.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .context import runner_counters

POLICIES = ('raise', 'skip')


class NonFiniteLossError(FloatingPointError):
    """A training loss is NaN or Inf."""


def nonfinite_terms(log_vars: dict) -> list[str]:
    """Names of the loss terms (keys containing 'loss') whose value is NaN or Inf (the total
    ``loss`` only when no single term is)."""
    names = [k for k, v in log_vars.items() if 'loss' in k and isinstance(v, torch.Tensor)]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(log_vars[k].detach().float()).all() for k in names]).cpu()
    bad = [k for k, ok in zip(names, finite.tolist()) if not ok]
    # the total 'loss' is non-finite because a term is: name the terms
    return [k for k in bad if k != 'loss'] or bad


def _any_rank(flag: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if dist.get_backend() != 'gloo' else 'cpu')
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def check_losses(log_vars: dict, policy: str, device: Optional[torch.device] = None) -> bool:
    """Return True when the step must be skipped; raise under policy 'raise'."""
    bad = nonfinite_terms(log_vars)
    skip = _any_rank(bool(bad), device or torch.device('cpu'))
    if not skip:
        return False
    iteration, epoch = runner_counters()
    where = f'iteration {iteration + 1} (epoch {epoch + 1})'
    if policy == 'raise':
        detail = ', '.join(f'{k} = {log_vars[k].item()}' for k in bad) if bad else 'a loss on another rank'
        raise NonFiniteLossError(
            f'non-finite training loss at {where}: {detail}. Training stopped before the update, so '
            f'the weights and the last checkpoint are unharmed. Lower the loss weight or the learning '
            f"rate, or set model.nonfinite_loss='skip' to skip such steps.")
    from mmengine.logging import print_log
    print_log(f'skipping the update at {where}: non-finite {", ".join(bad) or "loss on another rank"}',
              logger='current', level=30)
    return True


def guarded_update(parsed_loss: torch.Tensor, log_vars: dict, optim_wrapper, policy: str) -> dict:
    """``optim_wrapper.update_params(parsed_loss)`` unless :func:`check_losses` says skip."""
    if not check_losses(log_vars, policy, parsed_loss.device):
        optim_wrapper.update_params(parsed_loss)
        return log_vars
    # A zero surrogate keeps DDP's reducer in step on every rank; its gradients are then dropped.
    optim_wrapper.backward(torch.nan_to_num(parsed_loss, nan=0.0, posinf=0.0, neginf=0.0) * 0)
    optim_wrapper.zero_grad()
    log_vars['nonfinite_skipped'] = torch.ones((), device=parsed_loss.device)
    return log_vars
