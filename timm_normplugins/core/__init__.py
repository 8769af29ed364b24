""" The bottom layer: what layers/, optim/, retrofit/, models/, loss/ and data/ share.

Constants (the papers' input normalisation), the WC/GC reference areas, the parameter scopes ("which weights
are in scope" for WC/GC, WN/WS and error normalization), input checks and the kernel selection. Nothing here
imports from the rest of the package (tests/test_import_layers.py checks it).
"""
from .checks import check_eps, check_labels, check_similarity, check_target, should_validate
from .paper_norm import PAPER_MEAN, PAPER_MEAN_PIXELS, PAPER_STD, PAPER_STD_PIXELS, paper_mean_std
from .param_scope import GROUP_KEY, SCOPES, classifier_params, module_weights, select_centralized_params
from .reference_area import AREAS, CentralizationSpec, centralization_spec
