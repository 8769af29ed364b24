""" core/kernels.py: one environment scheme for every op, the per-op defaults, and the first-use check that
falls back (``'auto'``) or raises (``'triton'``) when a Triton kernel fails to compile or disagrees. """
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_normplugins.core.kernels import ENV_VAR, KernelSelector, env_kernel_mode
from timm_normplugins.layers import tn_backend
from timm_normplugins.optim import centralization as c

ROOT = Path(__file__).resolve().parents[1]


def test_environment_scheme_and_old_names():
    assert env_kernel_mode('tn', {}) == 'auto'
    assert env_kernel_mode('tn', {ENV_VAR: 'torch'}) == 'torch'
    assert env_kernel_mode('wcgc', {ENV_VAR: 'tn=triton, wcgc=torch'}) == 'torch'
    assert env_kernel_mode('tn', {ENV_VAR: 'tn=triton,wcgc=torch'}) == 'triton'
    assert env_kernel_mode('tn', {ENV_VAR: 'torch,tn=triton'}) == 'triton'  # the later, more specific entry
    # the older per-op variables are aliases; the new variable wins where it names the op
    assert env_kernel_mode('tn', {'TIMM_NORMPLUGINS_TN_KERNEL': 'triton'}) == 'triton'
    assert env_kernel_mode('wcgc', {'TIMM_NORMPLUGINS_WCGC_KERNEL': 'Torch '}) == 'torch'
    assert env_kernel_mode('wcgc', {'TIMM_NORMPLUGINS_WCGC_KERNEL': 'torch', ENV_VAR: 'tn=torch'}) == 'torch'
    assert env_kernel_mode('wcgc', {'TIMM_NORMPLUGINS_WCGC_KERNEL': 'torch', ENV_VAR: 'wcgc=auto'}) == 'auto'
    with pytest.raises(ValueError, match='unknown op'):
        env_kernel_mode('tn', {ENV_VAR: 'bn=torch'})


def test_modes_are_validated_and_read_at_import():
    with pytest.raises(ValueError, match='WC/GC kernel must be one of'):
        c.set_wcgc_kernel('fast')
    code = ('from timm_normplugins.layers import tn_backend; from timm_normplugins.optim import centralization as c; '
            'print(tn_backend.get_tn_kernel(), c.get_wcgc_kernel())')
    for env, want in (({ENV_VAR: 'torch'}, 'torch torch'), ({ENV_VAR: 'wcgc=torch'}, 'auto torch'),
                      ({'TIMM_NORMPLUGINS_WCGC_KERNEL': 'torch', 'TIMM_NORMPLUGINS_TN_KERNEL': 'torch'}, 'torch torch')):
        full = {k: v for k, v in os.environ.items() if not k.startswith('TIMM_NORMPLUGINS_')}
        full.update(env, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, '-c', code], env=full, capture_output=True, text=True, timeout=300)
        assert proc.stdout.strip() == want, (env, proc.stderr[-2000:])


def test_defaults_without_a_triton_device():
    # the CPU (no interpreter) never runs Triton on 'auto', whatever the op's default
    assert tn_backend.TN_KERNEL.default == 'torch' and c.WCGC_KERNEL.default == 'triton'
    x = torch.randn(2, 4, 3, 3)
    assert tn_backend.fused_relu_tn_impl(x) is None
    assert not c.WCGC_KERNEL.use_kernel(x.device, x.dtype)
    assert not c.WCGC_KERNEL.verdicts  # nothing was checked: nothing would run


def test_a_selector_whose_kernel_cannot_load():
    # a real import failure (no such module), not a stand-in kernel
    def load():
        import timm_normplugins.no_such_kernels  # noqa: F401

    sel = KernelSelector('tn', 'X', load=load, check=lambda *a: None, default='torch', dtypes=(torch.float32,))
    with pytest.raises(RuntimeError, match='did not load.*no_such_kernels'):
        sel.set('triton')
    assert sel.mode == 'auto'


def test_fallback_and_errors_through_the_interpreter():
    pytest.importorskip('triton')
    env = {k: v for k, v in os.environ.items() if not k.startswith('TIMM_NORMPLUGINS_')}
    env.update(TRITON_INTERPRET='1', PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'tests' / '_kernel_selection_interpret.py')], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['modes'] == ['auto', 'auto']
    assert out['tn_default_launches'] == 0  # TN defaults to the PyTorch ops even where Triton runs
    warned, worst, launches = out['wcgc_ok']
    assert warned == [] and worst < 1e-5 and launches == 2  # WC/GC defaults to its kernel, checked once
    assert out['wcgc_verdicts'] == {'torch.float32': True}

    warned, worst, launches = out['wcgc_disagrees']
    assert len(warned) == 1 and 'differs from the PyTorch path' in warned[0] and 'float32' in warned[0]
    assert worst < 1e-5 and launches == 0  # the PyTorch path did the work, correctly

    warned, worst, launches = out['wcgc_no_compile']
    assert len(warned) == 1 and 'power of 2' in warned[0]  # one warning for fp32 and bf16 together
    assert worst < 2e-2 and launches == 0
    assert 'requested, but it failed to run' in out['wcgc_forced_no_compile']

    assert out['tn_forced_launches'] == 1  # the caller's forward; the check's own launches are not counted
    assert out['tn_forced_disagrees'].startswith('TN kernel "triton" requested, but its output')
    warned, err = out['tn_auto_disagrees']
    assert len(warned) == 1 and 'differs from the PyTorch ops' in warned[0]
    assert err < 1e-6
