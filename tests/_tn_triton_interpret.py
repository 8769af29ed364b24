""" The fused ReLU+TN Triton kernels checked on the CPU through Triton's interpreter.

Run by tests/test_tensor_norm_triton.py in a subprocess with ``TRITON_INTERPRET=1`` (it must be set before
Triton is imported) and ``TIMM_NORMPLUGINS_TN_KERNEL=triton``; also runnable by hand:

    TRITON_INTERPRET=1 TIMM_NORMPLUGINS_TN_KERNEL=triton PYTHONPATH=. python tests/_tn_triton_interpret.py

Prints one JSON line (what ran, the traffic counts); any failed check raises.
"""
import itertools
import json
import os
import sys

import torch
import torch.nn as nn

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

import timm_normplugins.layers.tensor_norm_triton as tnt  # noqa: E402
from timm_normplugins.layers import ReLUTN, relu_tensor_norm  # noqa: E402
from timm_normplugins.layers.tn_backend import get_tn_kernel, tn_kernel  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts'))
from relu_tn_traffic import relu_tn_traffic  # noqa: E402  (a measurement tool in scripts/)

torch.set_num_threads(1)
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# odd C and odd spatial sizes (masked lanes), a 1-D and a 3-D spatial rank, a plain (N, C) input
SHAPES = [(2, 37, 5, 7), (3, 16, 4, 4), (2, 24, 9), (1, 20, 3, 2, 3), (5, 24)]
# (MAX_BLOCK_C, TILE_ELEMS): the default single-pass blocks, and tiny tiles that walk C in chunks of 16
# over several position blocks (the path of C > 2048 on a GPU)
TILINGS = [(tnt.MAX_BLOCK_C, tnt._TILE_ELEMS), (16, 128)]


