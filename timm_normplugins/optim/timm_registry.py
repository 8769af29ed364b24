""" WC/GC optimizer names in timm's optimizer registry: ``<base>_wcgc``, ``<base>_gc``, ``<base>_wc``

``import timm_normplugins`` registers, for every optimizer in timm's registry (``sgd``, ``momentum``,
``adam``, ``adamw``, ``nadamw``, ``lamb``, ``lion``, ...), three names: ``<base>_wcgc`` (weight and
gradient centralization), ``<base>_gc`` and ``<base>_wc`` (the ablations of Tables 2-5); with a
``lookahead_`` prefix they work like timm's own names. They show in ``timm.optim.list_optimizers()``.

timm's factory resolves a name by its last ``'_'``-separated piece (``sgd_wcgc`` -> ``wcgc``), which
loses the base. So the one thing changed in timm is the registry's ``create_optimizer`` (an instance
attribute of ``default_registry``, wrapping the original): it recognises a WC/GC name, lets timm build
the base optimizer from the model exactly as for the base name (param groups with 1-D weight-decay
exclusion, layer decay, ``param_group_fn``, defaults, ``foreach``, Lookahead), then attaches WC/GC with
the model at hand (so the classifier from ``get_classifier()`` is excluded). Every other name goes to
timm untouched. Installed only on timm versions with the interface this was written for.

Options ride in ``create_optimizer_v2(..., **kwargs)`` and, from timm's train.py, ``--opt-kwargs``:
``wcgc_scope``, ``wcgc_area``, ``wcgc_exclude``, ``wcgc_wc_every``, ``wcgc_momentum_init``
(see :func:`~timm_normplugins.optim.add_centralization`).
"""
import dataclasses
import functools
import inspect
import logging
import re
import warnings
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch.nn as nn

from .centralized_optimizer import add_centralization

__all__ = [
    'WCGC_SUFFIXES', 'WCGC_OPTIONS', 'TESTED_TIMM_VERSIONS', 'WcgcName', 'CentralizedOptimizerFactory',
    'parse_wcgc_name', 'pop_wcgc_options', 'register_wcgc_optimizers',
]

_logger = logging.getLogger(__name__)

# suffix -> (gc, wc)
WCGC_SUFFIXES: Dict[str, Tuple[bool, bool]] = {'wcgc': (True, True), 'gc': (True, False), 'wc': (False, True)}
# create_optimizer_v2 / --opt-kwargs key -> add_centralization argument
WCGC_OPTIONS = {
    'wcgc_scope': 'scope',
    'wcgc_area': 'area',
    'wcgc_exclude': 'exclude',
    'wcgc_wc_every': 'wc_every',
    'wcgc_momentum_init': 'momentum_init',
}
# oldest timm with OptimizerRegistry (1.0.12) and the newest the tests ran against
TESTED_TIMM_VERSIONS = ('1.0.12', '1.0.31')
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


class CentralizedOptimizerFactory:
    """The ``opt_class`` of a registered ``<base>_<suffix>``: builds the base optimizer and adds WC/GC.

    Reached through ``timm.optim.get_optimizer_class('sgd_wcgc')``; it only gets parameters, so there
    is no model to find the classifier in (see ``select_centralized_params``). ``create_optimizer_v2``
    with a model does not come here but through the registry hook, which has the model.
    """

    def __init__(self, registry, base: str, gc: bool, wc: bool):
        self.registry, self.base, self.gc, self.wc = registry, base, gc, wc

    def __call__(self, params, **kwargs):
        options = pop_wcgc_options(kwargs)
        opt_class = self.registry.get_optimizer_class(self.base, bind_defaults=False)
        return add_centralization(opt_class(params, **kwargs), None, gc=self.gc, wc=self.wc, **options)

    def __repr__(self) -> str:
        what = '+'.join(n for n, on in (('WC', self.wc), ('GC', self.gc)) if on)
        return f'{type(self).__name__}({self.base!r}, {what})'


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
        options = pop_wcgc_options(kwargs)
        optimizer = original(model_or_params, parsed.timm_name, *args, **kwargs)
        model = model_or_params if isinstance(model_or_params, nn.Module) else None
        return add_centralization(optimizer, model, gc=parsed.gc, wc=parsed.wc, **options)

    setattr(create_optimizer, _HOOK_MARK, True)
    registry.create_optimizer = create_optimizer


def _version(v: str) -> Tuple[int, ...]:
    m = re.match(r'(\d+)\.(\d+)\.(\d+)', v)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def _timm_registry():
    """timm's default registry if this timm has the interface the hook was written for, else None."""
    import timm
    try:
        from timm.optim import OptimizerRegistry
        from timm.optim import _optim_factory
    except ImportError:
        _logger.warning(f'timm {timm.__version__} has no OptimizerRegistry (needs >= {TESTED_TIMM_VERSIONS[0]}): '
                        f'WC/GC optimizer names are not registered; use add_centralization() directly')
        return None
    registry = getattr(_optim_factory, 'default_registry', None)
    params = list(inspect.signature(OptimizerRegistry.create_optimizer).parameters)[:3]
    fields = {f.name for f in dataclasses.fields(_optim_factory.OptimInfo)}
    if (not isinstance(registry, OptimizerRegistry) or params != ['self', 'model_or_params', 'opt']
            or not {'name', 'opt_class', 'description'} <= fields):
        warnings.warn(f'timm {timm.__version__}: the optimizer registry interface changed; WC/GC optimizer '
                      f'names are not registered (tested timm {", ".join(TESTED_TIMM_VERSIONS)})')
        return None
    if not _version(TESTED_TIMM_VERSIONS[0]) <= _version(timm.__version__) <= _version(TESTED_TIMM_VERSIONS[-1]):
        warnings.warn(f'timm {timm.__version__} is untested with the WC/GC optimizer names (tested '
                      f'{TESTED_TIMM_VERSIONS[0]} to {TESTED_TIMM_VERSIONS[-1]}); registering them anyway '
                      f'since its registry interface matches')
    return registry


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
        for suffix, (gc, wc) in WCGC_SUFFIXES.items():
            name = f'{base}_{suffix}'
            if name in registered:
                continue
            what = {'wcgc': 'weight + gradient', 'gc': 'gradient', 'wc': 'weight'}[suffix]
            registry.register(dataclasses.replace(
                info, name=name, opt_class=CentralizedOptimizerFactory(registry, base, gc, wc),
                description=f'{info.description} + {what} centralization (WC/GC paper)'))
            names.append(name)
    _wrap_create_optimizer(registry)
    return names
