""" Which implementation ReLU+TN runs: the fused Triton kernels or the PyTorch ops.

* ``'auto'`` (default): the Triton kernels for CUDA tensors in fp32/bf16/fp16 when Triton imports,
  the PyTorch path everywhere else (CPU, fp64, no Triton).
* ``'triton'``: always the kernels; an input they cannot take raises instead of silently falling back,
  so a comparison never measures the wrong path. CPU tensors run them only under ``TRITON_INTERPRET=1``
  (Triton's interpreter, what the tests use).
* ``'torch'``: always the PyTorch path.

Set it with the environment variable ``TIMM_NORMPLUGINS_TN_KERNEL`` (read at import), with
:func:`set_tn_kernel`, or for a block with ``with tn_kernel('torch'): ...``. Change it outside compiled
code: ``torch.compile`` guards on it and recompiles when it changes.

This module imports Triton only where the kernels can run (a CUDA machine, or the interpreter), so a
CPU-only install pays nothing.
"""
import os
from contextlib import contextmanager
from typing import Callable, Optional

import torch

__all__ = ['TN_KERNELS', 'ENV_VAR', 'get_tn_kernel', 'set_tn_kernel', 'tn_kernel', 'fused_relu_tn_impl']

TN_KERNELS = ('auto', 'triton', 'torch')
ENV_VAR = 'TIMM_NORMPLUGINS_TN_KERNEL'

_mode = 'auto'
_impl: Optional[Callable] = None   # tensor_norm_triton.relu_tensor_norm_triton once loaded
_load_error: Optional[str] = None
_interpret = os.environ.get('TRITON_INTERPRET') == '1'
_SUPPORTED = (torch.float32, torch.bfloat16, torch.float16)


def _check(mode: str) -> str:
    if mode not in TN_KERNELS:
        raise ValueError(f'TN kernel must be one of {TN_KERNELS}, got {mode!r}')
    return mode


def _load() -> None:
    global _impl, _load_error
    if _impl is not None or _load_error is not None:
        return
    try:
        from .tensor_norm_triton import relu_tensor_norm_triton
        _impl = relu_tensor_norm_triton
    except Exception as e:  # no Triton, or one this torch cannot register ops with: PyTorch path
        _load_error = f'{type(e).__name__}: {e}'


def get_tn_kernel() -> str:
    return _mode


def set_tn_kernel(mode: str) -> None:
    """Select ``'auto'``, ``'triton'`` or ``'torch'`` (see the module docstring)."""
    global _mode
    _mode = _check(mode)
    if mode == 'triton':
        _load()
        if _impl is None:
            raise RuntimeError(f'TN kernel "triton" requested but the Triton kernels did not load ({_load_error})')


@contextmanager
def tn_kernel(mode: str):
    """``with tn_kernel('torch'): ...`` -- the implementation for a block (restored afterwards)."""
    previous = _mode
    set_tn_kernel(mode)
    try:
        yield
    finally:
        set_tn_kernel(previous)


def fused_relu_tn_impl(x) -> Optional[Callable]:
    """The fused implementation ``f(x, paper_grad, inplace)`` if ``x`` should run it, else None.

    Only attribute reads, so ``torch.compile`` traces it without a graph break; a non-tensor (an
    ``fx.Proxy`` during symbolic tracing) gets None.
    """
    if _mode == 'torch' or not isinstance(x, torch.Tensor):
        return None
    if _mode == 'auto':
        return _impl if _impl is not None and x.device.type == 'cuda' and x.dtype in _SUPPORTED else None
    runnable = x.device.type == 'cuda' or (_interpret and x.device.type == 'cpu')
    if _impl is None or not runnable or x.dtype not in _SUPPORTED:
        raise RuntimeError(
            f'TN kernel "triton" requested for a {x.dtype} tensor on {x.device}: the kernels take fp32/bf16/fp16 '
            f'CUDA tensors (CPU ones only under TRITON_INTERPRET=1)'
            + (f'; not loaded: {_load_error}' if _load_error else ''))
    return _impl


_mode = _check(os.environ.get(ENV_VAR, 'auto').strip().lower() or 'auto')
if _mode != 'torch' and (torch.cuda.is_available() or (_interpret and _mode == 'triton')):
    _load()
