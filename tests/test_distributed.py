"""Real torch.distributed: tools/dist_train.sh (torchrun, mmengine's pytorch launcher) with gloo on
CPU, two processes, a distillation config."""
import os
import re
import socket
import subprocess

import pytest
import torch

from conftest import ROOT
from test_train_e2e import DISTILL_CFG, data_options

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_distillation_on_gloo(tmp_path):
    data, work = tmp_path / 'shapes', tmp_path / 'work'
    env = dict(os.environ, PYTHONUNBUFFERED='1', MASTER_PORT=str(free_port()), OMP_NUM_THREADS='1')
    # 4 images, batch 1 per process, 2 processes: 2 iterations; random teacher (smoke test of the launch path)
    opts = [o for o in data_options(data) if not o.startswith('train_dataloader.batch_size')]
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', DISTILL_CFG, '2', '--work-dir', str(work), '--cfg-options',
         'model.teacher_checkpoint=None', 'train_dataloader.batch_size=1', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=100', *opts],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert 'Distributed launcher: pytorch' in out and 'GPU number: 2' in out, out[-3000:]  # mmengine's word for world size
    # 4 images, batch 1: an epoch is 2 iterations only if the sampler shards them over 2 ranks
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\].*distill\.fpn0\.loss_hint', out), out[-3000:]
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    assert not any(k.startswith('module.') or k.startswith('teacher.') for k in ckpt['state_dict'])
