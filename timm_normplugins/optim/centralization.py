""" Weight and Gradient Centralization: the mean subtraction of eq.2 (WC) and eq.4 (GC)

Both subtract from a tensor its mean over a *reference area* (Table 2 of the WC/GC paper).
A conv weight ``(O, I/g, *k)`` (``g`` groups), a linear weight ``(O, I)`` and a transposed conv
weight ``(I, O/g, *k)`` are seen as ``g`` groups of ``(out, in, kernel)`` blocks; the areas are

* ``'tensor'``   one mean per output filter, over its inputs and kernel (the paper's WC / GC).
                 A grouped or depthwise filter only holds its own group's inputs.
* ``'global'``   one mean over the whole tensor.
* ``'channel'``  one mean per input channel, over the outputs of its group and the kernel.
* ``'instance'`` one mean per 2-D kernel (per (out, in) pair), over the kernel positions.

A mean over a single element would set it to zero for good (a ``(C, 1, 1, 1)`` gain, a 1x1
depthwise kernel, ``'instance'`` on a linear weight): :func:`centralization_spec` returns ``None``
for those, and such tensors are left alone, never frozen.

The functions here are layout agnostic (they reduce over logical dims and subtract in place), so
``channels_last`` weights and gradients keep their memory format.
"""
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['AREAS', 'CentralizationSpec', 'centralization_spec', 'centralize_', 'centralize_foreach_',
           'set_wcgc_kernel', 'get_wcgc_kernel', 'WCGC_KERNELS']

AREAS = ('tensor', 'global', 'channel', 'instance')


@dataclass(frozen=True)
class CentralizationSpec:
    """How one tensor is centralized.

    Attributes:
        split_groups: split dim 0 into ``(split_groups, -1)`` first (a view, never a copy);
            1 means no split. Needed where a mean spans one group of a grouped conv.
        dims: dims (of the possibly split view) the mean is taken over.
        group_size: number of elements in each mean.
    """
    split_groups: int
    dims: Tuple[int, ...]
    group_size: int


def centralization_spec(
        shape: Sequence[int],
        area: str = 'tensor',
        groups: int = 1,
        transposed: bool = False,
) -> Optional[CentralizationSpec]:
    """Resolve the reference area of a weight of ``shape`` to the dims its mean runs over.

    Args:
        shape: weight shape, ``(O, I/groups, *kernel)`` or, if ``transposed``, ``(I, O/groups, *kernel)``.
        area: one of :data:`AREAS`.
        groups: the layer's ``groups`` (only ``'channel'``, and ``'tensor'`` of transposed convs, depend on it).
        transposed: weight of a ``ConvTransposeNd`` (input channels first).

    Returns:
        The spec, or ``None`` where each mean would cover a single element (the tensor is left alone).
    """
    if area not in AREAS:
        raise ValueError(f'area must be one of {AREAS}, got {area!r}')
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f'centralization needs a weight with >= 2 dims (out, in, ...), got shape {shape}')
    if groups < 1 or shape[0] % groups:
        raise ValueError(f'groups={groups} does not divide dim 0 of weight shape {shape}')
    ndim = len(shape)
    kernel = tuple(range(2, ndim))
    # dims of the (groups, dim0 // groups, dim1, *kernel) view, for means that stay inside one group
    grouped_dim1 = (1,) + tuple(d + 1 for d in range(2, ndim))
    # per output filter == per input channel of a transposed conv, and the other way round
    per_filter, per_in_channel = ('channel', 'tensor') if transposed else ('tensor', 'channel')

    if area == 'global':
        split, dims = 1, tuple(range(ndim))
    elif area == 'instance':
        split, dims = 1, kernel
    elif area == per_filter:
        # dim 0 holds the filters; each row only contains its own group's entries
        split, dims = 1, tuple(range(1, ndim))
    else:  # area == per_in_channel: across dim 0, but only within one group
        split, dims = (groups, grouped_dim1) if groups > 1 else (1, (0,) + kernel)
    view_shape = (groups, shape[0] // groups) + shape[1:] if split > 1 else shape
    group_size = math.prod(view_shape[d] for d in dims) if dims else 1
    if group_size <= 1:
        return None
    return CentralizationSpec(split_groups=split, dims=dims, group_size=group_size)


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
    if _rows_kernel_applies(tensors[0]):
        from .centralize_triton import centralize_rows_
        tensors, specs = centralize_rows_(tensors, specs)
        if not tensors:
            return
    views = [_view(t, s) for t, s in zip(tensors, specs)]
    means = [v.mean(dim=s.dims, keepdim=True) for v, s in zip(views, specs)]
    torch._foreach_sub_(views, means)


# --- which implementation the multi-tensor path runs ----------------------------------------------
WCGC_KERNELS = ('auto', 'triton', 'torch')
WCGC_KERNEL_ENV = 'TIMM_NORMPLUGINS_WCGC_KERNEL'
_wcgc_kernel = 'auto'
_triton_ok: Optional[bool] = None


def set_wcgc_kernel(mode: str) -> None:
    """``'auto'`` (Triton rows kernel for CUDA tensors when Triton imports), ``'triton'`` (always; CPU tensors
    need ``TRITON_INTERPRET=1``) or ``'torch'`` (means + ``_foreach_sub_``). Also read from the environment
    variable ``TIMM_NORMPLUGINS_WCGC_KERNEL``."""
    global _wcgc_kernel
    if mode not in WCGC_KERNELS:
        raise ValueError(f'WC/GC kernel must be one of {WCGC_KERNELS}, got {mode!r}')
    _wcgc_kernel = mode


def get_wcgc_kernel() -> str:
    return _wcgc_kernel


def _rows_kernel_applies(t: torch.Tensor) -> bool:
    global _triton_ok
    if _wcgc_kernel == 'torch' or torch.compiler.is_compiling():  # compiled steps: inductor fuses the torch ops
        return False
    if _wcgc_kernel == 'auto' and t.device.type != 'cuda':
        return False
    if _triton_ok is None:
        try:
            from . import centralize_triton  # noqa: F401
            _triton_ok = True
        except Exception:  # no Triton: the torch path
            _triton_ok = False
    if not _triton_ok and _wcgc_kernel == 'triton':
        raise RuntimeError('WC/GC kernel "triton" requested but Triton does not import')
    return _triton_ok


set_wcgc_kernel(os.environ.get(WCGC_KERNEL_ENV, 'auto').strip().lower() or 'auto')
