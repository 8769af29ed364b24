""" The fused ReLU+TN Triton kernels: correctness through Triton's interpreter, dispatch, compile graph, traffic.

Values and gradients are checked in a subprocess (tests/_tn_triton_interpret.py) because TRITON_INTERPRET
must be set before Triton is imported, and this process may have imported it already.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_normplugins.layers import relu_tensor_norm, tn_backend

triton = pytest.importorskip('triton')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'scripts'))  # the traffic counter is a measurement tool there
from relu_tn_traffic import relu_tn_traffic  # noqa: E402


@pytest.fixture(scope='module')
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET='1', TIMM_NORMPLUGINS_TN_KERNEL='triton', PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'tests' / '_tn_triton_interpret.py')], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_kernels_match_the_formula_under_the_interpreter(interpreted):
    # 5 shapes x layouts x 3 dtypes x 2 grad modes x 2 tilings, each forward + backward, all on the kernels
    assert interpreted['num_cases'] == 96
    launches = interpreted['launches']
    assert launches['fwd'] >= 96 and launches['bwd_exact'] >= 48 and launches['bwd_paper'] >= 48
    assert launches['fwd_'] > 0  # the in-place forward of a TN network
    assert interpreted['model'] == 'cifar_resnet20_tn'


def test_fused_traffic_is_relus_plus_the_mean(interpreted):
    rows = interpreted['traffic']
    for C in (16, 64):
        for dtype in ('fp32', 'bf16'):
            relu = rows[f'relu C={C} {dtype}']
            assert (relu['forward'], relu['backward']) == (2.0, 3.0)
            for grad in ('exact', 'paper'):
                fused = rows[f'fused {grad} C={C} {dtype}']
                # read x, write y and the mean; read g, y and the mean, write dx
                assert fused['forward'] == 2 + 1 / C and fused['backward'] == 3 + 1 / C
                assert fused['total'] <= 1.1 * relu['total']  # the goal
                torch_path = rows[f'torch {grad} C={C} {dtype}']
                assert torch_path['total'] > (2.5 if grad == 'exact' else 1.9) * fused['total']
    # C wider than one block: x and g are read twice (the second time mostly from L2 on a GPU)
    assert rows['fused-chunked exact C=64 fp32']['total'] == 7 + 2 / 64


def test_torch_path_traffic_counts():
    # the table's PyTorch rows, counted here without the interpreter
    assert relu_tn_traffic((2, 32, 4, 4), relu_only=True)['total'] == 5.0
    exact = relu_tn_traffic((2, 32, 4, 4), grad='exact')
    assert (exact['forward'], exact['backward']) == (5 + 2 / 32, 8 + 3 / 32)
    assert relu_tn_traffic((2, 32, 4, 4), grad='paper')['backward'] == 5 + 1 / 32


def test_auto_runs_pytorch_on_cpu_and_forcing_triton_there_fails_loudly():
    x = torch.randn(2, 4, 3, 3)
    assert tn_backend.get_tn_kernel() == 'auto'
    assert tn_backend.fused_relu_tn_impl(x) is None
    assert tn_backend.fused_relu_tn_impl(x.double()) is None
    with tn_backend.tn_kernel('torch'):
        assert tn_backend.fused_relu_tn_impl(x) is None
    with tn_backend.tn_kernel('triton'):  # loads the kernels (Triton imports without a GPU)
        with pytest.raises(RuntimeError, match='TRITON_INTERPRET'):
            relu_tensor_norm(x)
        assert tn_backend.fused_relu_tn_impl(object()) is None  # e.g. an fx.Proxy: the PyTorch path
    assert tn_backend.get_tn_kernel() == 'auto'
    with pytest.raises(ValueError, match='TN kernel'):
        tn_backend.set_tn_kernel('cuda')


def test_environment_variable_selects_the_path():
    code = 'from timm_normplugins.layers import tn_backend; print(tn_backend.get_tn_kernel())'
    env = dict(os.environ, TIMM_NORMPLUGINS_TN_KERNEL='torch', PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == 'torch', out.stderr[-2000:]


def test_torch_compile_keeps_the_kernels_in_forward_and_backward(monkeypatch):
    # No GPU to run a compiled graph here: capture the joint forward+backward graph AOTAutograd hands to
    # the backend (before anything runs) and check that both kernels are in it as Triton kernel calls.
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import default_partition

    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    from timm_normplugins.layers import ReLUTN
    from timm_normplugins.layers import tensor_norm_triton as tnt
    tn_backend.set_tn_kernel('triton')
    monkeypatch.setattr(tn_backend.TN_KERNEL, 'interpret', True)  # let CPU tensors take the fused path while tracing
    joint = []

    class Captured(Exception):
        pass

    def partition(graph, *args, **kwargs):
        wrappers = [n for n in graph.graph.nodes if 'triton_kernel_wrapper' in str(n.target)]
        kernels = {kernel_side_table.get_kernel(n.kwargs['kernel_idx']).fn.__name__ for n in wrappers}
        joint.append((kernels, {str(n.target) for n in graph.graph.nodes}))
        return default_partition(graph, *args, **kwargs)

    def stop(gm, inputs):
        raise Captured

    torch._dynamo.reset()
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), ReLUTN(inplace=True, grad='exact'))
        compiled = torch.compile(model, backend=aot_autograd(fw_compiler=stop, partition_fn=partition),
                                 fullgraph=True)
        with pytest.raises(Exception) as info:
            compiled(torch.randn(2, 3, 8, 8))
        assert 'Captured' in repr(info.value) or isinstance(info.value, Captured)
    finally:
        tn_backend.set_tn_kernel('auto')
        torch._dynamo.reset()
    kernels, targets = joint[0]
    assert kernels == {tnt._relu_tn_fwd_kernel.fn.__name__, tnt._relu_tn_bwd_kernel.fn.__name__}
    assert not targets & {'aten.relu.default', 'aten.mean.dim', 'aten.threshold_backward.default'}
