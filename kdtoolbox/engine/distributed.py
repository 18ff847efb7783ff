"""Distributed training on CPU (gloo) through mmengine's own runner.

mmengine 0.10.7's 'pytorch' launcher calls ``torch.cuda.set_device`` unconditionally, and its
runner wraps the model with ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules. On a
machine without CUDA, :func:`prepare_distributed` initialises the process group with gloo first
(mmengine then skips its own init) and points ``model_wrapper_cfg`` to
:class:`DeviceAwareDistributedDataParallel`, which drops ``device_ids`` for CPU modules. With CUDA
nothing changes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel

from ..registry import MODEL_WRAPPERS
from .guards import guarded_update


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper; ``device_ids``/``output_device`` are dropped when the module is on CPU."""

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        param = next(module.parameters(), None)
        if param is None or param.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    def train_step(self, data, optim_wrapper):
        """mmengine's DDP step, with the module's non-finite-loss policy (DistillationModel)."""
        policy = getattr(self.module, 'nonfinite_loss', None)
        if policy is None:
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = self.module.preprocess(data, training=True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        return guarded_update(parsed_loss, log_vars, optim_wrapper, policy)


def prepare_distributed(cfg) -> None:
    """Make ``cfg`` (launcher 'pytorch', run by torchrun) work without CUDA; no-op with CUDA."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
        kwargs = {}
        if timeout is not None:
            from datetime import timedelta
            kwargs['timeout'] = timedelta(seconds=timeout)
        dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'kdtoolbox.DeviceAwareDistributedDataParallel')
    if wrapper['type'] in ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel'):
        wrapper['type'] = 'kdtoolbox.DeviceAwareDistributedDataParallel'
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
