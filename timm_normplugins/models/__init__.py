""" Models registered in timm on import. """
from .add_error_norm import ERROR_NORM_SCOPES, add_error_normalization, error_norm_modules
from .add_tensor_norm import add_tensor_norm
from .cifar_resnet import HeCifarResNet
from .resnet_tn import CifarResNet
from .unet import UNet, UNetDecoderBlock
from .weight_reparam import (
    WEIGHT_REPARAM_KINDS, WeightNormalization, WeightStandardization, apply_weight_reparam, weight_reparam_modules,
)
from .wcgc_cnn import WcgcCNN
from .wide_resnet_tn import WideBasicBlock, WideResNet


def list_plugin_models(filter: str = '') -> list:
    """Names of the timm models this package registers (optionally matching a timm wildcard filter)."""
    import timm
    from timm.models import model_entrypoint
    return [n for n in timm.list_models(filter) if model_entrypoint(n).__module__.startswith(__name__)]
