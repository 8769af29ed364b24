""" Weight and Gradient Centralization (WC/GC paper) for any torch optimizer and timm's optimizer factory.

``import timm_normplugins`` registers ``<base>_wcgc``, ``<base>_gc`` and ``<base>_wc`` for every
optimizer in timm's registry, so ``timm.optim.create_optimizer_v2(model, opt='sgd_wcgc')`` works.
"""
from .centralization import AREAS, CentralizationSpec, centralization_spec, centralize_, centralize_foreach_
from .centralized_optimizer import (
    MOMENTUM_INITS, SCOPES, SGD_WC_INTERVAL, WeightGradCentralization, add_centralization,
    select_centralized_params,
)
from .timm_registry import (
    TESTED_TIMM_VERSIONS, WCGC_OPTIONS, WCGC_SUFFIXES, parse_wcgc_name, register_wcgc_optimizers,
)

register_wcgc_optimizers()
