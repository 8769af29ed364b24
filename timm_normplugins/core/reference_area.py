""" The reference areas of the WC/GC paper (Table 2): which elements of a weight share one mean.

WC/GC (optim/) subtracts that mean; weight standardization (retrofit/weight_reparam.py) normalises over the
same areas, so the shapes are resolved here, below both.

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
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

__all__ = ['AREAS', 'CentralizationSpec', 'centralization_spec']

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
