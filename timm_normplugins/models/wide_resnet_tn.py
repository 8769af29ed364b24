""" Wide Residual Networks for 32x32 inputs, with and without Tensor Normalization

Zagoruyko & Komodakis, "Wide Residual Networks" (2016): pre-activation basic blocks
(BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3), 3 stages of ``(depth - 4) / 6`` blocks with widths
16k, 32k, 64k and strides 1, 2, 2. WRN-28-10 has ~36.5M parameters. The ``_tn`` variants put TN
after every ReLU (BN-ReLU-TN-conv).

Models: ``wrn28_10``, ``wrn28_10_tn`` (TN/FDT paper, Table 2) and ``wrn28_12``, ``wrn28_12_tn``
(MCEL paper, Table 1). Any other depth/width: ``WideResNet(depth=40, widen_factor=4)``.
"""
from typing import Any, Dict

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..checkpoint import CheckedLoadMixin
from ..layers import relu_tn_act_layer
from ._paper_cfg import paper_cfg, plugin_cfg_overlay
from ._head import PooledHeadMixin
from ._staged import StagedFeaturesMixin

__all__ = ['WideResNet', 'WideBasicBlock']


class WideBasicBlock(nn.Module):
    """Pre-activation basic block; the 1x1 projection shortcut sees the pre-activated input."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0., act_layer=nn.ReLU):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = act_layer(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = act_layer(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the activation is in-place on bn1's output only: x itself stays intact for the identity path
        pre = self.act1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return out + shortcut


class WideResNet(CheckedLoadMixin, StagedFeaturesMixin, PooledHeadMixin, nn.Module):
    """WRN-d-k for small images, following timm's model contract.

    Feature taps (``feature_info``, ``forward_intermediates``): the stem, stages 1 and 2, and stage 3
    after the closing BN-ReLU (the pre-activation net's last features).

    Args:
        depth: total depth, ``6n + 4``.
        widen_factor: k, stage widths are 16k, 32k, 64k.
        num_classes: classifier outputs (0 for no classifier).
        in_chans: input channels.
        drop_rate: dropout before the classifier (timm's meaning).
        block_drop_rate: dropout between the two convs of each block (the WRN paper's dropout).
        global_pool: timm pooling type.
        act_layer: activation class (``ReLUTN`` for the TN variant).
    """

    def __init__(
            self,
            depth: int = 28,
            widen_factor: int = 10,
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.,
            block_drop_rate: float = 0.,
            global_pool: str = 'avg',
            act_layer=nn.ReLU,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1, got {depth}')
        blocks_per_stage = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
        self.feature_info = [dict(num_chs=16, reduction=1, module='stem')]
        stages = []
        in_chs, reduction = 16, 1
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
            reduction *= stride
            stages.append(nn.Sequential(*[
                WideBasicBlock(in_chs if b == 0 else width, width, stride if b == 0 else 1, block_drop_rate, act_layer)
                for b in range(blocks_per_stage)]))
            in_chs = width
            if i < 2:
                self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        # pre-activation net: the last stage's features are taken after the final BN-ReLU
        self.norm = nn.BatchNorm2d(in_chs)
        self.act = act_layer(inplace=True)
        self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module='act'))
        self.num_features = in_chs
        self._build_head(num_classes, global_pool)
        self.init_weights()

    @torch.jit.ignore
    def init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else r'^stages\.(\d+)\.(\d+)')

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        # pre-activation net: the last stage's features are taken after the closing BN-ReLU
        return self.act(self.norm(x))

    def _prune_final(self) -> None:
        self.norm, self.act = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_wrn(variant: str, pretrained: bool = False, tn: bool = False, **kwargs) -> WideResNet:
    if tn:
        kwargs['act_layer'] = relu_tn_act_layer(kwargs.pop('tn_grad', 'exact'))
    return build_model_with_cfg(
        WideResNet, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **plugin_cfg_overlay(kwargs))


def _cfg(**kwargs) -> Dict[str, Any]:
    return paper_cfg(first_conv='stem', classifier='fc', pool_size=(8, 8), **kwargs)


default_cfgs = generate_default_cfgs({
    'wrn28_10': _cfg(),
    'wrn28_10_tn': _cfg(),
    'wrn28_12': _cfg(),
    'wrn28_12_tn': _cfg(),
})


@register_model
def wrn28_10(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10 (~36.5M parameters)."""
    return _create_wrn('wrn28_10', pretrained, **dict(dict(depth=28, widen_factor=10), **kwargs))


@register_model
def wrn28_10_tn(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-10 with TN after every ReLU."""
    return _create_wrn('wrn28_10_tn', pretrained, tn=True,
                       **dict(dict(depth=28, widen_factor=10), **kwargs))


@register_model
def wrn28_12(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-12 (MCEL paper)."""
    return _create_wrn('wrn28_12', pretrained, **dict(dict(depth=28, widen_factor=12), **kwargs))


@register_model
def wrn28_12_tn(pretrained: bool = False, **kwargs) -> WideResNet:
    """WRN-28-12 with TN after every ReLU."""
    return _create_wrn('wrn28_12_tn', pretrained, tn=True, **dict(dict(depth=28, widen_factor=12), **kwargs))
