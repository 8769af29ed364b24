""" Tensor Normalization (TN)

Fuhl & Kasneci, "Tensor Normalization and Full Distribution Training", eq. 1 / Alg. 1:
after a ReLU, subtract at every spatial position the mean over the channel dimension.

    y = r - mean_c(r),   r = relu(x)

TN has no parameters. Two gradient modes:

* ``'exact'`` (default): the true derivative, ``g - mean_c(g)``, then the ReLU mask.
* ``'paper'``: Alg. 1 -- "the error values are simply passed backwards", i.e. the subtraction is
  treated as the identity in the backward pass; only the ReLU mask is applied.

Memory: the fused :class:`ReLUTN` keeps for backward only its output ``y`` (which the following
convolution keeps anyway, so the storage is shared) and the per-position mean ``m`` (1/C of the
output). The ReLU mask is recovered from them: ``r > 0  <=>  y + m > 0``. For ``r == 0`` the output is
exactly ``-m`` so ``y + m`` is exactly 0, for ``r > 0`` rounding is monotone so ``y + m >= 0``;
equality only happens when ``r`` is below half an ulp of ``m`` -- a value that TN's own subtraction
already rounds away, so its gradient is dropped along with it.
"""
from functools import partial

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_notrace_function  # timm.layers exports it only in newer timm

from .tn_backend import fused_relu_tn_impl

__all__ = ['TN_GRAD_MODES', 'tensor_norm', 'relu_tensor_norm', 'TensorNorm', 'ReLUTN', 'relu_tn_act_layer']

TN_GRAD_MODES = ('exact', 'paper')


def _check_grad_mode(grad: str) -> str:
    if grad not in TN_GRAD_MODES:
        raise ValueError(f"TN gradient mode must be one of {TN_GRAD_MODES}, got {grad!r}")
    return grad


def _check_input(x: torch.Tensor):
    if x.dim() < 2:
        # list(), not tuple(): TorchScript compiles this check too and has no tuple of unknown length
        raise ValueError(f'TN needs an input of shape (N, C, *spatial), got shape {list(x.shape)}')


def _tn_reference(x: torch.Tensor) -> torch.Tensor:
    # Plain formula: autograd derives the exact gradient; used where custom autograd can't go.
    return x - x.mean(dim=1, keepdim=True)


class _TensorNormFn(torch.autograd.Function):
    """TN alone (no ReLU): nothing needs to be saved at all."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, paper_grad: bool):
        ctx.paper_grad = paper_grad
        return x - x.mean(dim=1, keepdim=True)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.paper_grad:
            return grad_out, None
        return grad_out - grad_out.mean(dim=1, keepdim=True), None


class _ReLUTNFn(torch.autograd.Function):
    """Fused ReLU + TN saving only (output, per-position mean)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, paper_grad: bool, inplace: bool):
        if inplace:
            ctx.mark_dirty(x)
            y = torch.relu_(x)
        else:
            y = torch.relu(x)
        mean = y.mean(dim=1, keepdim=True)
        y.sub_(mean)
        ctx.paper_grad = paper_grad
        ctx.save_for_backward(y, mean)
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        y, mean = ctx.saved_tensors
        relu_out = y + mean  # relu(x) again, exactly 0 where relu(x) was 0 (see module docstring)
        if ctx.paper_grad:
            return torch.ops.aten.threshold_backward(grad_out, relu_out, 0), None, None
        grad = grad_out - grad_out.mean(dim=1, keepdim=True)
        # ReLU's own fused backward kernel, written in place: one pass instead of compare + where
        return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad), None, None


def _use_plain_formula() -> bool:
    # torch.export traces a functional graph; the custom Function is a training-memory optimisation
    # only, so exported graphs get the plain formula (same forward values).
    return torch.compiler.is_exporting()


# Both entry points are leaf calls of FX graphs, and ``torch.jit.script`` of such a graph (timm's model tests
# script FX graphs) compiles them: under TorchScript they run the plain formula, whose autograd gives the exact
# gradient (the custom Functions, the Triton dispatch and the compiler queries cannot be scripted). TorchScript
# compiles only the taken branch of ``if torch.jit.is_scripting()``, so the eager code stays in the else branch.

