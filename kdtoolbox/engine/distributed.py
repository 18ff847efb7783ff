"""Distributed training through mmengine's own runner and launchers (torchrun, SLURM).

What :func:`prepare_distributed` changes in a config before the runner is built:

- every launcher (``pytorch``, ``slurm``, ``mpi``), CPU or CUDA: ``model_wrapper_cfg`` names
  :class:`DeviceAwareDistributedDataParallel`, so that DDP's ``train_step`` is
  DistillationModel's own (its ``preprocess()``, which runs the teacher's own data preprocessor
  when configured, and its non-finite-loss guard). With CUDA mmengine's runner passes
  ``device_ids=[LOCAL_RANK]`` as usual;
- without CUDA: mmengine 0.10.7's launchers call ``torch.cuda.set_device`` (``pytorch``) or take a
  rank modulo the GPU count (``slurm``), so the process group is initialised here with gloo first
  (mmengine then skips its own init), and the wrapper drops ``device_ids`` for CPU modules.

The teacher is outside the module tree of DistillationModel, so DDP never sees it: it is not
broadcast, takes no part in gradient synchronisation and needs no ``find_unused_parameters``.
Every process loads it itself, on CPU (``map_location='cpu'``), and the runner's ``model.to()``
moves it to that process's device (``cuda:LOCAL_RANK``), so nothing lands on GPU 0 but rank 0's.
The distiller's learnable parts (adapters, FGD's global blocks, ...) are in the module tree and
synchronised like the student's parameters.
"""
from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel

from ..registry import MODEL_WRAPPERS
from .guards import guarded_update

#: mmengine launchers that start a process group
LAUNCHERS = ('pytorch', 'slurm', 'mpi')
_MMENGINE_DDP = ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper with DistillationModel's training step.

    ``device_ids``/``output_device`` are kept for CUDA modules and dropped for CPU ones (DDP
    rejects them there). ``train_step`` preprocesses with the wrapped model's ``preprocess()``
    when it has one and applies its ``nonfinite_loss`` policy (the ranks agree on skipping).
    """

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        param = next(module.parameters(), None)
        if param is None or param.device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    def train_step(self, data, optim_wrapper):
        """mmengine's DDP step, with the module's preprocessing and non-finite-loss policy."""
        policy = getattr(self.module, 'nonfinite_loss', None)
        if policy is None:
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            preprocess = getattr(self.module, 'preprocess', None)
            data = preprocess(data, True) if preprocess is not None else self.module.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        return guarded_update(parsed_loss, log_vars, optim_wrapper, policy)


def _timeout(cfg) -> dict:
    timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
    return {} if timeout is None else {'timeout': timedelta(seconds=timeout)}


def slurm_env(environ=os.environ) -> dict:
    """The torch.distributed variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) of a
    process started by ``srun``: ranks from ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``,
    the master is the first host of ``SLURM_NODELIST`` (``scontrol show hostnames``) unless
    MASTER_ADDR is set; MASTER_PORT defaults to 29500."""
    try:
        rank, world = int(environ['SLURM_PROCID']), int(environ['SLURM_NTASKS'])
    except KeyError as exc:
        raise RuntimeError(f'--launcher slurm: {exc.args[0]} is not set; start the job with srun '
                           f'(tools/slurm_train.sh)') from exc
    addr = environ.get('MASTER_ADDR')
    if addr is None:
        nodes = environ.get('SLURM_STEP_NODELIST') or environ.get('SLURM_NODELIST')
        if not nodes:
            raise RuntimeError('--launcher slurm: neither MASTER_ADDR nor SLURM_NODELIST is set')
        addr = subprocess.check_output(['scontrol', 'show', 'hostnames', nodes], text=True).split()[0]
    return dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=environ.get('SLURM_LOCALID', '0'),
                MASTER_ADDR=addr, MASTER_PORT=environ.get('MASTER_PORT', '29500'))


def _init_cpu_process_group(cfg) -> None:
    """gloo process group for a CPU run started by torchrun (env://) or srun (SLURM_* variables)."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'slurm':
        os.environ.update(slurm_env())
    elif launcher == 'mpi':
        raise RuntimeError('--launcher mpi needs CUDA (mmengine initialises it); on CPU use '
                           'tools/dist_train.sh (torchrun) or tools/slurm_train.sh')
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **_timeout(cfg))


def prepare_distributed(cfg) -> None:
    """Set up ``cfg`` for mmengine's distributed runner (see the module docstring); no-op when
    ``cfg.launcher`` is 'none'."""
    if cfg.get('launcher', 'none') not in LAUNCHERS:
        return
    if not torch.cuda.is_available() and not dist.is_initialized():
        _init_cpu_process_group(cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'kdtoolbox.DeviceAwareDistributedDataParallel')
    if wrapper['type'] in _MMENGINE_DDP:
        wrapper['type'] = 'kdtoolbox.DeviceAwareDistributedDataParallel'
    # buffers (BN statistics) stay per rank, as with mmengine's default wrapper
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
