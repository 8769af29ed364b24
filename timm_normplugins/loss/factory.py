""" One factory for the package's losses, by the names the recipes use (``--loss NAME``).

    loss_fn = create_loss('fdt')
    loss_fn = create_loss('mcel', similarity=A, eps=0.2)        # A: tensor, array or safetensors path
    loss_fn = create_loss('gmcel', num_classes=10)              # uniform similarity, learnable E

Losses with learnable parameters (``sg_mcel``, ``gmcel``) must be moved to the device with the model
and their parameters added to the optimizer: ``for g in loss_param_groups(loss_fn):
optimizer.add_param_group(g)``.
"""
from typing import Any, Dict, List, Optional

import torch.nn as nn

from ..core.param_scope import GROUP_KEY as WCGC_GROUP_KEY

from .cross_entropy import CrossEntropyLoss, SoftTargetCrossEntropy
from .fdt_loss import FDTLoss
from .mcel import GMCELoss, MCELoss, SGMCELoss

__all__ = ['create_loss', 'list_losses', 'loss_param_groups']

_LOSSES = {
    'ce': CrossEntropyLoss,          # Alg. 3 (FDT/TN paper); also the OV ablation's loss
    'soft_ce': SoftTargetCrossEntropy,
    'fdt': FDTLoss,                  # Alg. 4
    'mcel': MCELoss,                 # MCEL eq. 4
    'sg_mcel': SGMCELoss,            # eq. 6 + eq. 10
    'gmcel': GMCELoss,               # eq. 9 + eq. 11
}


def list_losses() -> List[str]:
    return list(_LOSSES)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss ``name`` (one of :func:`list_losses`) with its keyword arguments."""
    key = name.lower().replace('-', '_')
    if key not in _LOSSES:
        raise ValueError(f'unknown loss {name!r}; choose one of {list_losses()}')
    try:
        return _LOSSES[key](**kwargs)
    except TypeError as e:
        raise TypeError(f'loss {key!r}: {e}') from e


def loss_param_groups(loss_fn: nn.Module, lr: Optional[float] = None,
                      weight_decay: float = 0.0, **group_kwargs: Any) -> List[Dict[str, Any]]:
    """Optimizer param groups for a loss's learnable parameters (empty for parameter-free losses).

    The group has no weight decay by default (decay would pull eps / E towards 0) and carries
    ``'wcgc': False``: WC/GC must never centralize these parameters (a centralized GMCEL matrix
    loses its row sums). ``lr=None`` keeps the optimizer's default learning rate.
    """
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    if not params:
        return []
    group: Dict[str, Any] = dict(params=params, weight_decay=weight_decay, **{WCGC_GROUP_KEY: False}, **group_kwargs)
    if lr is not None:
        group['lr'] = lr
    return [group]
