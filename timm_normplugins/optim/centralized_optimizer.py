""" WC/GC on top of any torch optimizer, through its step hooks (Alg.2 / Alg.3 of the WC/GC paper)

:func:`add_centralization` keeps the optimizer exactly what it was (a ``torch.optim.SGD`` stays a
``torch.optim.SGD``: param groups, ``state_dict()``, LR schedulers, ``GradScaler``, Accelerate's
``AcceleratedOptimizer`` and ``torch.compile`` see nothing new) and registers two step hooks:

* a pre-hook that centralizes the gradients the step is about to use (GC, eq.4). It runs inside
  ``optimizer.step()``, so a step that ``GradScaler`` skips centralizes nothing, and gradients are
  already unscaled, clipped and all-reduced (DDP/Accelerate) when it runs. With a ``closure`` the
  gradients are centralized after the closure re-computes them.
* a post-hook that centralizes the updated weights (WC, eq.2).

The weights are centralized once when the hooks are attached, so the forward pass always sees
centralized weights.

SGD shortcut: with GC and centralized weights and momentum buffers, every term of an SGD update
(gradient, weight decay ``wd*W``, momentum, Nesterov) is centralized, so the weights stay
centralized in exact arithmetic and WC only removes rounding drift. For ``torch.optim.SGD`` and
timm's ``SGDW`` with float32/float64 weights, WC therefore runs on the first step and every
:data:`SGD_WC_INTERVAL` steps instead of every step (override with ``wc_every``); the phase of that
interval travels in ``optimizer.state_dict()['wcgc']`` so a resumed run continues identically, and
loading a state dict without it (from a plain optimizer) makes the next step run WC and
centralizes its momentum buffers. Weights changed outside the optimizer (``model.load_state_dict``
after the optimizer was built, or an edit under ``no_grad``) are caught before the next step from
their version counters; if they are no longer centralized, that step runs WC. (Weights restored from a
checkpoint of the same run are centralized already and change nothing, so a resume stays exact.)
Adam-like updates rescale element-wise and do not keep the mean, so there WC runs every step.
"""
import logging
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch.optim.optimizer import _default_to_fused_or_foreach

from ..core.param_scope import (  # noqa: F401  (SCOPES, GROUP_KEY, select_centralized_params re-exported)
    GROUP_KEY, SCOPES, select_centralized_params)
from .centralization import CentralizationSpec, centralize_, centralize_foreach_, is_centralized

__all__ = [
    'SCOPES', 'MOMENTUM_INITS', 'SGD_WC_INTERVAL', 'WeightGradCentralization', 'add_centralization',
    'select_centralized_params',
]

_logger = logging.getLogger(__name__)

MOMENTUM_INITS = ('grad', 'zero')
# rounding drift of a filter mean grows ~ eps * |w| * sqrt(steps / fan_in); 100 fp32 steps stay < 1e-7 |w|
SGD_WC_INTERVAL = 100
# optimizer.state_dict() key of the WC phase (ignored by optimizers without WC)
STATE_KEY = 'wcgc'


def _linear_update_classes() -> Tuple[type, ...]:
    """Optimizers whose update is a linear combination of gradient, weight and momentum buffer."""
    classes: Tuple[type, ...] = (torch.optim.SGD,)
    try:
        from timm.optim import SGDW
        classes += (SGDW,)
    except ImportError:
        pass
    return classes


def _update_rule(optimizer: torch.optim.Optimizer) -> type:
    """The class whose ``step`` the optimizer runs: the base of a generated ``<Base>_WCGC`` class."""
    return getattr(type(optimizer), 'wcgc_base', type(optimizer))