@register_notrace_function  # timm's FX feature extraction: one node, not the checks inside
def tensor_norm(x: torch.Tensor, grad: str = 'exact') -> torch.Tensor:
    """Subtract, at every spatial position, the mean over the channel dim (dim 1)."""
    _check_input(x)
    if torch.jit.is_scripting():
        return _tn_reference(x)
    else:
        return _tensor_norm_eager(x, grad)


def _tensor_norm_eager(x: torch.Tensor, grad: str) -> torch.Tensor:
    if _use_plain_formula():
        return _tn_reference(x)
    return _TensorNormFn.apply(x, _check_grad_mode(grad) == 'paper')


@register_notrace_function
def relu_tensor_norm(x: torch.Tensor, grad: str = 'exact', inplace: bool = False) -> torch.Tensor:
    """``tensor_norm(relu(x))`` keeping only the output and a per-position mean for backward."""
    _check_input(x)
    if torch.jit.is_scripting():
        return _tn_reference(F.relu(x, inplace=inplace))
    else:
        return _relu_tensor_norm_eager(x, grad, inplace)


def _relu_tensor_norm_eager(x: torch.Tensor, grad: str, inplace: bool) -> torch.Tensor:
    if _use_plain_formula():
        return _tn_reference(F.relu(x, inplace=inplace))
    paper_grad = _check_grad_mode(grad) == 'paper'
    # torch.compile traces Functions fine but not ones that mutate their input; the compiled graph
    # removes the extra copy itself.
    inplace = inplace and not torch.compiler.is_compiling() and not (
        torch.is_grad_enabled() and x.requires_grad and x.is_leaf)
    fused = fused_relu_tn_impl(x)  # the Triton kernels where selected (tn_backend.py), else the PyTorch ops below
    if fused is not None:
        return fused(x, paper_grad, inplace)
    return _ReLUTNFn.apply(x, paper_grad, inplace)


# torch.fx.symbolic_trace: the modules below call these as leaf functions (a graph node each), since
# their input checks branch on the tensor, which a symbolic proxy cannot do
torch.fx.wrap('tensor_norm')
torch.fx.wrap('relu_tensor_norm')


class TensorNorm(nn.Module):
    """Tensor Normalization: ``x - mean_c(x)`` at each spatial position (any spatial rank).

    Args:
        grad: ``'exact'`` (true derivative) or ``'paper'`` (Alg. 1: gradient passed through unchanged).
    """

    def __init__(self, grad: str = 'exact'):
        super().__init__()
        self.grad = _check_grad_mode(grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _tn_reference(x)
        return tensor_norm(x, self.grad)

    def extra_repr(self) -> str:
        return f'grad={self.grad}'


class ReLUTN(nn.Module):
    """ReLU followed by Tensor Normalization, as one module.

    Signature-compatible with ``nn.ReLU`` so it can be passed as timm's ``act_layer``
    (timm builds activations as ``act_layer(inplace=True)``).

    Args:
        inplace: overwrite the input like ``nn.ReLU(inplace=True)`` (saves an allocation).
        grad: ``'exact'`` (default) or ``'paper'``.
    """

    def __init__(self, inplace: bool = False, grad: str = 'exact'):
        super().__init__()
        self.inplace = inplace
        self.grad = _check_grad_mode(grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _tn_reference(F.relu(x, inplace=self.inplace))
        return relu_tensor_norm(x, self.grad, self.inplace)

    def extra_repr(self) -> str:
        return f'inplace={self.inplace}, grad={self.grad}'


def relu_tn_act_layer(tn_grad: str = 'exact'):
    """``ReLUTN`` with its gradient mode bound, for timm's ``act_layer`` (called as ``act_layer(inplace=True)``).

    Model entrypoints build it from their plain-string ``tn_grad`` argument, so creation arguments stay
    JSON-serialisable (timm's ``save_for_hf`` refuses classes).
    """
    if tn_grad not in TN_GRAD_MODES:
        raise ValueError(f'tn_grad must be one of {TN_GRAD_MODES}, got {tn_grad!r}')
    return partial(ReLUTN, grad=tn_grad)
