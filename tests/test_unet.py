import pytest
import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins import load_model, save_model
from timm_normplugins.layers import ReLUTN
from timm_normplugins.models import UNet
from timm_normplugins.models._paper_cfg import PAPER_MEAN, PAPER_STD

SMALL = dict(encoder_kwargs=dict(layers=(1, 1, 1, 1)))  # ResNet-10 depth: same layout, fast


def _count(model, cls):
    return sum(type(m) is cls for m in model.modules())


@pytest.mark.parametrize('name, size', [
    ('unet_resnet34_tn', (33, 45)), ('unet_resnet34_tn', (17, 64)), ('unet_resnet34', (33, 45))])
def test_logits_have_input_size(name, size):
    model = timm.create_model(name, num_classes=5, **SMALL)
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_paper_crop_size_227():
    model = timm.create_model('unet_resnet34_tn', **SMALL).eval()
    assert model.pretrained_cfg['input_size'] == (3, 227, 227) and model.num_classes == 21
    with torch.no_grad():
        assert model(torch.randn(1, 3, 227, 227)).shape == (1, 21, 227, 227)


def test_tn_variant_has_tn_and_twin_has_none():
    tn, plain = timm.create_model('unet_resnet34_tn', **SMALL), timm.create_model('unet_resnet34', **SMALL)
    assert _count(plain, ReLUTN) == 0 and _count(plain, nn.ReLU) > 0
    assert _count(tn, nn.ReLU) == 0
    assert _count(tn.encoder, ReLUTN) > 0 and _count(tn.decoder, ReLUTN) == 2 * len(tn.decoder)
    assert isinstance(tn.head, nn.Conv2d)  # the output conv is not normalised
    # same architecture otherwise: identical parameter shapes (TN has no parameters)
    assert [p.shape for p in tn.parameters()] == [p.shape for p in plain.parameters()]
    # the encoder uses the ImageNet stem (stride 2 conv + max-pool)
    assert tn.encoder.conv1.stride == (2, 2) and tn.encoder.feature_info.reduction() == [2, 4, 8, 16, 32]


def test_tn_grad_mode_reaches_every_tn():
    model = timm.create_model('unet_resnet34_tn', tn_grad='paper', **SMALL)
    assert {m.grad for m in model.modules() if isinstance(m, ReLUTN)} == {'paper'}
    with pytest.raises(ValueError, match='tn_grad'):
        timm.create_model('unet_resnet34_tn', tn_grad='approx', **SMALL)


@pytest.mark.parametrize('name', ['unet_resnet34_tn', 'unet_resnet34'])
def test_backward(name):
    model = timm.create_model(name, num_classes=3, **SMALL)
    x = torch.randn(2, 3, 33, 45)
    target = torch.randint(0, 3, (2, 33, 45))
    target[:, 0] = 255
    loss = nn.functional.cross_entropy(model(x), target, ignore_index=255)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert model.encoder.conv1.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0


def test_timm_contract():
    model = timm.create_model('unet_resnet34_tn', num_classes=4, in_chans=1, **SMALL).eval()
    assert model.num_classes == 4 and model.in_chans == 1
    assert model(torch.randn(1, 1, 31, 29)).shape == (1, 4, 31, 29)
    cfg = resolve_data_config(model=model)
    assert cfg['input_size'] == (1, 227, 227) and cfg['mean'] == pytest.approx((117 / 255,))
    cfg3 = resolve_data_config(model=timm.create_model('unet_resnet34', **SMALL))
    assert cfg3['mean'] == pytest.approx(PAPER_MEAN) and cfg3['std'] == pytest.approx(PAPER_STD)

    assert model.get_classifier() is model.head and model.get_classifier(name_only=True) == 'head'
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(torch.randn(1, 1, 20, 20)).shape == (1, 7, 20, 20)
    model.reset_classifier(0)
    feats = model(torch.randn(1, 1, 20, 20))
    assert feats.shape == (1, model.num_features, 20, 20)
    assert torch.equal(model.forward_head(feats, pre_logits=True), feats)


