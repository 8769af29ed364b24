""" WC/GC's multi-tensor Triton kernel: values, launch count and an optimizer run through Triton's
interpreter (in a subprocess: TRITON_INTERPRET must be set before Triton is imported), and its dispatch. """
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_normplugins.optim import centralization as c

ROOT = Path(__file__).resolve().parents[1]


def test_kernel_under_the_interpreter():
    pytest.importorskip('triton')
    env = dict(os.environ, TRITON_INTERPRET='1', TIMM_NORMPLUGINS_WCGC_KERNEL='triton', PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'tests' / '_wcgc_triton_interpret.py')], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(out[f'values_torch.{d}'] == 'ok' for d in ('float32', 'bfloat16', 'float16'))
    assert out['launches_3_vs_30_tensors'] == [1, 1]  # independent of the parameter count
    assert out['optimizer'] == 'sgd + WC/GC'
    assert {'256', '1024', '8192'} <= set(out['launches'])  # short rows, long rows, rows past every block


def test_dispatch():
    assert c.get_wcgc_kernel() == 'auto'
    cpu = torch.device('cpu')
    assert not c.WCGC_KERNEL.use_kernel(cpu, torch.float32)  # CPU: the torch ops (measured faster there)
    c.set_wcgc_kernel('torch')
    try:
        assert not c.WCGC_KERNEL.use_kernel(cpu, torch.float32)
    finally:
        c.set_wcgc_kernel('auto')
    with pytest.raises(ValueError, match='WC/GC kernel'):
        c.set_wcgc_kernel('fast')


def test_row_layouts():
    ct = pytest.importorskip('timm_normplugins.optim.centralize_triton')
    w = torch.zeros(8, 4, 3, 3)
    assert ct.row_layout(w, c.centralization_spec(w.shape)) == (8, 36)
    assert ct.row_layout(w.to(memory_format=torch.channels_last), c.centralization_spec(w.shape)) == (8, 36)
    assert ct.row_layout(w, c.centralization_spec(w.shape, 'instance')) == (32, 9)
    assert ct.row_layout(w.to(memory_format=torch.channels_last), c.centralization_spec(w.shape, 'instance')) is None
    assert ct.row_layout(w, c.centralization_spec(w.shape, 'channel')) is None
    assert ct.row_layout(w.double(), c.centralization_spec(w.shape)) is None  # fp64: the torch path
    assert ct.row_layout(w[:, :2], c.centralization_spec((8, 2, 3, 3))) is None  # not dense
