""" Weight and Gradient Centralization: the mean subtraction of eq.2 (WC) and eq.4 (GC)

Both subtract from a tensor its mean over a *reference area* (Table 2 of the WC/GC paper).
The areas (``'tensor'``, the paper's WC / GC; ``'global'``, ``'channel'``, ``'instance'``) are defined in
``core/reference_area.py`` (shared with weight standardization) and re-exported here. The functions here are
layout agnostic (they reduce over logical dims and subtract in place), so ``channels_last`` weights and
gradients keep their memory format.
"""
from typing import List, Optional, Set

import torch

from ..core.kernels import ENV_ALIASES, KERNEL_MODES, KernelSelector
from ..core.reference_area import AREAS, CentralizationSpec, centralization_spec

__all__ = ['AREAS', 'CentralizationSpec', 'centralization_spec', 'centralize_', 'centralize_foreach_',
           'set_wcgc_kernel', 'get_wcgc_kernel', 'WCGC_KERNELS']


def _view(tensor: torch.Tensor, spec: CentralizationSpec) -> torch.Tensor:
    # splitting one dim is always expressible as a view, whatever the strides (channels_last too)
    return tensor.unflatten(0, (spec.split_groups, -1)) if spec.split_groups > 1 else tensor


def centralize_(tensor: torch.Tensor, spec: CentralizationSpec) -> torch.Tensor:
    """Subtract the reference-area mean from ``tensor`` in place (eq.2 / eq.4). Returns ``tensor``."""
    view = _view(tensor, spec)
    view.sub_(view.mean(dim=spec.dims, keepdim=True))
    return tensor


def is_centralized(tensor: torch.Tensor, spec: CentralizationSpec, rtol: float = 1e-5) -> bool:
    """Whether every reference-area mean is zero up to rounding (|mean| <= rtol * max |element|)."""
    view = _view(tensor.detach(), spec).float()
    scale = float(view.abs().max())
    return float(view.mean(dim=spec.dims).abs().max()) <= rtol * scale if scale > 0 else True


def centralize_foreach_(tensors: List[torch.Tensor], specs: List[CentralizationSpec]) -> None:
    """Multi-tensor form of :func:`centralize_`.

    On CUDA (with Triton; see :func:`set_wcgc_kernel`) the tensors whose reference areas are contiguous
    rows -- the default ``'tensor'`` area of conv and linear weights -- are centralized by a few Triton
    launches for all of them, one read and one write per element (``centralize_triton.py``). The rest,
    and everything elsewhere, take one mean per tensor and one ``torch._foreach_sub_`` for all subtractions
    (measured on CPU: stacking same-shaped tensors or a flat ``segment_reduce`` costs more in extra copies
    than it saves).
    """
    if not tensors:
        return
    kernel_dtypes = _rows_kernel_dtypes(tensors)
    if kernel_dtypes:
        rows = [(t, s) for t, s in zip(tensors, specs) if t.dtype in kernel_dtypes]
        others = [(t, s) for t, s in zip(tensors, specs) if t.dtype not in kernel_dtypes]
        rest_t, rest_s = WCGC_KERNEL.kernel([t for t, _ in rows], [s for _, s in rows])
        tensors = rest_t + [t for t, _ in others]
        specs = rest_s + [s for _, s in others]
        if not tensors:
            return
    views = [_view(t, s) for t, s in zip(tensors, specs)]
    means = [v.mean(dim=s.dims, keepdim=True) for v, s in zip(views, specs)]
    torch._foreach_sub_(views, means)


# --- which implementation the multi-tensor path runs (core/kernels.py, op 'wcgc') -----------------------
_ROWS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _load_rows_kernel():
    from .centralize_triton import centralize_rows_
    return centralize_rows_


def _check_rows_kernel(kernel, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """The rows kernel against the means + subtraction on a few small conv / linear shapes."""
    from . import centralize_triton
    launches = centralize_triton.LAUNCHES.copy()  # the check's launches are not the caller's work
    gen = torch.Generator().manual_seed(0)
    shapes = [(6, 3, 3, 3), (5, 300), (3, 2000)]  # one-block rows and rows longer than the largest block
    tensors = [torch.randn(s, generator=gen).add_(1.0).to(device=device, dtype=dtype) for s in shapes]
    specs = [centralization_spec(s) for s in shapes]
    want = [centralize_(t.clone(), s) for t, s in zip(tensors, specs)]
    try:
        rest, _ = kernel(tensors, specs)
    finally:
        centralize_triton.LAUNCHES.clear()
        centralize_triton.LAUNCHES.update(launches)
    if rest:
        return f'it left {len(rest)} of {len(tensors)} contiguous weights to the PyTorch path'
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for shape, got, ref in zip(shapes, tensors, want):
        err = float((got.float() - ref.float()).abs().max())
        if not err <= tol * (1 + float(ref.float().abs().max())):
            return f'its result for a {shape} weight differs from the PyTorch path by {err:.3g}'
    return None


WCGC_KERNEL = KernelSelector('wcgc', 'WC/GC', load=_load_rows_kernel, check=_check_rows_kernel, default='triton',
                             dtypes=_ROWS_DTYPES)
WCGC_KERNELS = KERNEL_MODES
WCGC_KERNEL_ENV = ENV_ALIASES['wcgc']  # the older, per-op variable; core/kernels.py's ENV_VAR covers every op


def set_wcgc_kernel(mode: str) -> None:
    """``'auto'`` (the Triton rows kernel where Triton runs: CUDA, or the CPU under ``TRITON_INTERPRET=1``),
    ``'triton'`` (always; a failed first-use check raises) or ``'torch'`` (means + ``_foreach_sub_``). Also
    ``TIMM_NORMPLUGINS_KERNELS=wcgc=...`` or the older ``TIMM_NORMPLUGINS_WCGC_KERNEL`` (core/kernels.py)."""
    WCGC_KERNEL.set(mode)


def get_wcgc_kernel() -> str:
    return WCGC_KERNEL.mode


def _rows_kernel_dtypes(tensors: List[torch.Tensor]) -> Set[torch.dtype]:
    """The dtypes of ``tensors`` the rows kernel takes (first-use checked); the rest run the torch path."""
    if WCGC_KERNEL.mode == 'torch' or torch.compiler.is_compiling():  # compiled steps: inductor fuses the torch ops
        return set()
    device = tensors[0].device
    return {dt for dt in {t.dtype for t in tensors} if WCGC_KERNEL.use_kernel(device, dt, strict_dtype=False)}
