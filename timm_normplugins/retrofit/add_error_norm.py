""" Retrofit error normalisation (WC/GC paper, Table 2's ERROR rows) into an existing network.

Where: at the *input* of every convolution (a forward pre-hook runs :func:`~timm_normplugins.layers.error_norm`
on it). Its backward therefore normalises the error the convolution sends back, right after the conv's
backward computed it -- the paper's Algorithm 1 (``ErrorOut = cuDNNBWD(Weights, ErrorIn);
ErrorOut = Normalize(ErrorOut)``), while the conv's own weight gradient still uses the error it received.
Putting it on the conv *output* instead would also normalise the error its weight gradient uses, which
Algorithm 1 does not. The first conv's input (the image) needs no gradient, so nothing happens there.

A hook rather than a new module keeps the state-dict keys, so timm and pretrained files still fit;
``save_model`` records the retrofit and ``load_model`` redoes it.
"""
from typing import Any, Dict, List

import torch.nn as nn

from ..layers.error_norm import ERROR_NORM_EPS, ErrorNorm, error_norm
from ..core.param_scope import classifier_params

__all__ = ['ERROR_NORM_SCOPES', 'add_error_normalization', 'error_norm_modules']

ERROR_NORM_SCOPES = ('conv', 'conv_linear', 'all')


class _ErrorNormPreHook:
    """Forward pre-hook: in training mode, the layer's first input goes through an :class:`ErrorNorm`."""

    def __init__(self, norm: ErrorNorm):
        self.norm = norm

    def __call__(self, module: nn.Module, args):
        if not args or not module.training:  # eval: true gradients (e.g. for adversarial attacks)
            return None
        return (error_norm(args[0], self.norm.area, self.norm.standardize, self.norm.eps),) + tuple(args[1:])


def _targets(model: nn.Module, scope: str) -> List[str]:
    heads = set() if scope == 'all' else {id(p) for p in classifier_params(model)}
    layer_types = (nn.modules.conv._ConvNd,) if scope == 'conv' else (nn.modules.conv._ConvNd, nn.Linear)
    return [name for name, m in model.named_modules() if isinstance(m, layer_types)
            and not any(id(p) in heads for p in m.parameters(recurse=False))]


def _attach(model: nn.Module, names: List[str], norm: ErrorNorm) -> None:
    for name in names:
        module = model.get_submodule(name)
        if getattr(module, '_error_norm_hook', None) is not None:
            raise ValueError(f'{name} already has error normalisation')
        module._error_norm_hook = module.register_forward_pre_hook(_ErrorNormPreHook(norm))


def add_error_normalization(
        model: nn.Module,
        area: str = 'channel',
        standardize: bool = False,
        scope: str = 'conv',
        eps: float = ERROR_NORM_EPS,
) -> int:
    """Normalise the back-propagated error at the input of every conv of ``model``; returns how many.

    Args:
        model: any torch model; its classifier (``get_classifier()``) is left alone unless ``scope='all'``.
        area: ``'sample'`` (EL, eq.11), ``'channel'`` (EB, eq.10), ``'global'`` or ``'instance'``.
        standardize: divide by the standard deviation too (ELN eq.9 / EBN eq.8).
        scope: ``'conv'`` (every conv but a conv classifier), ``'conv_linear'`` (and linear layers but the
            classifier; ``'instance'`` needs spatial dims, so not with linear layers), ``'all'``.
        eps: added to the variance when standardising.

    The forward pass is unchanged (the identity), so a trained model needs none of this for inference.
    Errors are normalised in training mode only: in eval mode (``model.eval()``, as for validation and
    adversarial attacks) gradients w.r.t. the input are the model's true ones.
    """
    norm = ErrorNorm(area, standardize, eps)
    if scope not in ERROR_NORM_SCOPES:
        raise ValueError(f'scope must be one of {ERROR_NORM_SCOPES}, got {scope!r}')
    if area == 'instance' and scope != 'conv':
        raise ValueError("error normalisation over 'instance' (H, W) needs spatial dims: use scope='conv'")
    if getattr(model, 'error_norm_retrofit', None):
        raise ValueError(f'{type(model).__name__} already has error normalisation')
    names = _targets(model, scope)
    if not names:
        raise ValueError(f'{type(model).__name__} has no layer in scope {scope!r} to normalise the error of')
    _attach(model, names, norm)
    model.error_norm_retrofit = dict(area=area, standardize=bool(standardize), eps=float(eps), scope=scope,
                                     modules=names)
    return len(names)


def redo_error_normalization(model: nn.Module, record: Dict[str, Any]) -> None:
    """Re-attach a recorded retrofit on the same layers (``load_model``)."""
    norm = ErrorNorm(record['area'], record.get('standardize', False), record.get('eps', ERROR_NORM_EPS))
    _attach(model, list(record['modules']), norm)
    model.error_norm_retrofit = dict(record)


def error_norm_modules(model: nn.Module) -> List[str]:
    """Names of the layers whose input carries an error normalisation hook."""
    return [name for name, m in model.named_modules() if getattr(m, '_error_norm_hook', None) is not None]
