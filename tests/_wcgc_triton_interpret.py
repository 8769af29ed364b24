""" WC/GC's multi-tensor Triton kernel checked on the CPU through Triton's interpreter.

Run by tests/test_wcgc_triton.py with ``TRITON_INTERPRET=1`` and ``TIMM_NORMPLUGINS_WCGC_KERNEL=triton``;
prints one JSON line, any failed check raises.
"""
import copy
import json
import os
import sys

import torch
import torch.nn as nn

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import timm_normplugins.optim.centralize_triton as ct  # noqa: E402
from timm_normplugins.optim.centralization import (  # noqa: E402
    centralization_spec, centralize_, centralize_foreach_, get_wcgc_kernel, set_wcgc_kernel)

torch.set_num_threads(1)


def weights(dtype=torch.float32, seed=0):
    """(tensor, spec): conv NCHW and channels_last, grouped, linear, a row longer than every block,
    'instance' area, and areas the kernel leaves to torch ('channel', 'global', transposed conv)."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return (torch.randn(*shape, generator=g) + 0.3).to(dtype)
    cases = [
        (w(8, 3, 3, 3), centralization_spec((8, 3, 3, 3))),
        (w(16, 8, 3, 3).to(memory_format=torch.channels_last), centralization_spec((16, 8, 3, 3))),
        (w(12, 2, 3, 3), centralization_spec((12, 2, 3, 3), groups=4)),
        (w(10, 300), centralization_spec((10, 300))),
        (w(3, 9001), centralization_spec((3, 9001))),            # > 8192: the two-pass loop
        (w(6, 4, 3, 3), centralization_spec((6, 4, 3, 3), 'instance')),
        (w(6, 4, 3, 3), centralization_spec((6, 4, 3, 3), 'channel')),
        (w(6, 4, 3, 3), centralization_spec((6, 4, 3, 3), 'global')),
        (w(4, 6, 3, 3), centralization_spec((4, 6, 3, 3), transposed=True)),
    ]
    return cases


def check_values(out):
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        cases = weights(dtype)
        expected = [centralize_(t.clone(), s) for t, s in cases]
        tensors = [t.clone() for t, _ in cases]
        strides = [t.stride() for t in tensors]
        before = sum(ct.LAUNCHES.values())
        centralize_foreach_(tensors, [s for _, s in cases])
        assert sum(ct.LAUNCHES.values()) > before, 'the kernel did not run'
        rows = [ct.row_layout(t, s) is not None for t, s in cases]
        assert rows == [True] * 6 + [False] * 3, rows
        tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
        for t, e, st in zip(tensors, expected, strides):
            torch.testing.assert_close(t, e, **tol)
            assert t.stride() == st
        out[f'values_{dtype}'] = 'ok'


def check_launch_count(out):
    # 3 or 30 weights of the same row-length buckets: the same number of launches
    counts = []
    for n in (3, 30):
        ts = [torch.randn(8 + i % 5, 16, 3, 3) for i in range(n)]
        specs = [centralization_spec(t.shape) for t in ts]
        before = sum(ct.LAUNCHES.values())
        centralize_foreach_(ts, specs)
        counts.append(sum(ct.LAUNCHES.values()) - before)
        for t in ts:
            assert t.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    assert counts[0] == counts[1] == 1, counts
    out['launches_3_vs_30_tensors'] = counts


def check_optimizer(out):
    # sgd_wcgc with the multi-tensor path: the kernel and the torch ops give the same training
    from timm_normplugins.optim import add_centralization
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 16),
                          nn.ReLU(), nn.Linear(16, 5))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    results = {}
    for kernel in ('torch', 'triton'):
        m = copy.deepcopy(model)
        set_wcgc_kernel(kernel)
        opt = add_centralization(torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), m,
                                 foreach=True, wc_every=1)  # the multi-tensor path, as on a GPU
        assert opt.wcgc.foreach
        for _ in range(3):
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        results[kernel] = [p.detach().clone() for p in m.parameters()]
    set_wcgc_kernel('triton')
    for a, b in zip(results['triton'], results['torch']):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    out['optimizer'] = 'sgd + WC/GC'


def main():
    assert get_wcgc_kernel() == 'triton', 'run with TIMM_NORMPLUGINS_WCGC_KERNEL=triton'
    out = {}
    check_values(out)
    check_launch_count(out)
    check_optimizer(out)
    out['launches'] = {str(k): v for k, v in ct.LAUNCHES.items()}
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
