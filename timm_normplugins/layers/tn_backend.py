""" Which implementation ReLU+TN runs: the fused Triton kernels or the PyTorch ops.

The choice is ``core/kernels.py``'s, op ``'tn'``:

* ``'auto'`` (default): the PyTorch ops everywhere. On an H200 the fused kernels were slower than the
  PyTorch ops in eager mode (docs/BENCHMARKS.md, GPU check 2026-12-04), and under ``torch.compile``
  Inductor fuses the PyTorch ops with its own BN+ReLU kernels.
* ``'triton'`` (opt-in): the kernels, checked once per (device, dtype) against the PyTorch ops; an input
  they cannot take or a failed check raises. CPU tensors run them only under ``TRITON_INTERPRET=1``
  (Triton's interpreter, what the tests use).
* ``'torch'``: the PyTorch ops.

Set it with ``TIMM_NORMPLUGINS_KERNELS=tn=triton`` (or the older ``TIMM_NORMPLUGINS_TN_KERNEL=triton``),
with :func:`set_tn_kernel`, or for a block with ``with tn_kernel('triton'): ...``. Change it outside
compiled code: ``torch.compile`` guards on it and recompiles when it changes.

This module imports Triton only when the kernels are asked for, so a CPU-only install pays nothing.
"""
from contextlib import contextmanager
from typing import Callable, Optional

import torch

from ..core.kernels import ENV_ALIASES, KERNEL_MODES, KernelSelector

__all__ = ['TN_KERNELS', 'ENV_VAR', 'TN_KERNEL', 'get_tn_kernel', 'set_tn_kernel', 'tn_kernel',
           'fused_relu_tn_impl']

TN_KERNELS = KERNEL_MODES
ENV_VAR = ENV_ALIASES['tn']  # the older, per-op variable; core/kernels.py's ENV_VAR covers every op
_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)


def _load() -> Callable:
    from .tensor_norm_triton import relu_tensor_norm_triton
    return relu_tensor_norm_triton


def _reference(x: torch.Tensor, g: torch.Tensor, paper_grad: bool):
    """Output and input gradient of ReLU+TN by the formula, in float64."""
    x = x.detach().double().requires_grad_()
    r = torch.relu(x)
    if paper_grad:  # Alg. 1: TN passes the gradient through unchanged
        y = r - r.detach().mean(1, keepdim=True)
    else:
        y = r - r.mean(1, keepdim=True)
    y.backward(g.double())
    return y.detach(), x.grad


def _check(kernel: Callable, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Run the kernels on a small input, both gradient modes, against the formula."""
    from . import tensor_norm_triton as tnt
    launches = tnt.LAUNCHES.copy()  # the check's launches are not the caller's work
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 3, 5, generator=gen)
    x = (x + 0.1 * torch.sign(x)).to(device=device, dtype=dtype)  # away from the ReLU kink
    g = torch.randn(x.shape, generator=gen).to(device=device, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    try:
        for paper_grad in (False, True):
            a = x.clone().requires_grad_()
            y = kernel(a, paper_grad, False)
            y.backward(g)
            y_ref, dx_ref = _reference(x, g, paper_grad)
            for name, got, want in (('output', y, y_ref), ('gradient', a.grad, dx_ref)):
                err = float((got.double() - want).abs().max())
                if not err <= tol * (1 + float(want.abs().max())):
                    return f'its {name} ({"paper" if paper_grad else "exact"} grad) differs from the PyTorch ops ' \
                           f'by {err:.3g}'
    finally:
        tnt.LAUNCHES.clear()
        tnt.LAUNCHES.update(launches)
    return None


TN_KERNEL = KernelSelector('tn', 'TN', load=_load, check=_check, default='torch', dtypes=_SUPPORTED)


def get_tn_kernel() -> str:
    return TN_KERNEL.mode


def set_tn_kernel(mode: str) -> None:
    """Select ``'auto'``, ``'triton'`` or ``'torch'`` (see the module docstring)."""
    TN_KERNEL.set(mode)


@contextmanager
def tn_kernel(mode: str):
    """``with tn_kernel('torch'): ...`` -- the implementation for a block (restored afterwards)."""
    previous = TN_KERNEL.mode
    set_tn_kernel(mode)
    try:
        yield
    finally:
        set_tn_kernel(previous)


def fused_relu_tn_impl(x) -> Optional[Callable]:
    """The fused implementation ``f(x, paper_grad, inplace)`` if ``x`` should run it, else None.

    A non-tensor (an ``fx.Proxy`` during symbolic tracing) gets None.
    """
    if TN_KERNEL.mode == 'torch' or not isinstance(x, torch.Tensor):
        return None
    return TN_KERNEL.kernel if TN_KERNEL.use_kernel(x.device, x.dtype) else None
