""" Models registered in timm on import. """
from .he_cifar_resnet import HeCifarResNet
from .resnet_cifar import CifarResNet
from .unet import UNet, UNetDecoderBlock
from .wcgc_cnn import WcgcCNN
from .wide_resnet_tn import WideBasicBlock, WideResNet
# Old module paths, kept for one release (docs/CHANGELOG.md). Loaded here, before the names below are bound:
# loading a submodule later would set the package attribute ``add_tensor_norm`` to the module.
from . import add_error_norm, add_tensor_norm, cifar_resnet, resnet_tn, weight_reparam  # noqa: F401
# the retrofits moved to timm_normplugins.retrofit; re-exported here for one release
from ..retrofit import (  # noqa: E402
    ERROR_NORM_SCOPES, WEIGHT_REPARAM_KINDS, WeightNormalization, WeightStandardization, add_error_normalization,
    add_tensor_norm, apply_weight_reparam, error_norm_modules, weight_reparam_modules,
)


def list_plugin_models(filter: str = '') -> list:
    """Names of the timm models this package registers (optionally matching a timm wildcard filter)."""
    import timm
    from timm.models import model_entrypoint
    return [n for n in timm.list_models(filter) if model_entrypoint(n).__module__.startswith(__name__)]
