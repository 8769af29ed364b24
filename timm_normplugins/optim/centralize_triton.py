""" WC/GC's mean subtraction for many tensors in a few Triton launches (CUDA; CPU under TRITON_INTERPRET=1).

Where a reference area is a contiguous run of memory -- ``'tensor'`` (one output filter) of any dense conv
or linear weight, NCHW or channels_last, and ``'instance'`` (one kernel) of a contiguous conv weight --
every area of every tensor is one *row*. A program loads a row, takes its mean in fp32 and writes the
row minus the mean: one read and one write per element, against two reads and a write for the mean +
``_foreach_sub_`` path. Rows are bucketed by length (a handful of block sizes), and all rows of a bucket
of one dtype go in one launch through a table of tensor addresses, so the launch count does not grow
with the number of parameters.
"""
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from ..core.reference_area import CentralizationSpec

__all__ = ['centralize_rows_', 'row_layout', 'LAUNCHES']

# row-length buckets (elements): each bucket's rows fit its block in registers; longer rows loop twice
_BLOCKS = (256, 1024, 4096, 8192)
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
_PLAIN = (torch.Tensor, torch.nn.Parameter)
LAUNCHES: Counter = Counter()  # launches per bucket block size (eager diagnostics for the tests)


@triton.jit
def _centralize_rows_kernel(table_ptr, row_tensor_ptr, row_start_ptr, row_len, DTYPE: tl.constexpr,
                            BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    r = tl.program_id(0)
    base = tl.load(table_ptr + tl.load(row_tensor_ptr + r)).to(tl.pointer_type(DTYPE))
    ptr = base + tl.load(row_start_ptr + r)
    n = tl.load(row_len + r)
    offs = tl.arange(0, BLOCK)
    if SINGLE:
        ok = offs < n
        v = tl.load(ptr + offs, mask=ok, other=0.0).to(tl.float32)
        mean = tl.sum(v, axis=0) / n
        tl.store(ptr + offs, (v - mean).to(DTYPE), mask=ok)
    else:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n, BLOCK):
            ok = start + offs < n
            acc += tl.load(ptr + start + offs, mask=ok, other=0.0).to(tl.float32)
        mean = tl.sum(acc, axis=0) / n
        for start in range(0, n, BLOCK):
            ok = start + offs < n
            v = tl.load(ptr + start + offs, mask=ok, other=0.0).to(tl.float32)
            tl.store(ptr + start + offs, (v - mean).to(DTYPE), mask=ok)


def row_layout(t: torch.Tensor, spec: CentralizationSpec) -> Optional[Tuple[int, int]]:
    """``(rows, row_length)`` if every reference area of ``t`` is one contiguous run of memory, else None."""
    if spec.split_groups != 1 or t.dtype not in _TL_DTYPES or t.dim() < 2 or type(t) not in _PLAIN:
        return None  # subclasses (DTensor, ...) may not own one flat storage: the torch path
    nd = t.dim()
    if spec.dims == tuple(range(1, nd)):  # per output filter: dim 0 outermost in memory and dense
        dense = t.is_contiguous() or (nd == 4 and t.is_contiguous(memory_format=torch.channels_last)) or (
            nd == 5 and t.is_contiguous(memory_format=torch.channels_last_3d))
        return (t.shape[0], t.numel() // t.shape[0]) if dense and t.shape[0] else None
    if spec.dims == tuple(range(2, nd)) and t.is_contiguous():  # per kernel of a contiguous weight
        rows = t.shape[0] * t.shape[1]
        return (rows, t.numel() // rows) if rows else None
    return None  # 'global' (one long row: better spread over the GPU by torch) and 'channel'


class _Plan:
    """Row metadata of one list of tensor shapes/layouts, on the device; rebuilt only when those change."""

    def __init__(self, layouts: List[Tuple[int, int]], device):
        self.buckets: List[Tuple[int, bool, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        per_bucket: Dict[Tuple[int, bool], Tuple[list, list, list]] = {}
        for i, (rows, length) in enumerate(layouts):
            block = next((b for b in _BLOCKS if length <= b), _BLOCKS[-1])
            key = (block, length <= block)
            tensor_ids, starts, lengths = per_bucket.setdefault(key, ([], [], []))
            tensor_ids += [i] * rows
            starts += range(0, rows * length, length)
            lengths += [length] * rows
        for (block, single), (tensor_ids, starts, lengths) in sorted(per_bucket.items()):
            meta = torch.tensor([tensor_ids, starts, lengths], dtype=torch.int64).to(device)
            self.buckets.append((block, single, meta[0], meta[1], meta[2]))


_plans: Dict[tuple, _Plan] = {}
_tables: Dict[tuple, torch.Tensor] = {}


def _address_table(tensors: Sequence[torch.Tensor], device) -> torch.Tensor:
    # Gradients set to None each step usually come back at the same addresses: reuse the device table then
    key = (str(device),) + tuple(t.data_ptr() for t in tensors)
    table = _tables.get(key)
    if table is None:
        if len(_tables) > 64:
            _tables.clear()
        table = torch.tensor(key[1:], dtype=torch.int64)
        if torch.device(device).type == 'cuda':  # pinned + non_blocking: no wait for the queued GPU work
            table = table.pin_memory().to(device, non_blocking=True)
        _tables[key] = table = table.to(device)
    return table


def centralize_rows_(tensors: Sequence[torch.Tensor], specs: Sequence[CentralizationSpec]):
    """Centralize in place every tensor whose areas are contiguous rows; return ``(tensors, specs)`` of the
    others, for the caller's general path."""
    rest_t, rest_s = [], []
    groups: Dict[tuple, Tuple[list, list]] = {}
    for t, s in zip(tensors, specs):
        layout = row_layout(t, s)
        if layout is None:
            rest_t.append(t)
            rest_s.append(s)
        else:
            members, layouts = groups.setdefault((t.device, t.dtype), ([], []))
            members.append(t)
            layouts.append(layout)
    for (device, dtype), (members, layouts) in groups.items():
        plan_key = (str(device), tuple(layouts))
        plan = _plans.get(plan_key)
        if plan is None:
            plan = _plans[plan_key] = _Plan(layouts, device)
        table = _address_table(members, device)
        for block, single, tensor_ids, starts, lengths in plan.buckets:
            LAUNCHES[block] += 1
            _centralize_rows_kernel[(tensor_ids.numel(),)](
                table, tensor_ids, starts, lengths, DTYPE=_TL_DTYPES[dtype], BLOCK=block, SINGLE=single,
                num_warps=8 if block >= 4096 else 4)
    return rest_t, rest_s
