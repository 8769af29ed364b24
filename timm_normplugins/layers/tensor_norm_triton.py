""" Fused ReLU + Tensor Normalization in Triton (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).

Same maths and the same saved tensors as :class:`~timm_normplugins.layers.tensor_norm._ReLUTNFn`, in one
pass over the activation each way:

* forward: read ``x`` once; write ``y = relu(x) - m`` and the per-position mean ``m`` (1/C of the output).
* backward: read ``g``, ``y`` and ``m``; write ``dx``. ``'exact'``: ``dx = (g - mean_c(g))`` where
  ``y > -m`` (i.e. ``relu(x) > 0``, see tensor_norm.py's docstring), else 0; ``'paper'``: ``dx = g`` there.

Global-memory traffic per activation element (E bytes each, C channels): forward ``2E + E/C``, backward
``3E + E/C`` -- ReLU's ``2E`` and ``3E`` plus the mean (docs/BENCHMARKS.md; tests/test_tensor_norm_triton.py
counts it from the kernels' actual loads and stores).

Layouts: the input is seen as ``(N, C, P)`` with three strides, ``P`` the flattened spatial positions, so
NCHW, channels_last and any spatial rank run the same kernel (Triton specialises unit strides, which
tells it which axis is contiguous). Each program owns ``BLOCK_P`` positions of one sample and all C
channels: with ``C <= MAX_BLOCK_C`` they stay in registers (single pass); above it the channels are
walked in ``BLOCK_C`` chunks twice (sum, then write), the second read mostly from L2.

The kernels are ``torch.library.triton_op`` operators (``torch.ops.timm_normplugins.relu_tn_*``), so
``torch.compile`` sees and keeps them instead of tracing around an opaque call.
"""
from collections import Counter
from contextlib import nullcontext
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

__all__ = ['relu_tensor_norm_triton', 'MAX_BLOCK_C', 'LAUNCHES', 'SUPPORTED_DTYPES']

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# widest channel block kept in registers; every TN model's C (16..2048) fits. Tests lower it to run the
# tiled path on small shapes.
MAX_BLOCK_C = 2048
# elements one program holds (registers): 8192 fp32 over 8 warps is 32 per thread
_TILE_ELEMS = 8192
# kernel launches by name, counted on the Python side (eager diagnostics: tests check which path ran)
LAUNCHES: Counter = Counter()


