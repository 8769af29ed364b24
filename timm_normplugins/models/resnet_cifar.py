""" ResNet with Tensor Normalization (and its plain CIFAR twins)

timm's ResNet with ``ReLUTN`` as activation, so TN follows every ReLU, and by default the
CIFAR stem the TN/FDT paper uses for 32x32 inputs: one 3x3 stride-1 conv, no max-pool.
``stem='imagenet'`` keeps timm's 7x7/stride-2 stem + max-pool, so timm's pretrained
``resnet34`` / ``resnet152`` weights load unchanged (TN has no parameters).

Models: ``resnet34_tn``, ``resnet152_tn`` and their ReLU twins ``resnet34_cifar``, ``resnet152_cifar``.
"""
from typing import Any, Dict

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..checkpoint import CheckedLoadMixin
from ..layers import relu_tn_act_layer
from ._paper_cfg import paper_cfg, plugin_cfg_overlay

__all__ = ['CifarResNet']

STEM_TYPES = ('cifar', 'imagenet')
NORM_TYPES = ('batchnorm', 'none')


class CifarResNet(CheckedLoadMixin, ResNet):
    """timm ``ResNet`` with a choice of stem.

    Args:
        stem: ``'cifar'`` (3x3 stride-1 conv, no max-pool: total stride 8) or ``'imagenet'``
            (timm's 7x7 stride-2 conv + max-pool: total stride 32).
        norm: ``'batchnorm'`` or ``'none'`` (the WC/GC paper's "model b without BN" rows).
        **kwargs: everything timm's ``ResNet`` takes.
    """

    def __init__(self, block, layers, stem: str = 'cifar', norm: str = 'batchnorm', **kwargs):
        if stem not in STEM_TYPES:
            raise ValueError(f'stem must be one of {STEM_TYPES}, got {stem!r}')
        if norm not in NORM_TYPES:
            raise ValueError(f'norm must be one of {NORM_TYPES}, got {norm!r}')
        if norm == 'none':
            kwargs['norm_layer'] = nn.Identity
        super().__init__(block, layers, **kwargs)
        self.stem = stem
        if stem == 'cifar':
            out_chs = self.feature_info[0]["num_chs"]
            in_chans = kwargs.get('in_chans', 3)
            self.conv1 = nn.Conv2d(in_chans, out_chs, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode='fan_out', nonlinearity='relu')
            self.maxpool = nn.Identity()
            # the stem no longer downsamples by 4: every tap's reduction shrinks accordingly
            for info in self.feature_info:
                info['reduction'] = max(1, info['reduction'] // 4)


def _create_resnet(variant: str, pretrained: bool = False, **kwargs):
    return build_model_with_cfg(CifarResNet, variant, pretrained, **plugin_cfg_overlay(kwargs))


def _cfg(**kwargs) -> Dict[str, Any]:
    return paper_cfg(first_conv='conv1', classifier='fc', pool_size=(4, 4), **kwargs)


default_cfgs = generate_default_cfgs({
    'resnet34_tn': _cfg(),
    'resnet152_tn': _cfg(),
    'resnet34_cifar': _cfg(),
    'resnet152_cifar': _cfg(),
})


@register_model
def resnet34_tn(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-34 with TN after every ReLU (CIFAR stem by default)."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3), act_layer=relu_tn_act_layer(kwargs.pop('tn_grad', 'exact')))
    return _create_resnet('resnet34_tn', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_tn(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-152 with TN after every ReLU (CIFAR stem by default)."""
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3), act_layer=relu_tn_act_layer(kwargs.pop('tn_grad', 'exact')))
    return _create_resnet('resnet152_tn', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-34, CIFAR stem, plain ReLU: the baseline twin of ``resnet34_tn``."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3))
    return _create_resnet('resnet34_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet152_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-152, CIFAR stem, plain ReLU: the baseline twin of ``resnet152_tn``."""
    model_args = dict(block=Bottleneck, layers=(3, 8, 36, 3))
    return _create_resnet('resnet152_cifar', pretrained, **dict(model_args, **kwargs))
