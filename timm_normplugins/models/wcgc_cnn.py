""" The small CNNs of the WC/GC paper (Figure 1, models a and c)

The paper describes them only in a figure that its text does not carry: (a) "a small neural network
model with batch normalization" (evaluated with and without BN) and (c) "a small model without batch
normalization", "a classical architecture", both with a penultimate fully connected layer (the rows
marked *fully* in Tables 3-4). The layer sizes below are therefore OUR reconstruction, chosen to be
small, classical and close to the paper's reported accuracy range; they are not the authors' exact nets.

* ``wcgc_cnn_a``: 3 VGG-style stages of two 3x3 convs (32, 64, 128 filters) each with BN+ReLU
  (``norm='none'`` removes BN), 2x2 max-pool after each stage, FC-256 + ReLU, classifier. ~0.82M params.
* ``wcgc_cnn_c``: LeNet/AlexNet-style, no BN: 5x5 conv 32, 5x5 conv 64, 3x3 conv 128, each + ReLU
  + 2x2 max-pool, FC-256 + ReLU, classifier. ~0.65M params.

Model b is ``resnet34_cifar`` (``norm='none'`` for the rows without BN); model d is ``unet_resnet34``.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..checkpoint import CheckedLoadMixin
from ._paper_cfg import paper_cfg, plugin_cfg_overlay
from ._head import ClassifierHeadMixin
from ._staged import StagedFeaturesMixin

__all__ = ['WcgcCNN']


class WcgcCNN(CheckedLoadMixin, StagedFeaturesMixin, ClassifierHeadMixin, nn.Module):
    """Plain CNN: stages of convs + max-pool, then a penultimate FC layer and the classifier.

    Feature taps (``feature_info``, ``forward_intermediates``): the output of each stage (after its
    max-pool). The penultimate FC layer belongs to the head: ``forward_head(pre_logits=True)`` returns it.

    Args:
        stages: per stage, a tuple of (out_channels, kernel_size) convs.
        norm: ``'batchnorm'`` or ``'none'``.
        fc_dim: width of the penultimate fully connected layer ("fully" in the paper's tables).
        num_classes, in_chans, drop_rate: as in timm (drop_rate: dropout before the classifier).
        img_size: input size, fixes the flattened feature size.
    """
    _stem_is_tap = False
    _checkpoint_whole_stages = True

    def __init__(
            self,
            stages: Sequence[Sequence[Tuple[int, int]]],
            norm: str = 'batchnorm',
            fc_dim: int = 256,
            num_classes: int = 10,
            in_chans: int = 3,
            drop_rate: float = 0.,
            img_size: Union[int, Tuple[int, int]] = 32,
    ):
        super().__init__()
        if norm not in ('batchnorm', 'none'):
            raise ValueError(f"norm must be 'batchnorm' or 'none', got {norm!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = nn.Identity()  # no stem: the first tap is the first stage's output
        self.feature_info = []
        self._tap_sizes = []  # (H, W) after each stage, for the flattened size of a pruned head
        blocks, chs, (h, w) = [], in_chans, to_2tuple(img_size)
        for i, stage in enumerate(stages):
            layers = []
            for out_chs, k in stage:
                layers += [nn.Conv2d(chs, out_chs, k, padding=k // 2, bias=norm == 'none')]
                if norm == 'batchnorm':
                    layers.append(nn.BatchNorm2d(out_chs))
                layers.append(nn.ReLU(inplace=True))
                chs = out_chs
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
            self._tap_sizes.append((h, w))
            blocks.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=chs, reduction=2 ** (i + 1), module=f'stages.{i}'))
        self.stages = nn.Sequential(*blocks)
        # the penultimate FC layer is part of the features: forward_head(pre_logits=True) returns it
        self.fc1 = nn.Linear(chs * h * w, fc_dim)
        self.act_fc = nn.ReLU(inplace=True)
        # timm's convention (as MobileNetV3): num_features = channels of forward_features,
        # head_hidden_size = width of the pre-logits
        self.num_features = chs
        self.head_hidden_size = fc_dim
        self.fc = nn.Linear(fc_dim, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _build_head(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def _prune_head(self) -> None:
        # the penultimate FC layer is sized for the last stage's flattened map, so it goes with the
        # classifier: the head then just flattens the features of the last kept stage
        tap = len(self.stages) - 1
        self.fc1, self.act_fc = nn.Identity(), nn.Identity()
        self.head_hidden_size = self.feature_info[tap]['num_chs'] * self._tap_sizes[tap][0] * self._tap_sizes[tap][1]
        self.reset_classifier(0)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act_fc(self.fc1(x.flatten(1)))
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, pretrained: bool = False, **kwargs) -> WcgcCNN:
    return build_model_with_cfg(
        WcgcCNN, variant, pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2)),
        **plugin_cfg_overlay(kwargs))


default_cfgs = generate_default_cfgs({
    'wcgc_cnn_a': paper_cfg(first_conv='stages.0.0', classifier='fc', fixed_input_size=True),
    'wcgc_cnn_c': paper_cfg(first_conv='stages.0.0', classifier='fc', fixed_input_size=True),
})


@register_model
def wcgc_cnn_a(pretrained: bool = False, **kwargs) -> WcgcCNN:
    """WC/GC paper model a (our reconstruction): small VGG-style CNN with BN (``norm='none'`` without)."""
    stages = (((32, 3), (32, 3)), ((64, 3), (64, 3)), ((128, 3), (128, 3)))
    return _create('wcgc_cnn_a', pretrained, **dict(dict(stages=stages), **kwargs))


@register_model
def wcgc_cnn_c(pretrained: bool = False, **kwargs) -> WcgcCNN:
    """WC/GC paper model c (our reconstruction): classical CNN without BN."""
    stages = (((32, 5),), ((64, 5),), ((128, 3),))
    return _create('wcgc_cnn_c', pretrained, **dict(dict(stages=stages, norm='none'), **kwargs))