@triton.jit
def _relu_tn_fwd_kernel(x_ptr, y_ptr, m_ptr, C, P, num_pb,
                        sxn, sxc, sxp, syn, syc, syp,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, SINGLE: tl.constexpr):
    pid = tl.program_id(0)
    n = (pid // num_pb).to(tl.int64)
    offs_p = (pid % num_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    offs_c = tl.arange(0, BLOCK_C)
    x_base = x_ptr + n * sxn + offs_p[None, :] * sxp
    y_base = y_ptr + n * syn + offs_p[None, :] * syp
    if SINGLE:
        ok = (offs_c[:, None] < C) & p_ok[None, :]
        x = tl.load(x_base + offs_c[:, None] * sxc, mask=ok, other=0.0).to(tl.float32)
        r = tl.where(x < 0, 0.0, x)  # relu that keeps NaN, like torch.relu
        m = (tl.sum(r, axis=0) / C).to(y_ptr.dtype.element_ty)
        # y = r - m with m rounded to the storage dtype first: then r == 0 gives exactly -m, which is
        # what lets backward recover the mask as y > -m
        y = r - m.to(tl.float32)[None, :]
        tl.store(y_base + offs_c[:, None] * syc, y.to(y_ptr.dtype.element_ty), mask=ok)
    else:
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            ok = (cc[:, None] < C) & p_ok[None, :]
            x = tl.load(x_base + cc[:, None] * sxc, mask=ok, other=0.0).to(tl.float32)
            acc += tl.sum(tl.where(x < 0, 0.0, x), axis=0)
        m = (acc / C).to(y_ptr.dtype.element_ty)
        m32 = m.to(tl.float32)[None, :]
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            ok = (cc[:, None] < C) & p_ok[None, :]
            # in place (y_ptr == x_ptr) is safe: this program reads each element before it writes it
            x = tl.load(x_base + cc[:, None] * sxc, mask=ok, other=0.0).to(tl.float32)
            y = tl.where(x < 0, 0.0, x) - m32
            tl.store(y_base + cc[:, None] * syc, y.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(m_ptr + n * P + offs_p, m, mask=p_ok)


@triton.jit
def _relu_tn_bwd_kernel(g_ptr, y_ptr, m_ptr, dx_ptr, C, P, num_pb,
                        sgn, sgc, sgp, syn, syc, syp, sdn, sdc, sdp,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, SINGLE: tl.constexpr,
                        EXACT: tl.constexpr):
    pid = tl.program_id(0)
    n = (pid // num_pb).to(tl.int64)
    offs_p = (pid % num_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    offs_c = tl.arange(0, BLOCK_C)
    g_base = g_ptr + n * sgn + offs_p[None, :] * sgp
    y_base = y_ptr + n * syn + offs_p[None, :] * syp
    d_base = dx_ptr + n * sdn + offs_p[None, :] * sdp
    # relu(x) > 0  <=>  y + m > 0  <=>  y > -m (a comparison, no rounding)
    neg_m = -tl.load(m_ptr + n * P + offs_p, mask=p_ok, other=0.0).to(tl.float32)[None, :]
    if EXACT:
        if SINGLE:
            ok = (offs_c[:, None] < C) & p_ok[None, :]
            g = tl.load(g_base + offs_c[:, None] * sgc, mask=ok, other=0.0).to(tl.float32)
            g = g - (tl.sum(g, axis=0) / C)[None, :]
            y = tl.load(y_base + offs_c[:, None] * syc, mask=ok, other=0.0).to(tl.float32)
            dx = tl.where(y > neg_m, g, 0.0)
            tl.store(d_base + offs_c[:, None] * sdc, dx.to(dx_ptr.dtype.element_ty), mask=ok)
        else:  # mean of g over chunks, then a second pass
            acc = tl.zeros([BLOCK_P], dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                ok = (cc[:, None] < C) & p_ok[None, :]
                acc += tl.sum(tl.load(g_base + cc[:, None] * sgc, mask=ok, other=0.0).to(tl.float32), axis=0)
            g_mean = (acc / C)[None, :]
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                ok = (cc[:, None] < C) & p_ok[None, :]
                g = tl.load(g_base + cc[:, None] * sgc, mask=ok, other=0.0).to(tl.float32)
                y = tl.load(y_base + cc[:, None] * syc, mask=ok, other=0.0).to(tl.float32)
                dx = tl.where(y > neg_m, g - g_mean, 0.0)
                tl.store(d_base + cc[:, None] * sdc, dx.to(dx_ptr.dtype.element_ty), mask=ok)
    else:  # paper: elementwise, one pass whatever C
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            ok = (cc[:, None] < C) & p_ok[None, :]
            g = tl.load(g_base + cc[:, None] * sgc, mask=ok, other=0.0)
            y = tl.load(y_base + cc[:, None] * syc, mask=ok, other=0.0).to(tl.float32)
            tl.store(d_base + cc[:, None] * sdc, tl.where(y > neg_m, g, 0.0).to(dx_ptr.dtype.element_ty), mask=ok)


# --- shapes, strides, blocks --------------------------------------------------------------------------
def ncp_view(t: torch.Tensor):
    """``(N, C, P, stride_n, stride_c, stride_p)`` of ``t`` seen as (N, C, positions), or None when its
    spatial dims cannot be flattened into one stride (then the caller makes it contiguous)."""
    N, C = t.shape[0], t.shape[1]
    spatial = [(s, st) for s, st in zip(t.shape[2:], t.stride()[2:]) if s != 1]
    for (_, st0), (s1, st1) in zip(spatial, spatial[1:]):
        if st0 != st1 * s1:
            return None
    P = 1
    for s, _ in spatial:  # a loop, not math.prod(generator): torch.compile traces it without a graph break
        P *= s
    if P == 1:  # (N, C): the samples are the positions, which packs many into one program
        return 1, C, N, 0, t.stride(1), t.stride(0)
    return N, C, P, t.stride(0), t.stride(1), spatial[-1][1]


def _blocks(C: int, P: int) -> Tuple[int, int, bool, int]:
    """(BLOCK_C, BLOCK_P, single pass, num_warps): heuristics, not tuned on a GPU yet."""
    c_pow2 = triton.next_power_of_2(C)
    block_c = min(c_pow2, MAX_BLOCK_C)
    block_p = max(1, min(triton.next_power_of_2(P), _TILE_ELEMS // block_c))
    return block_c, block_p, c_pow2 <= MAX_BLOCK_C, 8 if block_c * block_p >= 8192 else 4


def _mean_buffer(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], 1, *x.shape[2:]))  # contiguous: (N, P) in the kernels


def _device(t: torch.Tensor):
    # Triton launches on the current CUDA device: make it the tensor's (eager calls; compiled code has its own)
    return torch.cuda.device(t.device) if t.device.type == 'cuda' else nullcontext()


def _launch_args(x: torch.Tensor, y: torch.Tensor):
    N, C, P, sxn, sxc, sxp = ncp_view(x)
    _, _, _, syn, syc, syp = ncp_view(y)
    block_c, block_p, single, warps = _blocks(C, P)
    num_pb = triton.cdiv(P, block_p)
    return (N * num_pb,), (C, P, num_pb, sxn, sxc, sxp, syn, syc, syp), (block_c, block_p, single, warps)


# --- operators ----------------------------------------------------------------------------------------
@triton_op('timm_normplugins::relu_tn_fwd', mutates_args=())
def relu_tn_fwd(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(relu(x) - m, m)``, ``m`` the per-position channel mean of relu(x), shape (N, 1, *spatial)."""
    y = torch.empty_like(x)
    m = _mean_buffer(x)
    if x.numel() == 0:
        return y, m
    grid, args, (block_c, block_p, single, warps) = _launch_args(x, y)
    LAUNCHES['fwd'] += 1
    with _device(x):
        wrap_triton(_relu_tn_fwd_kernel)[grid](x, y, m, *args, BLOCK_C=block_c, BLOCK_P=block_p, SINGLE=single,
                                               num_warps=warps)
    return y, m


@triton_op('timm_normplugins::relu_tn_fwd_', mutates_args={'x'})
def relu_tn_fwd_(x: torch.Tensor) -> torch.Tensor:
    """In place: ``x`` becomes ``relu(x) - m``; returns ``m``."""
    m = _mean_buffer(x)
    if x.numel() == 0:
        return m
    grid, args, (block_c, block_p, single, warps) = _launch_args(x, x)
    LAUNCHES['fwd_'] += 1
    with _device(x):
        wrap_triton(_relu_tn_fwd_kernel)[grid](x, x, m, *args, BLOCK_C=block_c, BLOCK_P=block_p, SINGLE=single,
                                               num_warps=warps)
    return m


@triton_op('timm_normplugins::relu_tn_bwd', mutates_args=())
def relu_tn_bwd(grad: torch.Tensor, y: torch.Tensor, m: torch.Tensor, exact: bool) -> torch.Tensor:
    """Input gradient of ReLU+TN from the saved ``(y, m)``: exact (``g - mean_c g``) or paper (``g``),
    zero where relu(x) was 0."""
    if ncp_view(grad) is None:
        grad = grad.contiguous()
    dx = torch.empty_like(y)
    if y.numel() == 0:
        return dx
    N, C, P, sgn, sgc, sgp = ncp_view(grad)
    _, _, _, syn, syc, syp = ncp_view(y)
    _, _, _, sdn, sdc, sdp = ncp_view(dx)
    block_c, block_p, single, warps = _blocks(C, P)
    num_pb = triton.cdiv(P, block_p)
    LAUNCHES['bwd_exact' if exact else 'bwd_paper'] += 1
    with _device(y):
        wrap_triton(_relu_tn_bwd_kernel)[(N * num_pb,)](
            grad, y, m, dx, C, P, num_pb, sgn, sgc, sgp, syn, syc, syp, sdn, sdc, sdp,
            BLOCK_C=block_c, BLOCK_P=block_p, SINGLE=single, EXACT=exact, num_warps=warps)
    return dx


class _ReLUTNTritonFn(torch.autograd.Function):
    """:class:`_ReLUTNFn` on the fused kernels: saves the same ``(y, m)``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, paper_grad: bool, inplace: bool):
        if inplace:
            m = torch.ops.timm_normplugins.relu_tn_fwd_(x)
            ctx.mark_dirty(x)
            y = x
        else:
            y, m = torch.ops.timm_normplugins.relu_tn_fwd(x)
        ctx.paper_grad = paper_grad
        ctx.save_for_backward(y, m)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, m = ctx.saved_tensors
        return torch.ops.timm_normplugins.relu_tn_bwd(grad_out, y, m, not ctx.paper_grad), None, None


def relu_tensor_norm_triton(x: torch.Tensor, paper_grad: bool = False, inplace: bool = False) -> torch.Tensor:
    """ReLU + TN on the fused kernels (``x``: CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f'the fused TN kernels take {SUPPORTED_DTYPES}, got {x.dtype}')
    if ncp_view(x) is None:  # spatial dims not flattenable to one stride: one copy, then as usual
        x, inplace = x.contiguous(), False
    return _ReLUTNTritonFn.apply(x, paper_grad, inplace)
