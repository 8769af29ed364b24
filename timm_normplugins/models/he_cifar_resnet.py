""" He et al.'s CIFAR ResNets (depth 6n+2), used by the MCEL paper (ResNet-32, ResNet-110)

"Deep Residual Learning for Image Recognition", section 4.2: a 3x3 conv with 16 filters, then three
stages of n basic blocks with 16, 32, 64 filters (strides 1, 2, 2), global average pooling and a
linear classifier. Shortcuts between stages are option A (identity with zero-padded channels,
parameter-free) as in the paper: ResNet-32 has 0.46M and ResNet-110 1.7M parameters.
``shortcut='conv'`` gives option B (1x1 projection + BN) instead.

Not to be confused with ``resnet34_cifar``: timm's ImageNet ResNet-34 with a CIFAR stem.
Models: ``cifar_resnet20``, ``cifar_resnet32``, ``cifar_resnet56``, ``cifar_resnet110`` (+ ``_tn`` twins).
Pretrained tags (Fashion-MNIST, ``models/_pretrained.py``, docs/models/): ``cifar_resnet20.{base,ov,fdt}_fmnist``,
``cifar_resnet20_tn.{base,fdt}_fmnist``.
"""
from typing import Any, Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..checkpoint import CheckedLoadMixin
from ..layers import relu_tn_act_layer
from ._head import PooledHeadMixin
from ._staged import StagedFeaturesMixin
from ._paper_cfg import paper_cfg, plugin_cfg_overlay
from ._pretrained import fmnist_pretrained_cfgs

__all__ = ['HeCifarResNet']


class _PadShortcut(nn.Module):
    """Option A: subsample by the stride and zero-pad the new channels (no parameters)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = out_chs - in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class _BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, shortcut: str, act_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = act_layer(inplace=True)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        elif shortcut == 'pad':
            self.shortcut = _PadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class HeCifarResNet(CheckedLoadMixin, StagedFeaturesMixin, PooledHeadMixin, nn.Module):
    """CIFAR ResNet of depth 6n+2 with timm's model contract.

    Feature taps (``feature_info``, ``forward_intermediates``): the stem, then each of the three stages.

    Args:
        depth: 20, 32, 44, 56, 110, ... (6n + 2).
        num_classes, in_chans, drop_rate, global_pool: as in timm.
        shortcut: ``'pad'`` (option A, the paper's) or ``'conv'`` (option B).
        act_layer: activation class (``ReLUTN`` for the TN variant).
    """

    def __init__(self, depth: int = 32, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.,
                 global_pool: str = 'avg', shortcut: str = 'pad', act_layer=nn.ReLU):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}')
        if shortcut not in ('pad', 'conv'):
            raise ValueError(f"shortcut must be 'pad' or 'conv', got {shortcut!r}")
        n = (depth - 2) // 6
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), act_layer(inplace=True))
        self.feature_info = [dict(num_chs=16, reduction=1, module='stem.2')]
        stages, in_chs, reduction = [], 16, 1
        for i, (width, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
            reduction *= stride
            stages.append(nn.Sequential(*[
                _BasicBlock(in_chs if b == 0 else width, width, stride if b == 0 else 1, shortcut, act_layer)
                for b in range(n)]))
            in_chs = width
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self._build_head(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, depth: int, pretrained: bool = False, tn: bool = False, **kwargs) -> HeCifarResNet:
    if tn:
        kwargs['act_layer'] = relu_tn_act_layer(kwargs.pop('tn_grad', 'exact'))
    return build_model_with_cfg(
        HeCifarResNet, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **plugin_cfg_overlay(dict(dict(depth=depth), **kwargs), variant=variant))


def _untagged_cfgs() -> Dict[str, Dict[str, Any]]:
    """Each architecture's untagged cfg (the papers' CIFAR input, no weights), keyed ``'<model>.*'``: the star
    keeps it timm's default tag, so ``create_model('cifar_resnet20')`` stays a 3-channel CIFAR model and only
    an explicit tag (``cifar_resnet20.fdt_fmnist``) selects the Fashion-MNIST weights and their 1-channel cfg.
    It must come after the tagged ones: timm moves the first tag with weights to the front."""
    return {f'cifar_resnet{d}{s}.*': paper_cfg(first_conv='stem.0', classifier='fc', pool_size=(8, 8))
            for d in (20, 32, 56, 110) for s in ('', '_tn')}


default_cfgs = generate_default_cfgs({
    **fmnist_pretrained_cfgs('cifar_resnet20'),
    **fmnist_pretrained_cfgs('cifar_resnet20_tn'),
    **_untagged_cfgs(),
})


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet20', 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    """ResNet-32 (MCEL paper, Table 3)."""
    return _create('cifar_resnet32', 32, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet56', 56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    """ResNet-110 (MCEL paper)."""
    return _create('cifar_resnet110', 110, pretrained, **kwargs)


@register_model
def cifar_resnet20_tn(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet20_tn', 20, pretrained, tn=True, **kwargs)


@register_model
def cifar_resnet32_tn(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet32_tn', 32, pretrained, tn=True, **kwargs)


@register_model
def cifar_resnet56_tn(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet56_tn', 56, pretrained, tn=True, **kwargs)


@register_model
def cifar_resnet110_tn(pretrained: bool = False, **kwargs) -> HeCifarResNet:
    return _create('cifar_resnet110_tn', 110, pretrained, tn=True, **kwargs)
