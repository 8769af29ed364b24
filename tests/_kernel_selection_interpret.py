""" Kernel selection with Triton's interpreter as the device (the CPU under ``TRITON_INTERPRET=1``).

Run by tests/test_kernel_selection.py in a subprocess (TRITON_INTERPRET must be set before Triton is
imported) with no kernel variable set, so every op is on ``'auto'``. The kernels are broken for real --
a dtype table that reads fp32 memory as fp16, a block size Triton refuses to compile, a launch tiling that
drops channels -- and the selection must fall back (``'auto'``, one warning) or raise (``'triton'``).
Prints one JSON line.
"""
import json
import sys
import warnings

import torch
import triton.language as tl

from timm_normplugins.layers import relu_tensor_norm, tn_backend
from timm_normplugins.layers import tensor_norm_triton as tnt
from timm_normplugins.optim import centralization as c
from timm_normplugins.optim import centralize_triton as ct


def centralize_twice(dtype):
    """Two multi-tensor centralizations; returns (warnings, max |filter mean|, rows launches)."""
    launches = sum(ct.LAUNCHES.values())
    worst = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for _ in range(2):
            ts = [torch.randn(8, 4, 3, 3).add_(1).to(dtype), torch.randn(5, 40).add_(1).to(dtype)]
            c.centralize_foreach_(ts, [c.centralization_spec(t.shape) for t in ts])
            worst = max(worst, *(float(t.float().mean(dim=tuple(range(1, t.dim()))).abs().max()) for t in ts))
    ours = [str(w.message) for w in caught if 'WC/GC' in str(w.message)]
    return ours, worst, sum(ct.LAUNCHES.values()) - launches


def main():
    out = {'modes': [tn_backend.get_tn_kernel(), c.get_wcgc_kernel()]}

    # defaults where Triton runs: WC/GC on the rows kernel, TN on the PyTorch ops
    x = torch.randn(2, 6, 3, 3)
    before = sum(tnt.LAUNCHES.values())
    relu_tensor_norm(x)
    out['tn_default_launches'] = sum(tnt.LAUNCHES.values()) - before
    out['wcgc_ok'] = centralize_twice(torch.float32)
    out['wcgc_verdicts'] = {str(k[1]): v for k, v in c.WCGC_KERNEL.verdicts.items()}

    # the kernel disagrees (fp32 memory read as fp16): 'auto' falls back, one warning
    c.WCGC_KERNEL.reset_checks()
    ct._TL_DTYPES[torch.float32] = tl.float16
    out['wcgc_disagrees'] = centralize_twice(torch.float32)
    ct._TL_DTYPES[torch.float32] = tl.float32

    # the kernel does not compile (a block Triton refuses): fallback for every dtype, still one warning
    c.WCGC_KERNEL.reset_checks()
    blocks, ct._BLOCKS = ct._BLOCKS, (100, 1000)
    ct._plans.clear()
    warned_fp32, worst_fp32, launches_fp32 = centralize_twice(torch.float32)
    warned_bf16, worst_bf16, launches_bf16 = centralize_twice(torch.bfloat16)
    out['wcgc_no_compile'] = [warned_fp32 + warned_bf16, max(worst_fp32, worst_bf16), launches_fp32 + launches_bf16]
    # forced, the same failure raises instead of falling back
    c.WCGC_KERNEL.reset_checks()
    c.set_wcgc_kernel('triton')
    try:
        centralize_twice(torch.float32)
        out['wcgc_forced_no_compile'] = 'ran'
    except RuntimeError as e:
        out['wcgc_forced_no_compile'] = str(e)
    c.set_wcgc_kernel('auto')
    ct._BLOCKS = blocks
    ct._plans.clear()

    # TN opt-in: the working kernel passes its check and runs
    tn_backend.set_tn_kernel('triton')
    before = sum(tnt.LAUNCHES.values())
    relu_tensor_norm(x)
    out['tn_forced_launches'] = sum(tnt.LAUNCHES.values()) - before
    # a tiling that drops channels: the forced kernel raises, 'auto' with Triton as default would fall back
    tn_backend.TN_KERNEL.reset_checks()
    blocks_fn = tnt._blocks
    tnt._blocks = lambda C, P: (16, 4, True, 4)
    for name in ('tn_forced_disagrees',):
        try:
            relu_tensor_norm(x)
            out[name] = 'ran'
        except RuntimeError as e:
            out[name] = str(e)
    tn_backend.TN_KERNEL.reset_checks()
    tn_backend.set_tn_kernel('auto')
    tn_backend.TN_KERNEL.default = 'triton'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        y = relu_tensor_norm(x)
        relu_tensor_norm(x)
    out['tn_auto_disagrees'] = [[str(w.message) for w in caught if 'TN' in str(w.message)],
                                float((y - (x.relu() - x.relu().mean(1, keepdim=True))).abs().max())]
    tnt._blocks = blocks_fn
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
