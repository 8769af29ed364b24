""" Input checks shared by the FDT mixer and the losses.

Value checks on labels (range) need the data on the host. On the CPU that is free, so they always
run there; on an accelerator they would stall the device queue every step, so they run only when
asked (``validate=True``) -- an out-of-range label then still fails inside the indexing kernel,
just with the device's less specific message.
"""
from typing import Optional

import torch

__all__ = ['check_labels', 'check_target', 'check_similarity', 'check_eps', 'should_validate']


def should_validate(t: torch.Tensor, validate: Optional[bool]) -> bool:
    """``validate=None`` means: check where it costs no host-device synchronisation (CPU tensors)."""
    if validate is None:
        return t.device.type == 'cpu'
    return bool(validate)


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None,
                 validate: Optional[bool] = None, what: str = 'labels') -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f'{what} must be integer class indices, got dtype {labels.dtype}')
    if not should_validate(labels, validate) or labels.numel() == 0:
        return
    valid = labels if ignore_index is None else labels[labels != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        extra = '' if ignore_index is None else f' (or ignore_index={ignore_index})'
        raise ValueError(f'{what} must lie in [0, {num_classes - 1}]{extra}, found {bad}')


def check_target(logits: torch.Tensor, target: torch.Tensor, *, allow_index: bool = True,
                 allow_dense: bool = True, ignore_index: Optional[int] = None,
                 validate: Optional[bool] = None, loss: str = 'loss',
                 num_classes: Optional[int] = None) -> str:
    """Check a (logits, target) pair and say which form the target has: ``'index'`` or ``'dense'``.

    logits: (B, C) or (B, C, *spatial). Index targets: (B,) / (B, *spatial) integers. Dense targets
    (soft labels, e.g. from FDTMixup): the logits' shape, floating point. ``num_classes``, if given,
    must match the logits' dim 1.
    """
    if logits.dim() < 2:
        raise ValueError(f'{loss}: logits must be (B, C) or (B, C, *spatial), got shape {tuple(logits.shape)}')
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f'{loss}: expected logits with {num_classes} classes on dim 1, got shape '
                         f'{tuple(logits.shape)}')
    num_classes = logits.shape[1]
    if target.is_floating_point():
        if not allow_dense:
            raise ValueError(f'{loss} takes class indices, got a floating-point target of shape '
                             f'{tuple(target.shape)}')
        if target.shape != logits.shape:
            raise ValueError(f'{loss}: a soft target must have the logits\' shape {tuple(logits.shape)}, '
                             f'got {tuple(target.shape)}')
        return 'dense'
    if not allow_index:
        raise ValueError(f'{loss} takes soft targets of shape {tuple(logits.shape)} (floating point), '
                         f'got {target.dtype} of shape {tuple(target.shape)}; one-hot encode class indices '
                         'or use a mixer such as FDTMixup')
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f'{loss}: class-index target must have shape {expected} for logits of shape '
                         f'{tuple(logits.shape)}, got {tuple(target.shape)}')
    check_labels(target, num_classes, ignore_index, validate, what=f'{loss} target')
    return 'index'


def check_eps(eps, name: str = 'eps', high: float = 0.5) -> torch.Tensor:
    """The MCEL mixing weight: the paper requires 0 <= eps < 0.5 (true label stays dominant)."""
    t = torch.as_tensor(eps, dtype=torch.float64).detach()
    if t.dim() > 1:
        raise ValueError(f'{name} must be a scalar or a per-class vector, got shape {tuple(t.shape)}')
    if not torch.isfinite(t).all() or (t < 0).any() or (t >= high).any():
        raise ValueError(f'{name} must lie in [0, {high}), got {t.tolist()}')
    return t


def check_similarity(similarity, num_classes: Optional[int] = None, atol: float = 1e-4,
                     name: str = 'similarity') -> torch.Tensor:
    """A k x k class-similarity matrix: non-negative, zero diagonal, every row summing to 1."""
    A = torch.as_tensor(similarity).detach()
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f'{name} must be a square k x k matrix, got shape {tuple(A.shape)}')
    k = A.shape[0]
    if num_classes is not None and k != num_classes:
        raise ValueError(f'{name} is {k} x {k} but there are {num_classes} classes')
    if k < 2:
        raise ValueError(f'{name} needs at least 2 classes, got {k}')
    if not A.is_floating_point():
        A = A.double()
    A64 = A.double().cpu()
    if not torch.isfinite(A64).all():
        raise ValueError(f'{name} has non-finite entries')
    if (A64 < 0).any():
        i, j = [int(v) for v in (A64 < 0).nonzero()[0]]
        raise ValueError(f'{name} has negative entries, e.g. [{i}, {j}] = {A64[i, j].item():.4g}')
    diag = A64.diagonal().abs().max().item()
    if diag > atol:
        raise ValueError(f'{name} must have a zero diagonal (the true class is carried by the one-hot '
                         f'part), found |diag| up to {diag:.4g}')
    err = (A64.sum(1) - 1).abs()
    if (err > atol).any():
        i = int(err.argmax())
        raise ValueError(f'{name} rows must sum to 1 (row-stochastic), row {i} sums to '
                         f'{A64[i].sum().item():.6g}')
    return A.float() if A.dtype != torch.float64 else A
