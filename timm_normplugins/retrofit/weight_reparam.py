""" Weight normalisation (WN, eq.1) and weight standardisation (WS, eq.3) as torch parametrizations

The WC/GC paper's comparison methods of section 3.1, per output unit ``j`` of a conv/linear weight:

    WN (eq.1):  W_j * k / ||W_j||                       (k = 1 in the paper; no learned gain)
    WS (eq.3):  (W_j - mean(W_j)) / std(W_j)             (biased std, sqrt(var + eps))

:func:`apply_weight_reparam` registers them with ``torch.nn.utils.parametrize`` on the layers that WC/GC
would centralize (same scope names and classifier rule, :func:`~timm_normplugins.optim.select_centralized_params`),
so the gradient flows through the normalisation as in the original WN [31] and WS [29] papers. The
trainable tensor becomes ``<layer>.parametrizations.weight.original``; ``<layer>.weight`` is computed
from it at every access. "Output unit" is the reference area WC/GC calls ``'tensor'``: one filter
of a conv (a grouped/depthwise filter only holds its own group's inputs), one row of a linear weight,
one output channel of a transposed conv (within its group). Layers whose unit holds a single weight
(a 1x1 depthwise filter) are left alone, as WC/GC leaves them: WS would zero them and WN freeze them.

The paper's Algorithm 1 instead overwrites the weights with their normalised value before each forward
and takes the gradient at the normalised weight (a projection, like this package's WC). For WS at a
standardised weight both give the same SGD step to first order; WN differs in the effective learning
rate (here ``||original||`` drifts, there it is reset to ``k`` each step). See docs/WCGC_BASELINES.md.

Checkpoints: ``save_model`` writes the normalised weights under the plain ``<layer>.weight`` keys (a
WN/WS model is an ordinary model once trained, the paper's point) and records the reparametrisation in
its metadata; ``load_model`` reloads and re-registers it. Plain ``timm.create_model(...,
pretrained_cfg_overlay=dict(file=...))`` sees an ordinary state dict with identical outputs.
"""
import math
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.reference_area import CentralizationSpec, centralization_spec
from ..core.param_scope import SCOPES, select_centralized_params

__all__ = ['WEIGHT_REPARAM_KINDS', 'WEIGHT_REPARAM_EPS', 'WeightNormalization', 'WeightStandardization',
           'apply_weight_reparam', 'weight_reparam_modules']

WEIGHT_REPARAM_KINDS = ('wn', 'ws')
# WN: floor of the norm (F.normalize's); WS: added to the variance (timm's StdConv2d default)
WEIGHT_REPARAM_EPS = {'wn': 1e-12, 'ws': 1e-6}
_SCOPES = tuple(s for s in SCOPES if s != 'none')


