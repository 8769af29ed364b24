""" U-Net segmenter with a timm encoder (WC/GC paper, Figure 1 d: a residual network with U-Net skips)

The encoder is any timm CNN built with ``features_only=True``; the decoder walks back up its feature
pyramid: upsample to the next skip's size, concatenate the skip, two conv3x3-BN-ReLU (ReLU+TN in the
``_tn`` variant; ``norm='none'`` drops every BN, encoder included, for Table 5's WN row), and finally back to the input's height and width, so any input size -- odd ones such
as the paper's 227x227 crops included -- gives logits of that size. The classifier is a 1x1 conv, the one
layer without normalisation ("all layers except the last convolution", WC/GC Table 5).

The default encoders use timm's ImageNet stem (7x7/2 conv + max-pool, total stride 32): the CIFAR stem
of ``resnet34_tn`` (stride 1) would run every ResNet stage at 4x the resolution, far too expensive at
227x227. ``encoder_kwargs=dict(stem='cifar')`` still selects it.

Models: ``unet_resnet34_tn`` (TN in encoder and decoder), ``unet_resnet34`` (its ReLU twin).
"""
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import torch.fx
import torch.utils.checkpoint
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models import register_notrace_function
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import ReLUTN, relu_tn_act_layer
from ..checkpoint import CheckedLoadMixin
from ._head import ClassifierHeadMixin
from ._paper_cfg import paper_cfg, plugin_cfg_overlay
from ..retrofit.add_tensor_norm import add_tensor_norm
from .resnet_cifar import NORM_TYPES, default_cfgs as _resnet_tn_cfgs

__all__ = ['UNet', 'UNetDecoderBlock']

UNET_IMG_SIZE = (227, 227)


# Size-dependent steps as leaf functions, so torch.fx (and timm's FX feature extraction) records one node
# each instead of branching on a symbolic shape; they work on any input size at run time.
@register_notrace_function
def resize_like(x: torch.Tensor, ref: torch.Tensor, mode: str = 'nearest') -> torch.Tensor:
    """``x`` interpolated to the height and width of ``ref`` (unchanged if they already match)."""
    if x.shape[-2:] != ref.shape[-2:]:
        x = F.interpolate(x, size=ref.shape[-2:], mode=mode)
    return x


@register_notrace_function
def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad bottom/right so height and width are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple)) if multiple > 1 else x


@register_notrace_function
def crop_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The top-left part of ``x`` with the height and width of ``ref``."""
    return x[..., :ref.shape[-2], :ref.shape[-1]]


torch.fx.wrap('resize_like')
torch.fx.wrap('pad_to_multiple')
torch.fx.wrap('crop_like')


class _ConvAct(nn.Module):
    """conv3x3 (with bias) + act: ``ConvNormAct`` without its norm (which would drop the act too)."""

    def __init__(self, in_chs: int, out_chs: int, act_layer=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=True)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class UNetDecoderBlock(nn.Module):
    """Upsample to the skip's size (or ``size``), concatenate the skip, two conv3x3-BN-act (no BN: ``norm=False``)."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int, act_layer=nn.ReLU, upsample_mode: str = 'nearest',
                 norm: bool = True):
        super().__init__()
        self.upsample_mode = upsample_mode
        block = partial(ConvNormAct, kernel_size=3, act_layer=act_layer) if norm else partial(_ConvAct, act_layer=act_layer)
        self.conv1 = block(in_chs + skip_chs, out_chs)
        self.conv2 = block(out_chs, out_chs)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, ref: Optional[torch.Tensor] = None):
        """Upsample ``x`` to ``skip``'s size (or, without a skip, to ``ref``'s), concatenate, two convs."""
        if skip is not None:
            x = torch.cat([resize_like(x, skip, self.upsample_mode), skip], dim=1)
        else:
            assert ref is not None, 'a decoder block without a skip needs the reference tensor'
            x = resize_like(x, ref, self.upsample_mode)
        return self.conv2(self.conv1(x))


