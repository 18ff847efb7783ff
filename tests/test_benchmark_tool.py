"""tools/benchmark.py on a tiny run (1 repeat, no warm-up): the printed table has its rows and its
ratios agree with its own medians. No timing is asserted. The memory accounting is checked on a
step that allocates a known number of bytes."""
import re
import subprocess

import pytest
import torch

from conftest import PYTHON, ROOT
from kdtoolbox.engine.benchmark import peak_step_bytes


def test_cpu_peak_memory_counts_a_known_allocation():
    def step():
        a = torch.empty(1_000_000)        # 4 000 000 bytes
        b = torch.empty(500_000)          # +2 000 000 while a is alive: the peak
        del a, b
        c = torch.empty(250_000)          # 1 000 000 after both were freed
        del c
    peak = peak_step_bytes(step, torch.device('cpu'))
    assert 6_000_000 <= peak < 6_000_000 + 64 * 1024


@pytest.mark.slow
def test_benchmark_tool_prints_the_table_and_consistent_ratios(tmp_path):
    data = tmp_path / 'shapes'
    opts = [f'train_dataloader.dataset.data_root={data}/', 'train_dataloader.dataset.num_train=4',
            'train_dataloader.dataset.num_val=2', 'train_dataloader.dataset.pipeline.2.scale=(128,128)']
    proc = subprocess.run(
        [PYTHON, 'tools/benchmark.py', 'configs/demo/fitnet_retinanet_shapes.py', '--random-teacher',
         '--threads', '1', '--warmup', '0', '--repeats', '1', '--batch-size', '1', '--cfg-options', *opts],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'batch: 1x3x128x128 float32' in out, out
    medians = {}
    for i, name in enumerate(('student', 'student + teacher', 'distillation'), 1):
        row = re.search(rf'^{i}\. {re.escape(name)} +\| +([0-9.]+) \| +([0-9.]+) \| +([0-9.]+)$', out, re.M)
        assert row, out
        medians[i] = float(row.group(1))
        assert float(row.group(3)) > 0  # peak MiB measured
    ratio32 = float(re.search(r'ratio 3/2 [^:]*:\s+([0-9.]+)', out).group(1))
    ratio31 = float(re.search(r'ratio 3/1 [^:]*:\s+([0-9.]+)', out).group(1))
    assert ratio32 == pytest.approx(medians[3] / medians[2], abs=2e-3)
    assert ratio31 == pytest.approx(medians[3] / medians[1], abs=2e-3)
    split = dict((k.strip(), float(v)) for k, v in re.findall(r'^([a-z][^|\n]+?)\s+\|\s+([0-9.]+) \|\s+[0-9.]+ %$', out, re.M))
    assert set(split) == {'preprocess', 'teacher forward', 'student forward (loss)',
                          'distiller forward (losses, fp32)', 'backward + optimizer step'}, out
    assert re.search(r'teacher forward alone, truncated after \[neck\]: [0-9.]+ ms; whole model: [0-9.]+ ms', out)
