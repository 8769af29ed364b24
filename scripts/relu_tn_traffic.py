""" Global-memory traffic of ReLU, ReLU+TN on PyTorch ops, and the fused ReLU+TN kernels, counted from the code.

Units: bytes per activation element divided by the element size, i.e. how many times the activation is
read or written (``2.0`` = one read + one write of a full tensor).

* PyTorch paths: every aten op that runs is assumed to read each of its tensor inputs once and write each
  of its outputs once (what an unfused elementwise or reduction kernel does); views cost nothing.
* Fused kernels: Triton's interpreter (``TRITON_INTERPRET=1``, set before Triton is imported) runs them;
  every masked load and store is counted, active lanes only. Caches are ignored: a tensor re-read from
  L2 counts again.

A measurement tool, not part of the package (it was ``timm_normplugins/layers/tn_traffic.py``):
``python scripts/tn_traffic.py`` prints the table of docs/BENCHMARKS.md; tests/test_tensor_norm_triton.py
checks it.
"""
from contextlib import contextmanager
from typing import Callable, Dict, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ['aten_traffic', 'kernel_traffic', 'relu_tn_traffic']


def _storage_key(t: torch.Tensor):
    return t.untyped_storage().data_ptr()


class _CountBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.ops: List[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # each distinct input once (an out= argument may repeat an input)
        inputs = list({(_storage_key(t), t.storage_offset(), t.shape, t.stride()): t
                       for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}.values())
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        in_storages = {_storage_key(t) for t in inputs}
        # a view (same storage, nothing computed) or an empty allocation moves nothing
        if func.is_view or func in (torch.ops.aten.empty_like.default, torch.ops.aten.empty.memory_format,
                                    torch.ops.aten.detach.default):
            return out
        moved = sum(t.numel() * t.element_size() for t in inputs if t.dim() > 0)
        moved += sum(t.numel() * t.element_size() for t in outputs
                     if t.dim() > 0 and (_storage_key(t) not in in_storages or func._schema.is_mutable))
        self.bytes += moved
        self.ops.append(func.name())
        return out


def aten_traffic(fn: Callable[[], object]) -> Dict[str, object]:
    """Bytes read + written by the aten ops ``fn()`` runs (eager PyTorch), and their names."""
    with _CountBytes() as mode:
        fn()
    return {'bytes': mode.bytes, 'ops': mode.ops}


@contextmanager
def kernel_traffic():
    """Count the bytes Triton kernels load and store while the block runs (interpreter only).

    Yields a dict whose ``'load'`` / ``'store'`` entries grow as kernels run.
    """
    from triton.runtime import interpreter
    builder = interpreter.InterpreterBuilder
    if not hasattr(builder, 'create_masked_load'):
        raise RuntimeError('this Triton interpreter has no create_masked_load to count')
    counts = {'load': 0, 'store': 0}
    load, store = builder.create_masked_load, builder.create_masked_store

    def counted_load(self, ptrs, mask, *args, **kwargs):
        counts['load'] += int(mask.data.sum()) * ptrs.get_element_ty().primitive_bitwidth // 8
        return load(self, ptrs, mask, *args, **kwargs)

    def counted_store(self, ptrs, value, mask, *args, **kwargs):
        counts['store'] += int(mask.data.sum()) * ptrs.get_element_ty().primitive_bitwidth // 8
        return store(self, ptrs, value, mask, *args, **kwargs)

    builder.create_masked_load, builder.create_masked_store = counted_load, counted_store
    try:
        yield counts
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store


def relu_tn_traffic(shape=(4, 64, 8, 8), dtype=torch.float32, grad: str = 'exact', fused: bool = False,
                    relu_only: bool = False) -> Dict[str, float]:
    """Forward and backward traffic of one ReLU (``relu_only``) or ReLU+TN call, in activation passes.

    ``fused=True`` runs the Triton kernels (needs the interpreter); otherwise the PyTorch ops are counted.
    """
    from timm_normplugins.layers.tensor_norm import relu_tensor_norm
    from timm_normplugins.layers.tn_backend import TN_KERNEL, tn_kernel
    x = torch.randn(shape).to(dtype)
    g = torch.randn(shape).to(dtype)
    per_pass = x.numel() * x.element_size()
    a = x.clone().requires_grad_()
    if relu_only:
        def fwd():
            return torch.relu(a)
    else:
        def fwd():
            return relu_tensor_norm(a, grad)
    with tn_kernel('triton' if fused else 'torch'):
        if fused:
            TN_KERNEL.use_kernel(x.device, x.dtype)  # the first-use check runs its own kernels: not counted
            with kernel_traffic() as c:
                y = fwd()
            f_bytes = c['load'] + c['store']
            with kernel_traffic() as c:
                y.backward(g)
            b_bytes = c['load'] + c['store']
        else:
            out = {}
            f_bytes = aten_traffic(lambda: out.setdefault('y', fwd()))['bytes']
            b_bytes = aten_traffic(lambda: out['y'].backward(g))['bytes']
    return {'forward': f_bytes / per_pass, 'backward': b_bytes / per_pass,
            'total': (f_bytes + b_bytes) / per_pass}
