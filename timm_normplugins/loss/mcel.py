""" Mixed Cross-Entropy Loss (Negi, Chan & Mahoor, "Leveraging Class Similarity to Improve Deep
Neural Network Robustness"): MCEL (eq. 4), SG-MCEL (eq. 6 + eq. 10) and GMCEL (eq. 9 + eq. 11).

All three replace the one-hot target of class y by row y of a k x k *mixing matrix* P and take the
cross-entropy ``-sum_i P[y, i] log softmax(z)_i``:

* MCEL:    ``P = (1 - eps) I + eps A``               eps in [0, 0.5) fixed, A the class similarity
* SG-MCEL: ``P = diag(1 - eps) + diag(eps) A``       eps a learnable per-class vector
* GMCEL:   ``P = E``                                 E a learnable k x k matrix

A is row-stochastic with a zero diagonal (e.g. :func:`class_similarity`, eq. 12). With a soft target
T (rows of a distribution, e.g. from FDTMixup) the target becomes ``T P`` -- for MCEL that is
``(1 - eps) T + eps T A`` -- so MCEL and FDT combine; for a one-hot T it is row y of P, eq. 4.
Targets may also be per pixel: logits (B, C, H, W) with labels (B, H, W) and an ``ignore_index``
(ignored pixels are left out of the mean), or soft targets of the logits' shape.

SG-MCEL and GMCEL learn their mixing weights under the paper's soft constraints (eq. 10, eq. 11); the
penalty is added to the batch loss once per call. **Their parameters must join the optimizer**, in a
group of their own, with no weight decay and never centralized by WC/GC (centralizing E would destroy
its row sums)::

    loss_fn = create_loss('gmcel', similarity=A, eps=0.2).to(device)
    optimizer = create_optimizer_v2(model, opt='sgd_wcgc', lr=0.1, weight_decay=5e-4)
    for group in loss_param_groups(loss_fn):       # [{'params': [E], 'weight_decay': 0.0, 'wcgc': False}]
        optimizer.add_param_group(group)

Reductions: the paper sums over the training set; here the data term is the batch mean (timm's
convention), so the penalty weights alpha, beta, gamma, eta are relative to a per-sample loss. The
paper gives no values for them; the defaults below are ours. On training data the cross-entropy term
always pulls eps towards 0 (d/d eps_y = log f_y - A_y . log f >= 0 once the true class is the most
likely); the beta/gamma terms pull towards ``0.5 beta/(beta+gamma)`` (p=2), so the learned eps settles
where the two balance.
"""
from typing import Optional, Union

import torch
import torch.nn as nn

from ..core.checks import check_eps, check_similarity, check_target
from .cross_entropy import _check_reduction

__all__ = ['MCELoss', 'SGMCELoss', 'GMCELoss', 'mixed_cross_entropy', 'uniform_similarity', 'resolve_similarity']


def uniform_similarity(num_classes: int) -> torch.Tensor:
    """The similarity of label smoothing over the other classes: 1/(k-1) off the diagonal."""
    if num_classes < 2:
        raise ValueError(f'a class similarity needs at least 2 classes, got num_classes={num_classes}')
    return (1 - torch.eye(num_classes)) / (num_classes - 1)


def resolve_similarity(similarity, num_classes: Optional[int]) -> torch.Tensor:
    """A checked similarity matrix from a tensor/array, a safetensors file path, or None (uniform)."""
    if similarity is None:
        if num_classes is None:
            raise ValueError('MCEL needs a class similarity matrix (similarity=...) or num_classes for the '
                             'uniform one')
        return uniform_similarity(num_classes)
    if isinstance(similarity, (str, bytes)) or hasattr(similarity, '__fspath__'):
        from .class_similarity import load_similarity
        similarity = load_similarity(similarity)
    return check_similarity(similarity, num_classes).float()


