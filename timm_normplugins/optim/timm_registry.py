""" WC/GC optimizer names in timm's optimizer registry: ``<base>_wcgc``, ``<base>_gc``, ``<base>_wc``

``import timm_normplugins`` registers, for every optimizer in timm's registry (``sgd``, ``momentum``,
``adam``, ``adamw``, ``nadamw``, ``lamb``, ``lion``, ...), three names: ``<base>_wcgc`` (weight and
gradient centralization), ``<base>_gc`` and ``<base>_wc`` (the ablations of Tables 2-5); with a
``lookahead_`` prefix they work like timm's own names. They show in ``timm.optim.list_optimizers()``.

Each name's ``opt_class`` is a real ``torch.optim.Optimizer`` subclass generated from the base's class
(``sgd_wcgc`` -> ``SGD_WCGC(torch.optim.SGD)``, see :func:`centralized_optimizer_class`), so
``timm.optim.get_optimizer_class('sgd_wcgc')(params, lr=0.1)`` works as for any timm name, and an
optimizer built by ``create_optimizer_v2(model, 'sgd_wcgc')`` has that same type. Bases whose class
cannot be imported here (apex's fused optimizers without apex) get no WC/GC names.

timm's factory resolves a name by its last ``'_'``-separated piece (``sgd_wcgc`` -> ``wcgc``), which
loses the base. So the one thing changed in timm is the registry's ``create_optimizer`` (an instance
attribute of ``default_registry``, wrapping the original): it recognises a WC/GC name and lets timm's own
``create_optimizer`` build the name's class exactly as it builds the base name (param groups with 1-D
weight-decay exclusion, layer decay, ``param_group_fn``, defaults, ``foreach``, Lookahead), handing it the
model as ``wcgc_model`` (so the classifier from ``get_classifier()`` is excluded). Every other name goes to
timm untouched. Installed only where timm's registry has the interface this was written for (else a warning).

Options ride in ``create_optimizer_v2(..., **kwargs)`` and, from timm's train.py, ``--opt-kwargs``:
``wcgc_scope``, ``wcgc_area``, ``wcgc_exclude``, ``wcgc_wc_every``, ``wcgc_momentum_init`` and ``wcgc_model``
(see :func:`~timm_normplugins.optim.add_centralization`).
"""
import dataclasses
import functools
import importlib
import inspect
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from .centralized_optimizer import add_centralization

__all__ = [
    'WCGC_SUFFIXES', 'WCGC_OPTIONS', 'TESTED_TIMM_VERSIONS', 'CentralizedOptimizer', 'WcgcName',
    'centralized_optimizer_class',
    'parse_wcgc_name', 'pop_wcgc_options', 'register_wcgc_optimizers',
]


# suffix -> (gc, wc)
WCGC_SUFFIXES: Dict[str, Tuple[bool, bool]] = {'wcgc': (True, True), 'gc': (True, False), 'wc': (False, True)}
# create_optimizer_v2 / --opt-kwargs key -> add_centralization argument
WCGC_OPTIONS = {
    'wcgc_model': 'model',  # set by create_optimizer_v2 from the model it is given
    'wcgc_scope': 'scope',
    'wcgc_area': 'area',
    'wcgc_exclude': 'exclude',
    'wcgc_wc_every': 'wc_every',
    'wcgc_momentum_init': 'momentum_init',
}
# the timm versions the suite ran against (the floor in pyproject.toml is the first)
TESTED_TIMM_VERSIONS = ('1.0.31',)
_HOOK_MARK = '_timm_normplugins_wcgc'


class WcgcName(NamedTuple):
    base: str
    gc: bool
    wc: bool
    lookahead: bool

    @property
    def timm_name(self) -> str:
        """The name timm builds the base optimizer from."""
        return f'lookahead_{self.base}' if self.lookahead else self.base


def parse_wcgc_name(opt: str) -> Optional[WcgcName]:
    """Split ``[lookahead_]<base>_<wcgc|gc|wc>``; ``None`` for any other name (incl. timm's own)."""
    parts = opt.lower().split('_')
    if len(parts) < 2 or parts[-1] not in WCGC_SUFFIXES:
        return None
    lookahead = parts[0] == 'lookahead'
    base = '_'.join(parts[1 if lookahead else 0:-1])
    return WcgcName(base, *WCGC_SUFFIXES[parts[-1]], lookahead=lookahead)


