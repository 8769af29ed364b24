""" Softmax cross-entropy, Alg. 3 of Fuhl & Kasneci ("softmax multi class log function").

Alg. 3 is exactly ``torch.nn.functional.cross_entropy`` with mean reduction: value
``(1/B) * sum_b -log softmax(P_b)[y_b]``, gradient ``(softmax(P) - onehot(y)) / B``. So these
modules only add the input checks and the two target forms timm train loops produce:

* ``'ce'`` (:class:`CrossEntropyLoss`): class indices ``(B,)`` -- or ``(B, H, W)`` per pixel with an
  ``ignore_index`` -- or dense one-hot rows ``(B, C)``, which is what ``FDTMixup(label='hard')`` (the
  paper's OV ablation, Table 1) and timm's mixers with mixing off emit. Dense rows are used as
  probabilities, ``-sum_i T_i log p_i``, which equals Alg. 3 for one-hot rows.
* ``'soft_ce'`` (:class:`SoftTargetCrossEntropy`): dense soft targets only (timm's
  ``SoftTargetCrossEntropy``, also per pixel ``(B, C, H, W)``); a class-index target is refused, which
  catches a mixer that was forgotten.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.checks import check_target

__all__ = ['CrossEntropyLoss', 'SoftTargetCrossEntropy', 'REDUCTIONS']

REDUCTIONS = ('mean', 'sum', 'none')


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')
    return reduction


class CrossEntropyLoss(nn.Module):
    """Alg. 3 cross-entropy for class indices (per sample or per pixel) or one-hot rows.

    Args:
        label_smoothing: torch's label smoothing (0 = Alg. 3).
        ignore_index: label skipped by the per-pixel (segmentation) form; the mean runs over the rest.
        reduction: ``'mean'`` (Alg. 3's 1/B), ``'sum'`` or ``'none'``.
        validate: check label ranges (``None``: only for CPU tensors, where it needs no device sync).
        num_classes: if given, the logits must have this many classes (lets a recipe pass the same
            keywords to every loss).
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = 'mean',
                 validate: Optional[bool] = None, num_classes: Optional[int] = None):
        super().__init__()
        self.num_classes = num_classes
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'label_smoothing must lie in [0, 1), got {label_smoothing}')
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        self.reduction = _check_reduction(reduction)
        self.validate = validate

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_target(logits, target, ignore_index=self.ignore_index, validate=self.validate, loss='ce',
                     num_classes=self.num_classes)
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f'label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, reduction={self.reduction}'


class SoftTargetCrossEntropy(nn.Module):
    """``-sum_i T_i log softmax(P)_i`` averaged over the batch (and pixels): soft targets only."""

    def __init__(self, reduction: str = 'mean', num_classes: Optional[int] = None):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_target(logits, target, allow_index=False, loss='soft_ce', num_classes=self.num_classes)
        return F.cross_entropy(logits, target.to(logits.dtype), reduction=self.reduction)

    def extra_repr(self) -> str:
        return f'reduction={self.reduction}'
