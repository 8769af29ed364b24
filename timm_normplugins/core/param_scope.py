""" Which weights are in scope: the layer and classifier rules WC/GC, WN/WS and error normalization share.

A *scope* names the layers a weight-level method acts on: ``'conv'`` (every ``nn.modules.conv._ConvNd``,
grouped, depthwise and transposed included), ``'conv_linear'`` (those and ``nn.Linear``; the default) or
``'all'`` (the same layers, the classifier included). All but ``'all'`` leave the classifier
(``model.get_classifier()``) alone. WC/GC (optim/) adds ``'none'``. One definition here keeps the three
methods agreeing on what "the conv and linear weights" of a model are.
"""
import fnmatch
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch.nn as nn
from torch.nn.utils import parametrize

from .reference_area import AREAS, CentralizationSpec, centralization_spec

__all__ = ['SCOPES', 'GROUP_KEY', 'classifier_params', 'module_weights', 'select_centralized_params']

_logger = logging.getLogger(__name__)

SCOPES = ('conv_linear', 'conv', 'all', 'none')
# param-group key: a group with ``'wcgc': False`` is never centralized (loss/ puts its own parameters there)
GROUP_KEY = 'wcgc'


def classifier_params(model: nn.Module) -> List[nn.Parameter]:
    """The parameters of ``model.get_classifier()`` (all heads of a multi-head model); [] with a warning without it."""
    try:
        from timm.utils import unwrap_model
        model = unwrap_model(model)
    except ImportError:
        pass
    get_classifier = getattr(model, 'get_classifier', None)
    if get_classifier is None:
        _logger.warning(
            f'{type(model).__name__} has no get_classifier(): no classifier is excluded from WC/GC; '
            f'exclude it by name with wcgc_exclude=[...] or scope="conv"')
        return []
    heads = get_classifier()
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    return [p for head in heads if isinstance(head, nn.Module) for p in head.parameters()]


def module_weights(model: nn.Module, scope: str):
    """Yield ``(name, weight, groups, transposed)`` for the conv / linear layers ``scope`` covers."""
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            groups, transposed = module.groups, module.transposed
        elif isinstance(module, nn.Linear) and scope != 'conv':
            groups, transposed = 1, False
        else:
            continue
        prefix = f'{module_name}.' if module_name else ''
        if parametrize.is_parametrized(module, 'weight'):
            # WN/WS (models.weight_reparam): the trained tensor is the parametrization's input, same shape
            # (one whose right_inverse splits the weight, like torch's weight_norm, has no single tensor: skipped)
            name = prefix + 'parametrizations.weight.original'
            weight = getattr(module.parametrizations.weight, 'original', None)
        else:
            name, weight = prefix + 'weight', getattr(module, 'weight', None)
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError(f'{module_name}.weight is an uninitialised lazy parameter: run a forward pass '
                             f'before creating a WC/GC optimizer')
        if isinstance(weight, nn.Parameter):
            yield name, weight, groups, transposed


def select_centralized_params(
        param_groups: Sequence[Dict[str, Any]],
        model: Optional[nn.Module] = None,
        scope: str = 'conv_linear',
        area: str = 'tensor',
        exclude: Union[str, Iterable[str]] = (),
) -> List[Tuple[str, nn.Parameter, CentralizationSpec]]:
    """Pick the weights WC/GC acts on, among the parameters the optimizer updates.

    With a ``model``: weights of conv layers (any ``nn.modules.conv._ConvNd``, grouped, depthwise and
    transposed included) and, unless ``scope='conv'``, of ``nn.Linear`` layers; the classifier
    (``model.get_classifier()``) is excluded unless ``scope='all'``; ``exclude`` drops parameter names
    matching its fnmatch patterns. Without a model there are no layers to look at: every >= 2-D
    parameter (>= 3-D for ``scope='conv'``) is a weight and no classifier can be told apart, so put
    the classifier in a param group with ``'wcgc': False`` (or pass the model).

    Parameter groups with ``'wcgc': False`` are skipped in both cases, as are 1-D parameters and
    tensors whose reference area holds a single element.
    """
    if scope not in SCOPES:
        raise ValueError(f'scope must be one of {SCOPES}, got {scope!r}')
    if area not in AREAS:
        raise ValueError(f'area must be one of {AREAS}, got {area!r}')
    patterns = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    if scope == 'none':
        return []
    trainable = {id(p) for g in param_groups if g.get(GROUP_KEY, True) is not False for p in g['params']}

    if model is not None:
        excluded = set() if scope == 'all' else {id(p) for p in classifier_params(model)}
        candidates = [
            (name, w, groups, transposed)
            for name, w, groups, transposed in module_weights(model, scope)
            if id(w) not in excluded and not any(fnmatch.fnmatch(name, pat) for pat in patterns)]
    else:
        if patterns:
            raise ValueError('exclude (wcgc_exclude) matches parameter names and needs the model; '
                             'with a parameter list use a param group with {"wcgc": False}')
        min_ndim = 3 if scope == 'conv' else 2
        candidates = [
            (f'param_groups[{i}].params[{j}]', p, 1, False)
            for i, g in enumerate(param_groups) for j, p in enumerate(g['params']) if p.ndim >= min_ndim]
        if scope != 'conv' and any(p.ndim == 2 for _, p, _, _ in candidates):
            _logger.info('WC/GC from a parameter list: 2-D weights (incl. any classifier) are centralized; '
                         'pass the model to exclude the classifier')

    selected, seen = [], set()
    for name, p, groups, transposed in candidates:
        if id(p) in seen or id(p) not in trainable or not p.requires_grad:
            continue  # tied weights once; frozen or un-optimized weights are never modified
        seen.add(id(p))
        spec = centralization_spec(p.shape, area, groups=groups, transposed=transposed)
        if spec is not None:
            selected.append((name, p, spec))
    return selected
