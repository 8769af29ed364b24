""" Retrofits: put a paper's idea into an existing network, in place, and record it so a checkpoint can redo it.

``add_tensor_norm`` (TN after every ReLU), ``add_error_normalization`` (error normalization) and
``apply_weight_reparam`` (weight normalization / standardization). They work on any timm model, so they
live beside models/, not in it.
"""
from .add_error_norm import ERROR_NORM_SCOPES, add_error_normalization, error_norm_modules, redo_error_normalization
from .add_tensor_norm import add_tensor_norm
from .weight_reparam import (
    WEIGHT_REPARAM_KINDS, WeightNormalization, WeightStandardization, apply_weight_reparam, redo_weight_reparam,
    weight_reparam_modules,
)
