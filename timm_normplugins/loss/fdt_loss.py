""" FDT loss, Alg. 4 of Fuhl & Kasneci ("softmax multi label log function").

For a ground-truth distribution GT (the soft target built by FDT, eq. 4) Alg. 4 does, per sample b
and class i, with ``P_S = softmax(P)`` and ``Scale = 1/B``::

    if GT[b, i] > eps:  L += Scale * -log P_S[b, i];   E[b, i] = Scale * (P_S[b, i] - GT[b, i])
    else:                                              E[b, i] = Scale * P_S[b, i]

So the error passed back is exactly ``(softmax(P) - GT) / B`` -- the gradient of the soft-target
cross-entropy ``-sum_i GT_i log P_S_i`` when GT rows sum to 1 -- but the *reported* value counts every
present class with weight 1: ``(1/B) sum_b sum_{i: GT>eps} -log P_S[b, i]``. The value is not the
function whose derivative is used. Both are reproduced here with a custom autograd Function, so
training follows the paper's gradient and logged losses match the paper's numbers.

Note: with label smoothing every class has GT > eps, so the value sums -log p over all classes
(the gradient is unaffected). With one-hot targets Alg. 4 is Alg. 3 (value and gradient).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..core.checks import check_target
from .cross_entropy import _check_reduction

__all__ = ['FDTLoss', 'fdt_loss']


class _FDTLossFn(torch.autograd.Function):
    """Per-sample Alg. 4 value; backward returns ``grad_b * (softmax - GT)``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, eps: float):
        # half/bfloat16 logits are computed in float32; float64 stays float64 (gradcheck, tests)
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        # where() rather than a product: -log p may be inf for a class the target does not select
        value = -torch.where(target > eps, logp, zero).sum(1)
        ctx.save_for_backward(logp, target)
        ctx.logits_dtype = logits.dtype
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: torch.Tensor):
        logp, target = ctx.saved_tensors
        grad = (logp.exp() - target.to(logp.dtype)) * grad_value.unsqueeze(1)
        return grad.to(ctx.logits_dtype), None, None


def fdt_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, reduction: str = 'mean',
             validate: Optional[bool] = None, num_classes: Optional[int] = None) -> torch.Tensor:
    """Alg. 4 value with the gradient ``(softmax - GT)/B`` (``reduction='mean'``).

    Args:
        logits: (B, C).
        target: (B, C) ground-truth distribution (e.g. from FDTMixup), or (B,) class indices (one-hot).
        eps: a class counts as present when GT > eps (the paper's "small number greater zero").
        reduction: 'mean' (the paper's Scale = 1/B), 'sum' or 'none' (per-sample values).
        num_classes: if given, the logits must have this many classes.
    """
    if logits.dim() != 2:
        raise ValueError(f'fdt: logits must be (B, C), got shape {tuple(logits.shape)}')
    if check_target(logits, target, validate=validate, loss='fdt', num_classes=num_classes) == 'index':
        target = F.one_hot(target, logits.shape[1])
    values = _FDTLossFn.apply(logits, target.to(torch.promote_types(logits.dtype, torch.float32)), float(eps))
    if reduction == 'mean':
        return values.mean()
    if reduction == 'sum':
        return values.sum()
    return values


class FDTLoss(nn.Module):
    """Module form of :func:`fdt_loss` (``create_loss('fdt')``)."""

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean', validate: Optional[bool] = None,
                 num_classes: Optional[int] = None):
        super().__init__()
        self.num_classes = num_classes
        if not eps >= 0:
            raise ValueError(f'fdt: eps (presence threshold) must be >= 0, got {eps}')
        self.eps = float(eps)
        self.reduction = _check_reduction(reduction)
        self.validate = validate

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fdt_loss(logits, target, self.eps, self.reduction, self.validate, self.num_classes)

    def extra_repr(self) -> str:
        return f'eps={self.eps}, reduction={self.reduction}'
