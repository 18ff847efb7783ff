"""Real torch.distributed: tools/dist_train.sh (torchrun, mmengine's 'pytorch' launcher), 2 processes
on CPU with gloo, the FGD demo config, against a single-process run on the same global batch.

What makes the two runs comparable number for number:

- Reference = one process, batch 1, gradients accumulated over 2 iterations
  (``optim_wrapper.accumulative_counts=2``): its update is (grad(L_a) + grad(L_b)) / 2, exactly what
  DDP's all-reduce average of two ranks of batch 1 gives. A plain batch of 2 would not be
  comparable: RetinaNet's focal loss is divided by the number of positive anchors of the local batch
  (mmdet does not all-reduce it), and BatchNorm's batch statistics of 2 images differ from those of
  1 image. Here every forward sees one image in both runs, so BN may stay in train mode; only its
  running statistics differ (rank 0's saw 2 of the 4 images), and they are left out of the weight
  comparison (they do not enter a train-mode forward).
- the same images in the same order: ``shuffle=False`` (DefaultSampler shards by rank stride: rank r,
  iteration j takes image 2j + r, the reference's iteration 2j + r), RandomFlip off;
- SGD instead of the demo's AdamW: Adam's first step is lr * g / |g|, which turns round-off in
  near-zero gradients into +-lr differences; SGD keeps them at lr * round-off;
- no LR warm-up (it is per iteration, and the reference has twice the iterations per step);
- a random R50 teacher saved to a file (training one takes minutes); the student's FGD inheritance
  (neck and head from the teacher checkpoint) reads the same file.

Compared: every logged loss of each rank and iteration (dumped by a small hook, full precision) and
every student and distiller parameter after 2 updates.
"""
import json
import os
import socket
import subprocess
import textwrap

import pytest
import torch

from conftest import PYTHON, ROOT

FGD_DEMO = 'configs/demo/fgd_retinanet_shapes.py'
TEACHER_CFG = 'configs/demo/retinanet_r50_shapes_teacher.py'