def pop_wcgc_options(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Remove the ``wcgc_*`` keys from ``kwargs``; return them as ``add_centralization`` arguments."""
    unknown = [k for k in kwargs if k.startswith('wcgc_') and k not in WCGC_OPTIONS]
    if unknown:
        raise ValueError(f'unknown WC/GC option(s) {unknown}; valid: {sorted(WCGC_OPTIONS)}')
    return {WCGC_OPTIONS[k]: kwargs.pop(k) for k in list(kwargs) if k in WCGC_OPTIONS}


def _check_base(registry, parsed: WcgcName, opt: str) -> None:
    known = set(registry.list_optimizers())
    if not parsed.base or '_' in parsed.base or parsed.base not in known:
        examples = ', '.join(f'{b}_wcgc' for b in ('sgd', 'momentum', 'adamw') if b in known)
        raise ValueError(
            f'unknown base optimizer {parsed.base!r} in {opt!r}: WC/GC names are '
            f'[lookahead_]<base>_wcgc|_gc|_wc with <base> one of timm.optim.list_optimizers() '
            f'without "_" (e.g. {examples})')


class CentralizedOptimizer:
    """What a generated ``<Base>_WCGC`` class adds to its base (see :func:`centralized_optimizer_class`):
    an ``__init__`` that attaches WC/GC (:func:`~timm_normplugins.optim.add_centralization`, options
    ``wcgc_*``), and copies (``copy.deepcopy``, ``pickle``) that keep it. ``step`` is the base's."""
    wcgc_base: type
    wcgc_gc: bool
    wcgc_wc: bool

    def __init__(self, params, *args, **kwargs):
        options = pop_wcgc_options(kwargs)
        super().__init__(params, *args, **kwargs)
        add_centralization(self, gc=self.wcgc_gc, wc=self.wcgc_wc, **options)

    def __getstate__(self):
        # torch's Optimizer.__getstate__ keeps defaults, state and param_groups only: the hooks would be lost
        state = super().__getstate__()
        state['wcgc'] = getattr(self, 'wcgc', None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        wcgc = state.pop('wcgc', None)
        super().__setstate__(state)
        if wcgc is not None:
            wcgc.reattach(self)

    def __reduce_ex__(self, protocol):
        # a generated class cannot be found by name: rebuild it from its (importable) base
        return _new_centralized, (self.wcgc_base, self.wcgc_gc, self.wcgc_wc), self.__getstate__()


def _new_centralized(base: type, gc: bool, wc: bool):
    cls = centralized_optimizer_class(base, gc, wc)
    return cls.__new__(cls)


_CLASSES: Dict[Tuple[type, bool, bool], type] = {}


def centralized_optimizer_class(base: type, gc: bool = True, wc: bool = True) -> type:
    """``<Base>_WCGC`` / ``_GC`` / ``_WC``: the subclass of the optimizer class ``base`` that adds WC/GC.

    ``cls(params, lr=..., wcgc_model=model, wcgc_scope=..., ...)`` builds the base optimizer and attaches
    WC/GC with :func:`~timm_normplugins.optim.add_centralization` (without ``wcgc_model`` every >= 2-D weight
    is centralized, see ``select_centralized_params``). Built once per (base, gc, wc), so
    ``type(create_optimizer_v2(model, 'sgd_wcgc')) is get_optimizer_class('sgd_wcgc', bind_defaults=False)``.
    """
    if not (isinstance(base, type) and issubclass(base, torch.optim.Optimizer)):
        raise TypeError(f'base must be a torch.optim.Optimizer subclass, got {base!r}')
    if not (gc or wc):
        raise ValueError('gc and wc cannot both be off')
    base = getattr(base, 'wcgc_base', base)
    key = (base, gc, wc)
    if key not in _CLASSES:
        suffix = 'WCGC' if gc and wc else 'GC' if gc else 'WC'
        what = '+'.join(n for n, on in (('WC', wc), ('GC', gc)) if on)
        _CLASSES[key] = type(f'{base.__name__}_{suffix}', (CentralizedOptimizer, base), {
            '__module__': __name__,
            '__doc__': f'{base.__qualname__} with {what} (WC/GC paper, Alg. 2-3); options: {sorted(WCGC_OPTIONS)}.',
            'wcgc_base': base, 'wcgc_gc': gc, 'wcgc_wc': wc,
        })
    return _CLASSES[key]


def _wrap_create_optimizer(registry) -> None:
    original = registry.create_optimizer
    if getattr(original, _HOOK_MARK, False):
        return

    @functools.wraps(original)
    def create_optimizer(model_or_params, opt: str, *args, **kwargs):
        parsed = parse_wcgc_name(opt)
        if parsed is None:
            stray = [k for k in kwargs if k.startswith('wcgc_')]
            if stray:
                raise ValueError(f'{stray} given, but {opt!r} is not a WC/GC optimizer (use e.g. {opt}_wcgc)')
            return original(model_or_params, opt, *args, **kwargs)
        _check_base(registry, parsed, opt)
        info = registry.get_optimizer_info(f'{parsed.base}_{opt.lower().rsplit("_", 1)[1]}')
        if isinstance(model_or_params, nn.Module):
            kwargs.setdefault('wcgc_model', model_or_params)
        # timm looks a name up by its last '_' part ('wcgc'), so let its own create_optimizer (param
        # groups, defaults, Lookahead) build the WC/GC class from a registry where the base name means it
        one = type(registry)()
        one.register(dataclasses.replace(info, name=parsed.base))
        optimizer = one.create_optimizer(model_or_params, parsed.timm_name, *args, **kwargs)
        if getattr(optimizer, 'wcgc', None) is None:  # timm's Lookahead around it: opt.wcgc as on any other
            optimizer._base_optimizer.wcgc.add_owner(optimizer)
        return optimizer

    setattr(create_optimizer, _HOOK_MARK, True)
    registry.create_optimizer = create_optimizer


def _timm_registry():
    """timm's default registry if this timm has the interface the hook was written for, else None."""
    import timm
    from timm.optim import OptimizerRegistry
    from timm.optim import _optim_factory
    registry = getattr(_optim_factory, 'default_registry', None)
    params = list(inspect.signature(OptimizerRegistry.create_optimizer).parameters)[:3]
    fields = {f.name for f in dataclasses.fields(_optim_factory.OptimInfo)}
    if (not isinstance(registry, OptimizerRegistry) or params != ['self', 'model_or_params', 'opt']
            or not {'name', 'opt_class', 'description'} <= fields):
        warnings.warn(f'timm {timm.__version__}: the optimizer registry interface changed; WC/GC optimizer '
                      f'names are not registered (tested timm {", ".join(TESTED_TIMM_VERSIONS)})')
        return None
    return registry


def _import_class(opt_class) -> Optional[type]:
    """The optimizer class behind a registry entry (timm names some by import path: apex, bitsandbytes);
    None where it cannot be imported here, so no name is registered that could not be built."""
    if isinstance(opt_class, str):
        module, _, name = opt_class.rpartition('.')
        try:
            opt_class = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return None
    return opt_class if isinstance(opt_class, type) and issubclass(opt_class, torch.optim.Optimizer) else None


def register_wcgc_optimizers(registry=None) -> List[str]:
    """Register ``<base>_wcgc|_gc|_wc`` for every base in ``registry`` (timm's default) and install
    the create hook. Idempotent; returns the names registered by this call."""
    if registry is None:
        registry = _timm_registry()
        if registry is None:
            return []
    registered = set(registry.list_optimizers())
    names = []
    for base in sorted(registered):
        if '_' in base:
            continue  # our own names, or any timm cannot resolve anyway
        info = registry.get_optimizer_info(base)
        base_class = _import_class(info.opt_class)
        if base_class is None:
            continue
        for suffix, (gc, wc) in WCGC_SUFFIXES.items():
            name = f'{base}_{suffix}'
            if name in registered:
                continue
            what = {'wcgc': 'weight + gradient', 'gc': 'gradient', 'wc': 'weight'}[suffix]
            registry.register(dataclasses.replace(
                info, name=name, opt_class=centralized_optimizer_class(base_class, gc, wc),
                description=f'{info.description} + {what} centralization (WC/GC paper)'))
            names.append(name)
    _wrap_create_optimizer(registry)
    return names
