"""End to end through the real tools: train a teacher, distil for two iterations with
tools/train.py, resume, evaluate with COCO mAP, export the student and load it into plain mmdet."""
import os
import re
import subprocess

import pytest
import torch

from conftest import PYTHON, ROOT

pytestmark = pytest.mark.slow

DISTILL_CFG = 'configs/demo/fitnet_retinanet_shapes.py'
WARMUP_CFG = 'tests/fixtures/configs/fitnet_warmup_shapes.py'  # the demo + 1 warm-up iteration
TEACHER_CFG = 'configs/demo/retinanet_r50_shapes_teacher.py'


def data_options(root):
    """Shrink the generated data to 4 train / 2 val images (2 iterations of batch 2 per epoch)."""
    opts = [f'val_evaluator.ann_file={root}/annotations/val.json',
            f'test_evaluator.ann_file={root}/annotations/val.json',
            'train_dataloader.batch_size=2', 'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
            'default_hooks.checkpoint.interval=1']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={root}/', f'{loader}.dataset.num_train=4',
                 f'{loader}.dataset.num_val=2']
    return opts


def run(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.run([PYTHON, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}'
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp('e2e')
    data = base / 'shapes'
    work = base / 'teacher'
    run(['tools/train.py', TEACHER_CFG, '--work-dir', str(work), '--cfg-options', 'train_cfg.max_epochs=1',
         *data_options(data)])
    return base, data, work


def test_distil_resume_evaluate_export(teacher_dir):
    base, data, teacher_work = teacher_dir
    work = base / 'fitnet'
    # score_thr=0: a 2-iteration student scores low; COCOeval needs detections to report a mAP
    common = ['--work-dir', str(work), '--cfg-options', f'model.teacher_checkpoint={teacher_work}',
              'model.student.test_cfg.score_thr=0.0', *data_options(data)]
    out = run(['tools/train.py', WARMUP_CFG, *common, 'train_cfg.max_epochs=1'])
    # iteration 1 is warm-up (scale 0: no teacher pass, no distillation loss), iteration 2 distils
    first = re.search(r'Epoch\(train\) \[1\]\[1/2\].*', out).group(0)
    second = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out).group(0)
    assert 'distill_scale: 0.0000' in first and 'distill.fpn0' not in first, first
    assert re.search(r'distill\.fpn0\.loss_hint: [0-9.]+', second) and 'distill_scale: 1.0000' in second, second
    assert 'coco/bbox_mAP' in out
    ckpt = work / 'epoch_1.pth'
    saved = torch.load(ckpt, map_location='cpu')  # default weights_only: the allow-list at work
    assert saved['meta']['iter'] == 2
    assert not any(k.startswith('teacher.') for k in saved['state_dict'])
    assert any(k.startswith('distiller.adapters.') for k in saved['state_dict'])

    # Resume: the run continues at iteration 2 and ends at 4, from the saved weights.
    out = run(['tools/train.py', DISTILL_CFG, '--resume', str(ckpt), *common, 'train_cfg.max_epochs=2'])
    assert 'resumed epoch: 1, iter: 2' in out, out[-3000:]
    resumed = torch.load(work / 'epoch_2.pth', map_location='cpu')
    assert resumed['meta']['iter'] == 4

    # Export the student; plain mmdet builds the exported config and loads the weights as they are.
    student_pth = base / 'student.pth'
    run(['tools/export_student.py', DISTILL_CFG, str(work / 'epoch_2.pth'), str(student_pth)])
    from mmdet.apis import init_detector
    detector = init_detector(str(base / 'student.py'), str(student_pth), device='cpu')
    assert type(detector).__name__ == 'RetinaNet'
    for key, value in detector.state_dict().items():
        assert torch.equal(value, resumed['state_dict'][f'student.{key}']), key
    # ... and evaluates it with the COCO metric through mmdet's own test tool.
    mmdet_test = os.path.join(os.path.dirname(__import__('mmdet').__file__), '.mim', 'tools', 'test.py')
    out = run([mmdet_test, str(base / 'student.py'), str(student_pth), '--work-dir', str(base / 'test'),
               '--cfg-options', 'model.test_cfg.score_thr=0.0',
               *[o for o in data_options(data) if not o.startswith('train')]])
    assert 'coco/bbox_mAP' in out