def away_from_kink(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    return (x + 0.1 * torch.sign(x)).to(dtype)


def layouts(x):
    yield 'nchw', x
    if x.dim() == 4:
        yield 'channels_last', x.to(memory_format=torch.channels_last)
    if x.dim() == 5:
        yield 'channels_last_3d', x.to(memory_format=torch.channels_last_3d)


def formula(x64, g64, grad):
    r = x64.relu()
    y = r - r.mean(1, keepdim=True)
    mask = x64 > 0
    dx = (g64 - g64.mean(1, keepdim=True)) * mask if grad == 'exact' else g64 * mask
    return y, dx


def run(x, g, grad, kernel):
    a = x.clone().requires_grad_()
    with tn_kernel(kernel):
        y = relu_tensor_norm(a, grad)
    y.backward(g)
    return y, a.grad


def check_values(stats):
    for (block_c, tile), shape, dname, grad in itertools.product(TILINGS, SHAPES, DTYPES, ('exact', 'paper')):
        tnt.MAX_BLOCK_C, tnt._TILE_ELEMS = block_c, tile
        dtype = DTYPES[dname]
        for layout, x in layouts(away_from_kink(shape, dtype, seed=len(stats['cases']))):
            g = torch.randn(shape).to(dtype)
            if layout != 'nchw':
                g = g.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
            before = sum(tnt.LAUNCHES.values())
            y, dx = run(x, g, grad, 'triton')
            assert sum(tnt.LAUNCHES.values()) == before + 2, 'the kernels did not run'
            y_ref, dx_ref = formula(x.double(), g.double(), grad)
            y_torch, dx_torch = run(x, g, grad, 'torch')
            tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
            case = f'{shape} {layout} {dname} {grad} block_c={block_c}'
            torch.testing.assert_close(y.double(), y_ref, **tol, msg=lambda m: f'{case}: forward {m}')
            torch.testing.assert_close(dx.double(), dx_ref, **tol, msg=lambda m: f'{case}: grad {m}')
            torch.testing.assert_close(y, y_torch, **tol, msg=lambda m: f'{case}: forward vs torch {m}')
            torch.testing.assert_close(dx, dx_torch, **tol, msg=lambda m: f'{case}: grad vs torch {m}')
            assert y.dtype == dtype and dx.dtype == dtype and y.stride() == x.stride(), case
            if dtype == torch.float16:
                # one rounding (maths in fp32) instead of several in fp16: never further from the formula.
                # (Not checked for bf16: the interpreter truncates fp32 -> bf16, a GPU rounds to nearest.)
                err, err_torch = (dx.double() - dx_ref).abs().max(), (dx_torch.double() - dx_ref).abs().max()
                assert err <= err_torch, f'{case}: kernel error {err} > PyTorch path {err_torch}'
            stats['cases'].append(case)
    tnt.MAX_BLOCK_C, tnt._TILE_ELEMS = TILINGS[0]


def check_module_behaviour(stats):
    # in place: the activation is overwritten and the saved tensors are (y, per-position mean) only
    conv = nn.Conv2d(3, 6, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    h = conv(x)
    ref = h.detach().relu() - h.detach().relu().mean(1, keepdim=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ReLUTN(inplace=True)(h)
    assert y.data_ptr() == h.data_ptr() and tnt.LAUNCHES['fwd_'] > 0
    torch.testing.assert_close(y, ref)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    assert y.untyped_storage().data_ptr() in storages
    assert sum(storages.values()) == y.numel() * 4 + y.numel() // 6 * 4
    y.pow(2).sum().backward()
    assert conv.weight.grad is not None

    # an expanded (stride-0) incoming gradient and an input whose spatial dims do not flatten
    base = away_from_kink((2, 5, 4, 6), torch.float32, seed=1)
    for x in (base, base.transpose(2, 3)):
        a = x.clone().requires_grad_() if x.is_contiguous() else x.detach().requires_grad_()
        relu_tensor_norm(a).sum().backward()
        _, dx_ref = formula(x.double(), torch.ones_like(x).double(), 'exact')
        torch.testing.assert_close(a.grad.double(), dx_ref, atol=1e-6, rtol=0)

    # empty batches launch nothing
    e = torch.zeros(0, 4, 3, 3, requires_grad=True)
    relu_tensor_norm(e).sum().backward()
    assert e.grad.shape == e.shape

    # a whole TN network: the same forward and parameter gradients as on the PyTorch path
    import timm
    import timm_normplugins  # noqa: F401
    torch.manual_seed(0)
    model = timm.create_model('cifar_resnet20_tn', num_classes=10)
    inp = torch.randn(2, 3, 16, 16)
    results = {}
    for kernel in ('torch', 'triton'):
        model.zero_grad()
        with tn_kernel(kernel):
            out = model(inp)
            out.square().sum().backward()
        results[kernel] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results['triton'][0], results['torch'][0], atol=1e-4, rtol=1e-4)
    for a, b in zip(results['triton'][1], results['torch'][1]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    stats['model'] = 'cifar_resnet20_tn'


def traffic():
    rows = {}
    for C in (16, 64):
        for dname in ('fp32', 'bf16'):
            shape, dtype = (2, C, 6, 6), DTYPES[dname]
            rows[f'relu C={C} {dname}'] = relu_tn_traffic(shape, dtype, relu_only=True)
            for grad in ('exact', 'paper'):
                rows[f'torch {grad} C={C} {dname}'] = relu_tn_traffic(shape, dtype, grad)
                rows[f'fused {grad} C={C} {dname}'] = relu_tn_traffic(shape, dtype, grad, fused=True)
    tnt.MAX_BLOCK_C = 16  # the chunked path (C > MAX_BLOCK_C) re-reads x and g once
    for grad in ('exact', 'paper'):
        rows[f'fused-chunked {grad} C=64 fp32'] = relu_tn_traffic((2, 64, 6, 6), torch.float32, grad, fused=True)
    tnt.MAX_BLOCK_C = TILINGS[0][0]
    return rows


def main():
    assert get_tn_kernel() == 'triton', 'run with TIMM_NORMPLUGINS_TN_KERNEL=triton'
    assert isinstance(tnt._relu_tn_fwd_kernel, InterpretedFunction), 'the kernels are not interpreted'
    stats = {'cases': []}
    check_values(stats)
    check_module_behaviour(stats)
    stats['traffic'] = traffic()
    stats['launches'] = dict(tnt.LAUNCHES)
    stats['num_cases'] = len(stats.pop('cases'))
    print(json.dumps(stats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
