""" Models registered in timm on import. """
from .add_tensor_norm import add_tensor_norm
from .resnet_tn import CifarResNet
from .wide_resnet_tn import WideBasicBlock, WideResNet
from .unet import UNet, UNetDecoderBlock