def test_other_encoders_by_name():
    model = timm.create_model('unet_resnet34', encoder='test_resnet', num_classes=2)
    assert model(torch.randn(1, 3, 41, 37)).shape == (1, 2, 41, 37)
    # a plain timm encoder in the TN variant gets TN after each of its ReLUs
    tn = timm.create_model('unet_resnet34_tn', encoder='test_resnet', num_classes=2)
    assert _count(tn.encoder, ReLUTN) > 0 and _count(tn.encoder, nn.ReLU) == 0
    # a stride-1 stem (first feature at full resolution): no final upsampling block is needed
    cifar = UNet(encoder='resnet34_cifar', num_classes=2, encoder_kwargs=dict(stem='cifar', layers=(1, 1, 1, 1)))
    assert not cifar.final_upsample and len(cifar.decoder) == 4
    assert cifar(torch.randn(1, 3, 15, 13)).shape == (1, 2, 15, 13)
    # a patchify encoder (sizes must divide by 32) through input padding, output cropped back
    convnext = UNet(encoder='test_convnext', num_classes=2, pad_to_multiple=32, upsample_mode='bilinear')
    assert convnext.encoder.feature_info.reduction()[0] == 4 and len(convnext.decoder) == 4
    assert convnext(torch.randn(2, 3, 37, 29)).shape == (2, 2, 37, 29)
    with pytest.raises(ValueError, match='decoder_channels'):
        UNet(encoder='test_resnet', decoder_channels=(64, 32))
    with pytest.raises(TypeError, match='model name'):
        UNet(encoder=nn.Conv2d(3, 3, 1))


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    model = timm.create_model('unet_resnet34_tn', num_classes=3, **SMALL)
    x = torch.randn(2, 3, 24, 40)
    model(x).square().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_checkpoint_round_trip(tmp_path):
    model = timm.create_model('unet_resnet34_tn', num_classes=6, tn_grad='paper', **SMALL).eval()
    path = save_model(model, tmp_path / 'unet.safetensors')
    loaded = load_model(path).eval()
    x = torch.randn(1, 3, 35, 27)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert {m.grad for m in loaded.modules() if isinstance(m, ReLUTN)} == {'paper'}


@pytest.mark.parametrize('name', ['unet_resnet34', 'unet_resnet34_tn'])
def test_without_batchnorm(name, tmp_path):
    # WC/GC Table 5's WN row: model d without BN anywhere; decoder convs get a zero-initialised bias
    model = timm.create_model(name, num_classes=4, norm='none', **SMALL)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    decoder_convs = [m for m in model.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert decoder_convs and all(m.bias is not None and not m.bias.any() for m in decoder_convs)
    assert _count(model, nn.ReLU) + _count(model, ReLUTN) == _count(timm.create_model(name, **SMALL), nn.ReLU) + \
        _count(timm.create_model(name, **SMALL), ReLUTN)  # every activation is still there
    x = torch.randn(2, 3, 33, 45)
    out = model(x)
    assert out.shape == (2, 4, 33, 45) and torch.isfinite(out).all()
    loaded = load_model(save_model(model, tmp_path / 'nobn.safetensors'))
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match='norm must be one of'):
        timm.create_model(name, norm='groupnorm', **SMALL)


@pytest.mark.parametrize('name', ['unet_resnet34_tn', 'unet_resnet34'])
def test_torchscript(name):
    model = timm.create_model(name, num_classes=3, pad_to_multiple=8, **SMALL).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 33, 45)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_features_only_needs_the_getter():
    with pytest.raises(ValueError, match="feature_cls='getter'"):
        timm.create_model('unet_resnet34', features_only=True, **SMALL)
    features = timm.create_model('unet_resnet34', features_only=True, feature_cls='getter', **SMALL)
    assert features.feature_info.reduction() == [2, 4, 8, 16, 32]  # the encoder's pyramid