HOOK = '''
import json
import torch.distributed as dist
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class LossDumpHook(Hook):
    """Write every iteration's logged losses (full precision) and image paths, one file per rank."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        rank = dist.get_rank() if dist.is_initialized() else 0
        row = {k: float(v) for k, v in outputs.items()}
        row['images'] = [s.img_path.rsplit('/', 1)[-1] for s in data_batch['data_samples']]
        with open(f'{runner.work_dir}/losses_rank{rank}.jsonl', 'a') as f:
            f.write(json.dumps(row) + '\\n')
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_config(tmp_path, teacher_ckpt) -> str:
    cfg = tmp_path / 'fgd_ddp_check.py'
    cfg.write_text(textwrap.dedent(f'''
        _base_ = ['{ROOT}/{FGD_DEMO}']
        custom_imports = dict(imports=['kd_loss_dump'], allow_failed_imports=False)
        custom_hooks = [dict(type='LossDumpHook')]
        model = dict(teacher_checkpoint='{teacher_ckpt}',
                     student=dict(neck=dict(init_cfg=dict(checkpoint='{teacher_ckpt}')),
                                  bbox_head=dict(init_cfg=dict(checkpoint='{teacher_ckpt}'))))
        train_dataloader = dict(
            sampler=dict(shuffle=False),
            dataset=dict(pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(256, 256), keep_ratio=True),
                dict(type='RandomFlip', prob=0.0),
                dict(type='PackDetInputs')]))
        optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9))
        param_scheduler = []
    '''))
    (tmp_path / 'kd_loss_dump.py').write_text(HOOK)
    return str(cfg)


def data_options(root) -> list:
    """4 training images (2 validation images, never used), no validation, no checkpoint but the last."""
    opts = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
            f'val_evaluator.ann_file={root}/annotations/val.json',
            f'test_evaluator.ann_file={root}/annotations/val.json']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}/', f'{loader}.dataset.num_train=4',
                 f'{loader}.dataset.num_val=2']
    return opts


def read_rows(path) -> list:
    with open(path) as f:
        return [json.loads(line) for line in f]


def parameters(ckpt_path) -> dict:
    """Student and distiller parameters of a checkpoint (BN running statistics left out)."""
    state = torch.load(ckpt_path, map_location='cpu')['state_dict']
    buffers = ('running_mean', 'running_var', 'num_batches_tracked')
    return {k: v for k, v in state.items() if not k.endswith(buffers)}


def test_slurm_env_reads_the_ranks_and_names_what_is_missing():
    from kdtoolbox.engine.distributed import slurm_env
    env = slurm_env({'SLURM_PROCID': '5', 'SLURM_NTASKS': '8', 'SLURM_LOCALID': '1', 'MASTER_ADDR': 'node7'})
    assert env == dict(RANK='5', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='node7', MASTER_PORT='29500')
    with pytest.raises(RuntimeError, match='SLURM_PROCID'):
        slurm_env({'SLURM_NTASKS': '8'})
    with pytest.raises(RuntimeError, match='SLURM_NODELIST'):
        slurm_env({'SLURM_PROCID': '0', 'SLURM_NTASKS': '1'})


def test_prepare_distributed_uses_the_kdtoolbox_wrapper_with_and_without_cuda(monkeypatch):
    import torch.distributed as dist
    from mmengine.config import Config
    from kdtoolbox.engine.distributed import prepare_distributed
    cfg = Config(dict(launcher='none'))
    prepare_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg
    # CUDA: mmengine initialises NCCL itself, but the wrapper is still kdtoolbox's (its train_step
    # runs DistillationModel.preprocess and the non-finite guard); nothing is initialised here
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch', model_wrapper_cfg=dict(type='MMDistributedDataParallel')))
    prepare_distributed(cfg)
    assert cfg.model_wrapper_cfg.type == 'kdtoolbox.DeviceAwareDistributedDataParallel'
    assert cfg.model_wrapper_cfg.find_unused_parameters is False and not dist.is_initialized()
    # CPU: a gloo group from torchrun's variables (world size 1 here)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(free_port()))
    cfg = Config(dict(launcher='pytorch'))
    prepare_distributed(cfg)
    try:
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
        assert cfg.model_wrapper_cfg.type == 'kdtoolbox.DeviceAwareDistributedDataParallel'
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    from kdtoolbox.engine.builder import build_model
    torch.manual_seed(0)
    teacher_ckpt = tmp_path / 'random_teacher.pth'
    torch.save({'state_dict': build_model(TEACHER_CFG, 'teacher').state_dict()}, teacher_ckpt)
    cfg = write_config(tmp_path, teacher_ckpt)
    data = tmp_path / 'shapes'
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    # the data set is written once, before the two runs start (the demo's generator arguments)
    from kdtoolbox.datasets import make_shapes_dataset
    make_shapes_dataset(str(data), num_train=4, num_val=2, img_size=256, seed=0, max_shapes=4)

    ddp_work, single_work = tmp_path / 'ddp', tmp_path / 'single'
    ddp = subprocess.Popen(
        ['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', str(ddp_work), '--cfg-options',
         'train_dataloader.batch_size=1', *data_options(data)],
        cwd=ROOT, env=dict(env, MASTER_PORT=str(free_port())), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    single = subprocess.Popen(
        [PYTHON, 'tools/train.py', cfg, '--work-dir', str(single_work), '--cfg-options',
         'train_dataloader.batch_size=1', 'optim_wrapper.accumulative_counts=2', *data_options(data)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ddp_out, _ = ddp.communicate(timeout=600)
    single_out, _ = single.communicate(timeout=600)
    assert ddp.returncode == 0, ddp_out[-6000:]
    assert single.returncode == 0, single_out[-6000:]
    assert 'Distributed launcher: pytorch' in ddp_out and 'GPU number: 2' in ddp_out, ddp_out[-3000:]

    ranks = [read_rows(ddp_work / f'losses_rank{r}.jsonl') for r in (0, 1)]
    reference = read_rows(single_work / 'losses_rank0.jsonl')
    assert [len(rows) for rows in ranks] == [2, 2] and len(reference) == 4
    for it in range(2):
        for rank in range(2):
            got, want = ranks[rank][it], reference[2 * it + rank]
            assert got['images'] == want['images']  # rank r, iteration j: image 2j + r
            assert got['distill.loss_ddp_zero'] == 0.0  # every distiller parameter seen by DDP
            assert set(want) - {'images'} <= set(got)
            keys = [k for k in want if 'loss' in k]
            assert any(k.startswith('distill.') for k in keys) and 'loss_cls' in keys, keys
            for key in keys:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (rank, it, key)
    # the two ranks saw different images: a rank that skipped the all-reduce would end elsewhere
    assert ranks[0][0]['distill.fpn0.loss_fg'] != ranks[1][0]['distill.fpn0.loss_fg']

    ddp_params, single_params = parameters(ddp_work / 'epoch_1.pth'), parameters(single_work / 'epoch_1.pth')
    assert set(ddp_params) == set(single_params)
    assert not any(k.startswith(('module.', 'teacher.')) for k in ddp_params)
    assert any(k.startswith('distiller.') for k in ddp_params)  # FGD's global blocks, synchronised
    initial = torch.load(teacher_ckpt)['state_dict']
    moved = 0
    for key, value in ddp_params.items():
        torch.testing.assert_close(value, single_params[key], rtol=1e-5, atol=1e-6, msg=key)
        if key.startswith('student.bbox_head.') and not torch.equal(value, initial[key[len('student.'):]]):
            moved += 1  # the head started from the teacher's: the updates are not zero
    assert moved > 0