class UNet(CheckedLoadMixin, ClassifierHeadMixin, nn.Module):
    """U-Net on a timm ``features_only`` encoder; logits have the input's spatial size.

    Args:
        encoder: timm model name of the encoder (any CNN that supports ``features_only``).
        num_classes: output channels of the 1x1 classifier (0: return the decoder's features).
        in_chans: input channels.
        decoder_channels: widths of the decoder blocks, deepest first; one per encoder skip plus one
            for the final full-resolution block when the shallowest feature is downsampled. Default:
            256, 128, 64, ... (at least 16).
        tn: put Tensor Normalization after every ReLU of the decoder and of the encoder (encoders built
            with TN keep theirs, others get it after every ``nn.ReLU`` via ``add_tensor_norm``).
        tn_grad: TN gradient mode, ``'exact'`` or ``'paper'``.
        norm: ``'batchnorm'`` or ``'none'`` (no BN in encoder or decoder; decoder convs get a bias; the
            encoder is built with ``norm_layer=nn.Identity``, which timm's ResNets take).
        drop_rate: dropout on the decoder output, before the classifier.
        upsample_mode: ``F.interpolate`` mode; 'nearest' (default) has a deterministic CUDA backward.
        encoder_kwargs: extra ``timm.create_model`` arguments for the encoder (plain values only, so
            checkpoints can record them). Encoders from this package default to ``stem='imagenet'``.
        encoder_pretrained: load timm's pretrained weights into the encoder.
        pad_to_multiple: zero-pad the input on the bottom/right to a multiple of this (cropping the output
            back), for encoders that only take sizes divisible by their stride (patchify stems such as
            ConvNeXt's). 0 (default): no padding; ResNet encoders take any size.
    """

    def __init__(
            self,
            encoder: str = 'resnet34',
            num_classes: int = 21,
            in_chans: int = 3,
            decoder_channels: Optional[Sequence[int]] = None,
            tn: bool = False,
            tn_grad: str = 'exact',
            norm: str = 'batchnorm',
            drop_rate: float = 0.,
            upsample_mode: str = 'nearest',
            encoder_kwargs: Optional[Dict[str, Any]] = None,
            encoder_pretrained: bool = False,
            pad_to_multiple: int = 0,
    ):
        super().__init__()
        if not isinstance(encoder, str):
            raise TypeError(f'encoder must be a timm model name, got {type(encoder).__name__}')
        act_layer = relu_tn_act_layer(tn_grad) if tn else nn.ReLU  # checks tn_grad
        if norm not in NORM_TYPES:
            raise ValueError(f'norm must be one of {NORM_TYPES}, got {norm!r}')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.pad_to_multiple = pad_to_multiple
        self.grad_checkpointing = False

        encoder_kwargs = dict(encoder_kwargs or {})
        if encoder in _resnet_tn_cfgs:
            encoder_kwargs.setdefault('stem', 'imagenet')
        if norm == 'none':
            encoder_kwargs['norm_layer'] = nn.Identity
        try:
            self.encoder = timm.create_model(
                encoder, pretrained=encoder_pretrained, features_only=True, in_chans=in_chans, **encoder_kwargs)
        except TypeError as e:
            if norm != 'none' or 'norm_layer' not in str(e):
                raise
            raise ValueError(f"norm='none' needs an encoder that takes norm_layer (timm's ResNets); {encoder}: {e}")
        if tn:
            tn_modules = [m for m in self.encoder.modules() if isinstance(m, ReLUTN)]
            if tn_modules:
                for m in tn_modules:
                    m.grad = tn_grad
            else:
                add_tensor_norm(self.encoder, grad=tn_grad)

        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        skip_channels = channels[-2::-1]  # deepest skip first
        self.final_upsample = reductions[0] > 1
        num_blocks = len(skip_channels) + int(self.final_upsample)
        if decoder_channels is None:
            decoder_channels = [max(16, 256 >> i) for i in range(num_blocks)]
        decoder_channels = list(decoder_channels)
        if len(decoder_channels) != num_blocks:
            raise ValueError(
                f'{encoder} gives {len(skip_channels)} skips (reductions {reductions}): decoder_channels needs '
                f'{num_blocks} entries, got {len(decoder_channels)}')

        blocks = []
        in_chs = channels[-1]
        for out_chs, skip_chs in zip(decoder_channels, skip_channels + [0]):
            blocks.append(UNetDecoderBlock(in_chs, skip_chs, out_chs, act_layer, upsample_mode, norm == 'batchnorm'))
            in_chs = out_chs
        self.decoder = nn.ModuleList(blocks)
        # feature taps: the encoder's pyramid (timm's features keep a non-decreasing reduction, which
        # the decoder's coarse-to-fine outputs do not); FeatureListNet names modules with '_' for '.'
        self.feature_info = [dict(num_chs=d['num_chs'], reduction=d['reduction'],
                                  module='encoder.' + d['module'].replace('.', '_'))
                             for d in self.encoder.feature_info.get_dicts()]
        self.feature_end = -1  # the tap forward_features returns once the decoder is pruned away
        self.decoder_pruned = False  # plain attributes: TorchScript cannot read feature_info's dicts
        self.num_features = self.head_hidden_size = in_chs
        self.head = self._make_head(num_classes)
        self._init_decoder()

    def _make_head(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        head = nn.Conv2d(self.num_features, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(head.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(head.bias)  # "all bias terms are set to 0"
        return head

    def _init_decoder(self):
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)

    head_attr = 'head'

    def _build_head(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        # a new 1x1 classifier (0 classes: none); global_pool is timm's signature, a segmenter does not pool
        self.head = self._make_head(num_classes)

    def _decode(self, features: List[torch.Tensor], padded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Decoder features at the height and width of ``x`` from the encoder's pyramid of ``padded``."""
        y = features[-1]
        skips = features[-2::-1]
        for i, block in enumerate(self.decoder):
            skip: Optional[torch.Tensor] = None
            if i < len(skips):
                skip = skips[i]
            if self.grad_checkpointing and not torch.jit.is_scripting():
                y = torch.utils.checkpoint.checkpoint(block, y, skip, padded, use_reentrant=False)
            else:
                y = block(y, skip, padded)
        # an encoder whose stride-1 features are not exactly input-sized
        y = resize_like(y, padded, self.decoder[-1].upsample_mode)
        return crop_like(y, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder features at the input's height and width, ``(B, num_features, H, W)`` (after
        ``prune_intermediate_layers`` cut into the encoder: its last kept tap)."""
        padded = pad_to_multiple(x, self.pad_to_multiple)
        features = self.encoder(padded)
        if self.decoder_pruned:
            return features[self.feature_end]
        return self._decode(features, padded, x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The encoder's feature pyramid (``feature_info``) and the decoder's output, timm's signature.

        Returns ``(forward_features(x), taps)``; with ``stop_early`` the decoder does not run and the first
        element is the last requested tap. Taps are at their reduction of the (``pad_to_multiple``-padded)
        input. ``norm`` is accepted for timm compatibility (there is no final norm); 'NCHW' only.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"UNet gives NCHW features only, got output_fmt={output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        padded = pad_to_multiple(x, self.pad_to_multiple)
        features = self.encoder(padded)  # timm's feature extractor computes every tap in one pass
        intermediates = [features[i] for i in take_indices]
        if intermediates_only:
            return intermediates
        if stop_early or self.decoder_pruned:
            return features[max_index if stop_early else self.feature_end], intermediates
        return self._decode(features, padded, x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Remove the head, and the decoder unless the deepest tap is kept; returns the kept tap indices.

        The decoder needs every tap of the encoder, so it goes as a whole once a deeper tap is not kept;
        the encoder (a timm feature extractor) is kept whole. ``prune_norm``: accepted, nothing to prune.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        if max_index < len(self.feature_info) - 1:
            self.decoder = nn.ModuleList()
            self.decoder_pruned, self.feature_end = True, max_index
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
            prune_head = True  # the 1x1 classifier was sized for the decoder's channels
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create_unet(variant: str, pretrained: bool = False, **kwargs) -> UNet:
    if kwargs.get('features_only') and kwargs.get('feature_cls') != 'getter':
        # timm's default (hook/list) extractors run modules in sequence; the skips need forward_intermediates
        raise ValueError(f"{variant} is a segmenter: features_only=True needs feature_cls='getter' (the decoder "
                         "blocks' outputs); the encoder's feature pyramid is model.encoder(x)")
    return build_model_with_cfg(UNet, variant, pretrained, **plugin_cfg_overlay(kwargs, img_size=UNET_IMG_SIZE))


def _cfg(**kwargs) -> Dict[str, Any]:
    return paper_cfg(input_size=(3, *UNET_IMG_SIZE), num_classes=21, first_conv='encoder.conv1',
                     classifier='head', **kwargs)


default_cfgs = generate_default_cfgs({
    'unet_resnet34_tn': _cfg(),
    'unet_resnet34': _cfg(),
})


@register_model
def unet_resnet34_tn(pretrained: bool = False, **kwargs) -> UNet:
    """U-Net on ResNet-34 (ImageNet stem) with TN after every ReLU of encoder and decoder."""
    return _create_unet('unet_resnet34_tn', pretrained, **dict(dict(encoder='resnet34_tn', tn=True), **kwargs))


@register_model
def unet_resnet34(pretrained: bool = False, **kwargs) -> UNet:
    """U-Net on timm's ResNet-34, plain ReLU: the baseline twin of ``unet_resnet34_tn``."""
    return _create_unet('unet_resnet34', pretrained, **dict(dict(encoder='resnet34'), **kwargs))