def mixed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mixing: torch.Tensor,
                        ignore_index: int = -100, reduction: str = 'mean',
                        validate: Optional[bool] = None, loss: str = 'mcel') -> torch.Tensor:
    """``-sum_i (T P)_i log softmax(logits)_i`` with T the one-hot or soft target, P = ``mixing``."""
    kind = check_target(logits, target, ignore_index=ignore_index, validate=validate, loss=loss)
    k = logits.shape[1]
    if mixing.shape != (k, k):
        raise ValueError(f'{loss}: logits have {k} classes but the mixing matrix is {tuple(mixing.shape)}')
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, 1)
    P = mixing.to(logp.dtype)
    if kind == 'index':
        valid = target != ignore_index
        q = P[torch.where(valid, target, 0)].movedim(-1, 1)          # row y of P, classes on dim 1
        per = -(q * logp).sum(1)
        per = torch.where(valid, per, torch.zeros((), dtype=per.dtype, device=per.device))
        if reduction == 'mean':
            return per.sum() / valid.sum().clamp(min=1)               # no sync; all-ignored -> 0
    else:
        q = (target.to(logp.dtype).movedim(1, -1) @ P).movedim(-1, 1)   # T P
        per = -(q * logp).sum(1)
        if reduction == 'mean':
            return per.mean()
    if reduction == 'sum':
        return per.sum()
    if reduction == 'none':
        return per
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class MCELoss(nn.Module):
    """Simple MCEL, eq. 4: target ``(1 - eps) onehot(y) + eps A[y]`` (soft T: ``(1-eps) T + eps T A``).

    Args:
        similarity: k x k row-stochastic, zero-diagonal matrix (tensor, array or safetensors path);
            None gives the uniform one (label smoothing over the other classes), needing num_classes.
        eps: mixing weight in [0, 0.5).
        num_classes: checked against the similarity's size when both are given.
        ignore_index, reduction, validate: as for :class:`CrossEntropyLoss`.
    """

    def __init__(self, similarity=None, eps: float = 0.2, num_classes: Optional[int] = None,
                 ignore_index: int = -100, reduction: str = 'mean', validate: Optional[bool] = None):
        super().__init__()
        A = resolve_similarity(similarity, num_classes)
        e = check_eps(eps)
        if e.dim() != 0:
            raise ValueError(f'mcel: eps must be a scalar (a per-class eps is SG-MCEL), got shape {tuple(e.shape)}')
        self.eps = float(e)
        self.num_classes = A.shape[0]
        self.ignore_index = int(ignore_index)
        self.reduction = _check_reduction(reduction)
        self.validate = validate
        self.register_buffer('similarity', A)
        self.register_buffer('mixing', (1 - self.eps) * torch.eye(self.num_classes) + self.eps * A)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mixed_cross_entropy(logits, target, self.mixing, self.ignore_index, self.reduction,
                                   self.validate, loss='mcel')

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, eps={self.eps}, ignore_index={self.ignore_index}'


def _pnorm_p(x: torch.Tensor, p: float) -> torch.Tensor:
    """``||x||_p^p`` (entry-wise)."""
    return x.abs().pow(p).sum()


def _check_penalties(**weights) -> None:
    for k, v in weights.items():
        if not v >= 0:
            raise ValueError(f'penalty weight {k} must be >= 0, got {v}')


class SGMCELoss(nn.Module):
    """Semi-generalised MCEL with learnable per-class eps under the soft constraints of eq. 10.

    ``p_i = [eps_i A_i1, ..., (1 - eps_i), ..., eps_i A_ik]`` is the target of class i (eq. 6);
    the returned loss is the batch-mean cross-entropy plus ::

        alpha sum_i (||p_i||_1 - 1)^2 + beta ||eps - 0.5||_p^p + gamma ||eps||_p^p

    The alpha term keeps p_i a distribution (it is zero exactly for eps_i in [0, 1]); beta and gamma
    hold eps inside [0, 0.5]. ``eps`` is an ``nn.Parameter``: see the module docstring for adding it
    to the optimizer.
    """

    def __init__(self, similarity=None, eps: Union[float, torch.Tensor] = 0.2, num_classes: Optional[int] = None,
                 alpha: float = 1.0, beta: float = 0.01, gamma: float = 0.01, p: float = 2.0,
                 ignore_index: int = -100, reduction: str = 'mean', validate: Optional[bool] = None):
        super().__init__()
        A = resolve_similarity(similarity, num_classes)
        k = A.shape[0]
        e = check_eps(eps)
        if e.dim() == 1 and e.numel() != k:
            raise ValueError(f'sg_mcel: eps has {e.numel()} entries for {k} classes')
        if not p >= 1:
            raise ValueError(f'sg_mcel: p must be >= 1 (a norm), got {p}')
        _check_penalties(alpha=alpha, beta=beta, gamma=gamma)
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"sg_mcel: reduction must be 'mean' or 'sum' (the penalty is per batch), "
                             f"got {reduction!r}")
        self.num_classes = k
        self.alpha, self.beta, self.gamma, self.p = float(alpha), float(beta), float(gamma), float(p)
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.validate = validate
        self.register_buffer('similarity', A)
        self.eps = nn.Parameter(e.float().expand(k).clone())

    def mixing_matrix(self) -> torch.Tensor:
        """Rows p_i of eq. 6 (A has a zero diagonal, so the diagonal is 1 - eps_i)."""
        eps = self.eps
        return torch.diag(1 - eps) + eps.unsqueeze(1) * self.similarity

    def penalty(self) -> torch.Tensor:
        """The soft-constraint terms of eq. 10."""
        P = self.mixing_matrix()
        row = (P.abs().sum(1) - 1).pow(2).sum()
        return (self.alpha * row + self.beta * _pnorm_p(self.eps - 0.5, self.p)
                + self.gamma * _pnorm_p(self.eps, self.p))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        data = mixed_cross_entropy(logits, target, self.mixing_matrix(), self.ignore_index, self.reduction,
                                   self.validate, loss='sg_mcel')
        return data + self.penalty()

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, '
                f'p={self.p}')


