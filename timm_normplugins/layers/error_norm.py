""" Error normalisation: the identity forward, a normalised back-propagated error backward

WC/GC paper, section 3.4 and Table 2: the error ``E`` (the gradient of the loss w.r.t. a layer's
input, indexed like the data ``E[s, c, y, x]``) has the mean over a *reference area* subtracted
(eq.10-11), or is standardised over it (eq.8-9), before it flows on to the layers below:

* ``'sample'``   one mean per sample, over (C, H, W): EL, eq.11 (standardised: ELN, eq.9)
* ``'channel'``  one mean per channel, over (N, H, W): EB, eq.10 (standardised: EBN, eq.8)
* ``'global'``   one mean over the whole tensor
* ``'instance'`` one mean per (sample, channel), over (H, W)

The forward pass is the identity (no parameters, no extra memory: nothing is saved for backward).
Standardisation divides by ``sqrt(var + eps)`` (biased variance); it makes the gradients independent of
the loss scale, so it does not mix with fp16 loss scaling (``GradScaler`` would shrink every update by
its scale). Statistics are accumulated in float32 whatever the gradient's dtype.
"""
from typing import Tuple

import torch
import torch.nn as nn

__all__ = ['ERROR_NORM_AREAS', 'error_norm', 'error_norm_reference', 'ErrorNorm']

ERROR_NORM_AREAS = ('global', 'sample', 'channel', 'instance')
ERROR_NORM_EPS = 1e-20  # gradients are small: eps only guards 0/0, it must not bias the std


def _dims(area: str, ndim: int) -> Tuple[int, ...]:
    if area not in ERROR_NORM_AREAS:
        raise ValueError(f'error normalisation area must be one of {ERROR_NORM_AREAS}, got {area!r}')
    if ndim < 2 or (area == 'instance' and ndim < 3):
        need = '(N, C, *spatial)' if area == 'instance' else '(N, C, ...)'
        raise ValueError(f'error normalisation over {area!r} needs an input of shape {need}, got {ndim} dims')
    spatial = tuple(range(2, ndim))
    return {'global': tuple(range(ndim)), 'sample': (1,) + spatial, 'channel': (0,) + spatial,
            'instance': spatial}[area]


def error_norm_reference(grad: torch.Tensor, area: str, standardize: bool = False,
                         eps: float = ERROR_NORM_EPS) -> torch.Tensor:
    """What the backward pass does to an error ``grad``, written plainly (in float64 for tests)."""
    dims = _dims(area, grad.dim())
    g = grad.double()
    centred = g - g.mean(dim=dims, keepdim=True)
    if standardize:
        centred = centred / torch.sqrt(centred.pow(2).mean(dim=dims, keepdim=True) + eps)
    return centred.to(grad.dtype)


class _ErrorNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: Tuple[int, ...], standardize: bool, eps: float):
        ctx.dims, ctx.standardize, ctx.eps = dims, standardize, eps
        return x.view_as(x)  # identity; a view so autograd routes the gradient through backward

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        dims = ctx.dims
        acc = torch.promote_types(grad.dtype, torch.float32)  # fp32 statistics for fp16/bf16 errors
        if not ctx.standardize:
            mean = grad.mean(dim=dims, keepdim=True, dtype=acc)
            return grad - mean.to(grad.dtype), None, None, None
        g = grad.to(acc)
        var, mean = torch.var_mean(g, dim=dims, keepdim=True, correction=0)
        return ((g - mean) * torch.rsqrt(var + ctx.eps)).to(grad.dtype), None, None, None


def error_norm(x: torch.Tensor, area: str = 'channel', standardize: bool = False,
               eps: float = ERROR_NORM_EPS) -> torch.Tensor:
    """Identity on ``x``; the gradient flowing back through it is centred (or standardised) over ``area``."""
    dims = _dims(area, x.dim())
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _ErrorNormFn.apply(x, dims, bool(standardize), float(eps))


class ErrorNorm(nn.Module):
    """Error normalisation as a layer: put it where the error should be normalised on its way back.

    Active in training mode only; in eval mode the layer (and the gradient through it) is the identity.
    Its output is a view of its input that must not be modified in place (autograd forbids that for a
    custom Function's view): put it before a layer that only reads its input (a conv, a linear layer),
    not before ``nn.ReLU(inplace=True)``.

    Args:
        area: ``'sample'`` (EL), ``'channel'`` (EB), ``'global'`` or ``'instance'``.
        standardize: divide by the standard deviation too (ELN / EBN, eq.8-9).
        eps: added to the variance when standardising.
    """

    def __init__(self, area: str = 'channel', standardize: bool = False, eps: float = ERROR_NORM_EPS):
        super().__init__()
        _dims(area, 4)  # validates the name
        if not eps > 0:
            raise ValueError(f'eps must be > 0, got {eps}')
        self.area, self.standardize, self.eps = area, bool(standardize), float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # a training technique: eval-mode gradients (attacks, saliency) stay true
            return x
        return error_norm(x, self.area, self.standardize, self.eps)

    def extra_repr(self) -> str:
        return f'area={self.area}, standardize={self.standardize}' + (
            f', eps={self.eps:g}' if self.standardize else '')