class _PerUnit(nn.Module):
    """Statistics per output unit, over ``spec.dims`` of the (possibly group-split) weight, in float32."""

    def __init__(self, spec: CentralizationSpec, eps: float):
        super().__init__()
        if not eps > 0:
            raise ValueError(f'eps must be > 0, got {eps}')
        self.split_groups, self.dims, self.eps = spec.split_groups, spec.dims, float(eps)

    def _unit_view(self, w: torch.Tensor) -> torch.Tensor:
        # reduced precision weights (a model cast to bf16/fp16) get fp32 statistics
        w = w.float() if w.dtype in (torch.float16, torch.bfloat16) else w
        return w.unflatten(0, (self.split_groups, -1)) if self.split_groups > 1 else w

    def _done(self, view: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = view.flatten(0, 1) if self.split_groups > 1 else view
        return out.to(like.dtype)

    def extra_repr(self) -> str:
        return f'dims={self.dims}, groups={self.split_groups}, eps={self.eps:g}'


class WeightNormalization(_PerUnit):
    """Eq.1: ``W_j * gain / max(||W_j||, eps)`` per output unit (``gain`` is the paper's constant ``k``)."""

    def __init__(self, spec: CentralizationSpec, eps: float = WEIGHT_REPARAM_EPS['wn'], gain: float = 1.0):
        super().__init__(spec, eps)
        self.gain = float(gain)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        v = self._unit_view(w)
        norm = torch.linalg.vector_norm(v, dim=self.dims, keepdim=True).clamp_min(self.eps)
        return self._done(v * (self.gain / norm), w)

    @torch.no_grad()
    def preimage(self, w: torch.Tensor) -> torch.Tensor:
        """An ``original`` this maps to ``w`` (a normalised weight): ``w`` itself (its norm is lost)."""
        return w.clone()

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, gain={self.gain:g}'


class WeightStandardization(_PerUnit):
    """Eq.3: ``(W_j - mean(W_j)) / sqrt(var(W_j) + eps)`` per output unit (biased variance)."""

    def __init__(self, spec: CentralizationSpec, eps: float = WEIGHT_REPARAM_EPS['ws']):
        super().__init__(spec, eps)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        v = self._unit_view(w)
        var, mean = torch.var_mean(v, dim=self.dims, keepdim=True, correction=0)
        return self._done((v - mean) * torch.rsqrt(var + self.eps), w)

    @torch.no_grad()
    def preimage(self, w: torch.Tensor) -> torch.Tensor:
        """An ``original`` this maps to ``w`` (a standardised weight, variance ``s2 < 1`` due to eps).

        ``a * w`` with ``a = sqrt(eps / (1 - s2))`` maps back to ``w`` exactly, and ``a`` is the scale
        ``sqrt(var + eps)`` of the weight ``w`` was computed from (only its mean is lost). Re-standardising
        ``w`` itself would scale it by ``1 + eps / (2 var)``: 5e-4 for a typical conv filter.
        """
        v = self._unit_view(w).double()
        mean = v.mean(dim=self.dims, keepdim=True)
        s2 = (v - mean).pow(2).mean(dim=self.dims, keepdim=True)
        # s2 rounds to >= 1 only when eps / var is below float precision: any scale >= 1 is then exact enough
        scale = torch.sqrt(self.eps / (1 - s2).clamp_min(self.eps))
        return self._done(v * scale, w)


def _make(kind: str, spec: CentralizationSpec, eps: Optional[float], gain: float) -> nn.Module:
    eps = WEIGHT_REPARAM_EPS[kind] if eps is None else eps
    return WeightNormalization(spec, eps, gain) if kind == 'wn' else WeightStandardization(spec, eps)


def _layer_geometry(module: nn.Module):
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.groups, module.transposed
    return 1, False


def weight_reparam_modules(model: nn.Module) -> List[str]:
    """Names of the layers whose ``weight`` carries a WN/WS parametrization of this module."""
    return [name for name, m in model.named_modules() if parametrize.is_parametrized(m, 'weight') and any(
        isinstance(p, (WeightNormalization, WeightStandardization)) for p in m.parametrizations.weight)]


def _register(model: nn.Module, names: Sequence[str], kind: str, eps: Optional[float], gain: float) -> None:
    for name in names:
        module = model.get_submodule(name)
        weight = getattr(module, 'weight', None)
        if parametrize.is_parametrized(module, 'weight'):
            raise ValueError(f'{name or type(module).__name__}.weight is already parametrized '
                             f'({[type(p).__name__ for p in module.parametrizations.weight]})')
        if not isinstance(weight, nn.Parameter):
            raise ValueError(f'{name or type(module).__name__} has no weight parameter to reparametrise')
        groups, transposed = _layer_geometry(module)
        spec = centralization_spec(weight.shape, 'tensor', groups=groups, transposed=transposed)
        if spec is None:
            raise ValueError(f'{name}.weight {tuple(weight.shape)} has one weight per output unit; '
                             f'{kind.upper()} would {"freeze" if kind == "wn" else "zero"} it')
        parametrize.register_parametrization(module, 'weight', _make(kind, spec, eps, gain))


def apply_weight_reparam(
        model: nn.Module,
        kind: str = 'ws',
        scope: str = 'conv_linear',
        eps: Optional[float] = None,
        gain: float = 1.0,
        exclude=(),
) -> int:
    """Reparametrise the conv/linear weights of ``model`` in place with WN or WS; returns how many.

    Args:
        model: any torch model; timm models' classifier (``get_classifier()``) is left alone.
        kind: ``'wn'`` (eq.1) or ``'ws'`` (eq.3).
        scope: WC/GC's scope names: ``'conv_linear'`` (all conv and linear weights but the classifier),
            ``'conv'`` (conv weights but a conv classifier), ``'all'`` (the classifier too).
        eps: WN: floor of the norm (default 1e-12); WS: added to the variance (default 1e-6).
        gain: WN's constant ``k`` (1 in the paper). Only for ``kind='wn'``.
        exclude: fnmatch patterns of weight names to leave alone (``'layer4.*'``).

    Call it before building the optimizer: the trainable tensors become
    ``<layer>.parametrizations.weight.original``. The settings are recorded on the model
    (``model.weight_reparam_retrofit``) so ``save_model``/``load_model`` can redo them.
    """
    if kind not in WEIGHT_REPARAM_KINDS:
        raise ValueError(f'weight reparametrisation must be one of {WEIGHT_REPARAM_KINDS}, got {kind!r}')
    if scope not in _SCOPES:
        raise ValueError(f'scope must be one of {_SCOPES}, got {scope!r}')
    if kind != 'wn' and gain != 1.0:
        raise ValueError(f'gain (the constant k of eq.1) is a WN setting, not {kind.upper()}\'s')
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f'gain must be a positive number, got {gain}')
    if getattr(model, 'weight_reparam_retrofit', None) or weight_reparam_modules(model):
        raise ValueError(f'{type(model).__name__} already has a weight reparametrisation')
    selected = select_centralized_params([{'params': list(model.parameters())}], model, scope=scope,
                                         exclude=exclude)
    names = [_module_name(name) for name, _, _ in selected]
    if not names:
        raise ValueError(f'{type(model).__name__} has no conv/linear weight in scope {scope!r} to reparametrise')
    _register(model, names, kind, eps, gain)
    model.weight_reparam_retrofit = dict(kind=kind, eps=eps, gain=gain, scope=scope, modules=names)
    return len(names)


def _module_name(weight_name: str) -> str:
    if '.parametrizations.' in weight_name:
        raise ValueError(f'{weight_name} is already parametrized')
    return weight_name[:-len('weight')].rstrip('.')


def redo_weight_reparam(model: nn.Module, record: Dict[str, Any]) -> None:
    """Re-register a recorded reparametrisation on the same layers of a model holding the normalised
    weights (``load_model``); the forward pass stays what it was."""
    kind = record.get('kind')
    if kind not in WEIGHT_REPARAM_KINDS:
        raise ValueError(f'recorded weight reparametrisation {kind!r} is not one of {WEIGHT_REPARAM_KINDS}')
    names = list(record['modules'])
    weights = [model.get_submodule(n).weight.detach() for n in names]
    _register(model, names, kind, record.get('eps'), record.get('gain', 1.0))
    for name, w in zip(names, weights):  # the loaded (normalised) weights stay what the forward pass uses
        param = model.get_submodule(name).parametrizations.weight
        param.original.data.copy_(param[0].preimage(w))
    model.weight_reparam_retrofit = dict(record)