class GMCELoss(nn.Module):
    """Generalised MCEL with a learnable k x k mixing matrix E under the soft constraints of eq. 11.

    The target of class i is row i of E (eq. 9); the returned loss is the batch-mean cross-entropy
    plus ::

        alpha sum_i (sum_j E_ij - 1)^2 + beta ||E - 1||_p^p + gamma ||E||_p^p
        + eta sum_i ((k - 1)(E_ii - c_i) - sum_{j != i} E_ij)^2

    E starts at the MCEL matrix ``(1 - eps) I + eps A``. The margins c_i > 0 ask for
    ``E_ii > E_ij + c_i``; by default ``c_i = (0.5 - eps_i) / 2``, the paper's choice that makes eq. 9
    equivalent to SG-MCEL. ``E`` is an ``nn.Parameter``: see the module docstring for the optimizer.
    """

    def __init__(self, similarity=None, eps: Union[float, torch.Tensor] = 0.2, num_classes: Optional[int] = None,
                 margin: Optional[Union[float, torch.Tensor]] = None, alpha: float = 1.0, beta: float = 0.001,
                 gamma: float = 0.001, eta: float = 0.1, p: float = 2.0, ignore_index: int = -100,
                 reduction: str = 'mean', validate: Optional[bool] = None):
        super().__init__()
        A = resolve_similarity(similarity, num_classes)
        k = A.shape[0]
        e = check_eps(eps)
        if e.dim() == 1 and e.numel() != k:
            raise ValueError(f'gmcel: eps has {e.numel()} entries for {k} classes')
        e = e.float().expand(k)
        c = (0.5 - e) / 2 if margin is None else torch.as_tensor(margin, dtype=torch.float32).expand(k).clone()
        if not torch.isfinite(c).all() or (c <= 0).any():
            raise ValueError(f'gmcel: margins c_i must be > 0, got {c.tolist()}')
        if not p >= 1:
            raise ValueError(f'gmcel: p must be >= 1 (a norm), got {p}')
        _check_penalties(alpha=alpha, beta=beta, gamma=gamma, eta=eta)
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"gmcel: reduction must be 'mean' or 'sum' (the penalty is per batch), "
                             f"got {reduction!r}")
        self.num_classes = k
        self.alpha, self.beta, self.gamma, self.eta, self.p = map(float, (alpha, beta, gamma, eta, p))
        self.ignore_index = int(ignore_index)
        self.reduction = reduction
        self.validate = validate
        self.register_buffer('margin', c.float())
        self.E = nn.Parameter(torch.diag(1 - e) + e.unsqueeze(1) * A)

    def mixing_matrix(self) -> torch.Tensor:
        return self.E

    def penalty(self) -> torch.Tensor:
        """The soft-constraint terms of eq. 11."""
        E, k = self.E, self.num_classes
        diag = E.diagonal()
        row_sum = E.sum(1)
        margin = (k - 1) * (diag - self.margin) - (row_sum - diag)
        return (self.alpha * (row_sum - 1).pow(2).sum() + self.beta * _pnorm_p(E - 1, self.p)
                + self.gamma * _pnorm_p(E, self.p) + self.eta * margin.pow(2).sum())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        data = mixed_cross_entropy(logits, target, self.E, self.ignore_index, self.reduction, self.validate,
                                   loss='gmcel')
        return data + self.penalty()

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, '
                f'eta={self.eta}, p={self.p}')