def _hookable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer whose ``step()`` runs step hooks (timm's Lookahead wraps one that does)."""
    if getattr(type(optimizer).step, 'hooked', False):
        return optimizer
    base = getattr(optimizer, '_base_optimizer', None)  # timm.optim.Lookahead
    if base is not None:
        return _hookable(base)
    raise TypeError(
        f'{type(optimizer).__name__}.step() does not run optimizer step hooks (it is not a torch '
        f'Optimizer initialised through Optimizer.__init__), so WC/GC cannot be attached to it')


class WeightGradCentralization:
    """Owns the WC/GC step hooks of one optimizer. Created by :func:`add_centralization`.

    Reachable as ``optimizer.wcgc``; ``names`` lists the centralized weights.
    """

    def __init__(
            self,
            params: List[Tuple[str, nn.Parameter, CentralizationSpec]],
            gc: bool = True,
            wc: bool = True,
            area: str = 'tensor',
            scope: str = 'conv_linear',
            foreach: Optional[bool] = None,
            wc_every: int = 1,
    ):
        if wc_every < 1:
            raise ValueError(f'wc_every must be >= 1, got {wc_every}')
        self.names = [n for n, _, _ in params]
        self.params = [p for _, p, _ in params]
        self.specs = [s for _, _, s in params]
        self.gc, self.wc, self.area, self.scope = gc, wc, area, scope
        self.foreach = foreach
        self.wc_every = wc_every
        self._steps_since_wc = 0
        self._wc_due = False
        self._foreign_buffers = False
        self._versions: Optional[List[int]] = None  # the weights' version counters after our last step
        self._handles = []
        self._owners = []

    # --- the two operations -------------------------------------------------------------------
    @torch.no_grad()
    def centralize_grads(self) -> None:
        """GC (eq.4) on the gradients present."""
        grads, specs = [], []
        for p, s in zip(self.params, self.specs):
            if p.grad is not None:
                if p.grad.is_sparse:
                    raise RuntimeError('gradient centralization needs dense gradients (got a sparse one)')
                grads.append(p.grad)
                specs.append(s)
        self._apply(grads, specs)

    @torch.no_grad()
    def centralize_weights(self) -> None:
        """WC (eq.2) on all selected weights."""
        self._apply(self.params, self.specs)
        self._steps_since_wc = 0
        self._wc_due = False

    def _apply(self, tensors, specs) -> None:
        if self.foreach:
            centralize_foreach_(tensors, specs)
        else:
            for t, s in zip(tensors, specs):
                centralize_(t, s)

    # --- hooks --------------------------------------------------------------------------------
    def _record_versions(self) -> None:
        self._versions = [p._version for p in self.params]

    @torch.no_grad()
    def _catch_outside_changes(self) -> None:
        """Run WC this step if weights were changed since the last step and are off-centre now."""
        if self._versions is None or self._wc_due or torch.compiler.is_compiling():
            return
        changed = [(p, s) for p, s, v in zip(self.params, self.specs, self._versions) if p._version != v]
        if any(not is_centralized(p, s) for p, s in changed):
            self._wc_due = True

    def _pre_step(self, optimizer, args, kwargs):
        if self.wc and self.wc_every > 1:
            self._catch_outside_changes()
        if not self.gc:
            return None
        # args are step()'s positional args, the optimizer itself first
        closure = kwargs.get('closure', args[1] if len(args) > 1 else None)
        if closure is None:
            self.centralize_grads()
            return None

        def centralized_closure():
            loss = closure()
            self.centralize_grads()
            return loss

        kwargs = dict(kwargs)
        kwargs['closure'] = centralized_closure
        return args[:1], kwargs

    def _post_step(self, optimizer, args, kwargs):
        if torch.compiler.is_compiling():
            # no host-side step counter inside a compiled step: WC every step (it fuses there)
            self.centralize_weights()
            return
        self._steps_since_wc += 1
        if self._wc_due or self._steps_since_wc >= self.wc_every:
            self.centralize_weights()
        if self.wc_every > 1:
            self._record_versions()

    def _save_wc_phase(self, optimizer, state_dict):
        # a resumed run must skip / run WC on the same steps as the original to continue identically
        state_dict[STATE_KEY] = {'steps_since_wc': self._steps_since_wc, 'wc_due': self._wc_due}
        return state_dict

    def _load_wc_phase(self, optimizer, state_dict):
        state_dict = dict(state_dict)
        phase = state_dict.pop(STATE_KEY, None)
        if phase is None:  # state of an optimizer without WC: its weights need not be centralized,
            self._wc_due = True
            # nor its momentum, which the SGD shortcut relies on
            self._foreign_buffers = self.gc and self.wc_every > 1
        else:
            self._steps_since_wc, self._wc_due = int(phase['steps_since_wc']), bool(phase['wc_due'])
        return state_dict

    @torch.no_grad()
    def _centralize_loaded_buffers(self, optimizer):
        if self._foreign_buffers:
            buffers = [(optimizer.state[p].get('momentum_buffer'), s) for p, s in zip(self.params, self.specs)]
            for buf, s in buffers:
                if isinstance(buf, torch.Tensor):
                    centralize_(buf, s)
        self._foreign_buffers = False

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        if getattr(optimizer, 'wcgc', None) is not None:
            raise ValueError('this optimizer already has WC/GC attached')
        target = _hookable(optimizer)
        if self.foreach is None:
            # multi-tensor where torch defaults to it (accelerators: fewer kernel launches), unless the
            # param groups turn foreach off. Not on CPU even with foreach=True: there the multi-tensor
            # ops are per-tensor loops too, and mean-then-subtract per tensor keeps it in cache
            # (measured ~10% faster for resnet34_tn)
            off = any(g.get('foreach') is False for g in target.param_groups)
            self.foreach = not off and _default_to_fused_or_foreach(
                self.params, differentiable=False, use_fused=False)[1]
        if self.wc:
            self.centralize_weights()
            self._wc_due = True  # weights may still be loaded between now and the first step
            self._record_versions()  # (and a loaded optimizer state may clear that flag again)
        self._register_hooks(target)
        for owner in (optimizer, target):
            self.add_owner(owner)

    def _register_hooks(self, target: torch.optim.Optimizer) -> None:
        if self.gc or self.wc:
            self._handles.append(target.register_step_pre_hook(self._pre_step))
        if self.wc:
            self._handles.append(target.register_step_post_hook(self._post_step))
            self._handles.append(target.register_state_dict_post_hook(self._save_wc_phase))
            self._handles.append(target.register_load_state_dict_pre_hook(self._load_wc_phase))
            self._handles.append(target.register_load_state_dict_post_hook(self._centralize_loaded_buffers))

    def add_owner(self, owner) -> None:
        """Make this reachable as ``owner.wcgc`` (e.g. on timm's Lookahead around the hooked optimizer)."""
        if owner not in self._owners:
            self._owners.append(owner)
        owner.wcgc = self

    # --- copies: torch's Optimizer.__getstate__ drops step hooks, so a copy re-registers them -----------
    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state['_handles'], state['_owners'] = [], []  # handles of the original's hooks; owners re-added
        return state

    def reattach(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook a copy (``copy.deepcopy`` / ``pickle``) of the optimizer this was attached to, with its
        phase as it was: the copy continues exactly as the original would (no new WC on attach)."""
        if self._handles:
            raise ValueError('this WC/GC is attached already')
        self._register_hooks(_hookable(optimizer))
        self.add_owner(optimizer)

    def detach(self) -> None:
        """Remove the hooks (the optimizer continues as its plain base)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for owner in self._owners:
            if getattr(owner, 'wcgc', None) is self:
                del owner.wcgc
        self._owners = []

    def __repr__(self) -> str:
        what = '+'.join(n for n, on in (('WC', self.wc), ('GC', self.gc)) if on) or 'off'
        return (f'{type(self).__name__}({what}, scope={self.scope!r}, area={self.area!r}, '
                f'tensors={len(self.params)}, foreach={self.foreach}, wc_every={self.wc_every})')


def _seed_zero_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Alg.2's M_0 = 0: torch's SGD would start with M_1 = g_1 instead of (1 - dampening) * g_1."""
    base = _hookable(optimizer)
    if _update_rule(base) not in _linear_update_classes():
        raise ValueError(f"momentum_init='zero' needs an SGD optimizer with a momentum buffer, "
                         f'got {type(base).__name__}')
    for group in base.param_groups:
        if group.get('momentum', 0) == 0:
            continue
        for p in group['params']:
            base.state[p].setdefault('momentum_buffer', torch.zeros_like(p, memory_format=torch.preserve_format))


def add_centralization(
        optimizer: torch.optim.Optimizer,
        model: Optional[nn.Module] = None,
        gc: bool = True,
        wc: bool = True,
        scope: str = 'conv_linear',
        area: str = 'tensor',
        exclude: Union[str, Iterable[str]] = (),
        foreach: Optional[bool] = None,
        wc_every: Optional[int] = None,
        momentum_init: str = 'grad',
) -> torch.optim.Optimizer:
    """Add WC and/or GC to ``optimizer`` (in place) and return it.

    Args:
        optimizer: any torch optimizer, or timm's ``Lookahead`` around one.
        model: the model the optimizer trains; needed to find conv/linear layers, grouped-conv
            groups and the classifier (see :func:`select_centralized_params`).
        gc: centralize gradients before the step (eq.4).
        wc: centralize weights after the step (eq.2), and once now.
        scope: ``'conv_linear'`` (default: conv + linear weights except the classifier, which with
            a penultimate FC layer is the paper's "fully" setting), ``'conv'`` (convolutions only),
            ``'all'`` (classifier too) or ``'none'`` (nothing: the base optimizer unchanged).
        area: reference area of the means, one of ``'tensor'`` (default), ``'global'``,
            ``'channel'``, ``'instance'`` (Table 2).
        exclude: fnmatch patterns of parameter names to leave alone (needs ``model``).
        foreach: multi-tensor subtraction; ``None``: torch's default for these tensors (multi-tensor
            on accelerators, per-tensor on CPU) unless a param group sets ``foreach=False``.
        wc_every: run WC every this many steps; ``None``: 1, or :data:`SGD_WC_INTERVAL` where the
            update keeps the weights centralized (SGD/SGDW with GC, float32/float64 weights).
        momentum_init: ``'grad'`` (torch: M_1 = g_1) or ``'zero'`` (Alg.2: M_0 = 0, so with
            ``dampening=momentum`` M_1 = (1 - psi) g_1); ``'zero'`` needs SGD/SGDW.
    """
    if momentum_init not in MOMENTUM_INITS:
        raise ValueError(f'momentum_init must be one of {MOMENTUM_INITS}, got {momentum_init!r}')
    if wc_every is not None and (not isinstance(wc_every, int) or isinstance(wc_every, bool) or wc_every < 1):
        raise ValueError(f'wc_every must be a positive int or None, got {wc_every!r}')
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f'model must be an nn.Module or None, got {type(model).__name__}')
    target = _hookable(optimizer)
    selected = select_centralized_params(target.param_groups, model, scope=scope, area=area, exclude=exclude)
    if not selected and scope != 'none':
        _logger.warning(f'WC/GC (scope={scope!r}, area={area!r}) found no weight to centralize')
    if wc_every is None:
        keeps_mean = (gc and _update_rule(target) in _linear_update_classes()  # exact types: subclasses may differ
                      and all(p.dtype in (torch.float32, torch.float64) for _, p, _ in selected))
        wc_every = SGD_WC_INTERVAL if keeps_mean else 1
    if momentum_init == 'zero':
        _seed_zero_momentum(optimizer)
    centralization = WeightGradCentralization(
        selected, gc=gc, wc=wc, area=area, scope=scope, foreach=foreach, wc_every=wc_every)
    centralization.attach(optimizer)
    return optimizer
