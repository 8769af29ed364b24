import pytest
import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config

import timm_normplugins
from timm_normplugins import ReLUTN, add_tensor_norm, list_plugin_models

# the papers' CIFAR models; segmentation models (input 227x227) are tested with the U-Net
CLASSIFIERS = [n for n in list_plugin_models() if not n.startswith('unet')]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_has_the_papers_models():
    for name in ('resnet34_tn', 'resnet152_tn', 'resnet34_cifar', 'resnet152_cifar', 'wrn28_10', 'wrn28_10_tn'):
        assert name in CLASSIFIERS
        assert timm.is_model(name)


@pytest.mark.parametrize('name, expected_m', [
    ('resnet34_tn', 21.28),  # ResNet-34 with 3x3 CIFAR stem, 10 classes
    ('resnet34_cifar', 21.28),
    ('resnet152_tn', 58.16),
    ('wrn28_10_tn', 36.48),  # Zagoruyko & Komodakis: 36.5M
    ('wrn28_10', 36.48),
    ('wrn28_12', 52.52),
    ('cifar_resnet32', 0.46),  # He et al. 2016, option-A shortcuts
    ('cifar_resnet110', 1.73),
])
def test_parameter_counts_match_published_sizes(name, expected_m):
    model = timm.create_model(name, num_classes=10)
    assert n_params(model) / 1e6 == pytest.approx(expected_m, abs=0.01)


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_forward_backward_at_default_input_size(name):
    model = timm.create_model(name, drop_rate=0.1).train()
    cfg = resolve_data_config({}, model=model)
    assert cfg['input_size'] == (3, 32, 32)
    x = torch.randn(2, *cfg['input_size'])
    out = model(x)
    assert out.shape == (2, model.num_classes)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    n_tn = sum(isinstance(m, ReLUTN) for m in model.modules())
    n_relu = sum(type(m) is nn.ReLU for m in model.modules())
    assert (n_tn > 0 and n_relu == 0) if name.endswith('_tn') else (n_tn == 0 and n_relu > 0)


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_timm_model_contract(name):
    model = timm.create_model(name, num_classes=7, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.forward_head(feats).shape == (2, 7)
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    # 1-channel models describe their own normalisation (grey mean 117, /256)
    cfg = resolve_data_config({}, model=model)
    assert cfg['input_size'][0] == 1 and cfg['mean'] == pytest.approx((117 / 255,))


@pytest.mark.parametrize('name', CLASSIFIERS)
def test_features_only_follows_feature_info(name):
    model = timm.create_model(name, features_only=True).eval()
    feats = model(torch.randn(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [32 // f.shape[-1] for f in feats] == model.feature_info.reduction()


def test_default_cfg_carries_the_papers_normalisation():
    cfg = resolve_data_config({}, model=timm.create_model('resnet34_tn'))
    mean_pixels = [m * 255 for m in cfg['mean']]
    std_pixels = [s * 255 for s in cfg['std']]
    assert mean_pixels == pytest.approx([122, 117, 104])
    assert std_pixels == pytest.approx([256, 256, 256])


@pytest.mark.parametrize('name', ['resnet34_tn', 'wrn28_10_tn'])
def test_torchscript(name):
    model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(scripted(x), model(x), atol=1e-4, rtol=1e-4)


def test_tn_grad_mode_is_a_plain_string_argument():
    model = timm.create_model('resnet34_tn', tn_grad='paper')
    assert {m.grad for m in model.modules() if isinstance(m, ReLUTN)} == {'paper'}
    with pytest.raises(ValueError, match='tn_grad'):
        timm.create_model('wrn28_10_tn', tn_grad='fast')


def test_imagenet_stem_loads_timm_resnet_weights_unchanged():
    source = timm.create_model('resnet34', num_classes=10).eval()
    model = timm.create_model('resnet34_tn', stem='imagenet', num_classes=10).eval()
    model.load_state_dict(source.state_dict(), strict=True)
    assert model.feature_info[1]['reduction'] == 4
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 10)
    # TN changes the features, so outputs differ from the plain ReLU network with the same weights
    assert not torch.allclose(model(x), source(x))
    with pytest.raises(ValueError, match='stem'):
        timm.create_model('resnet34_tn', stem='deep')


def test_model_b_without_batchnorm():
    model = timm.create_model('resnet34_cifar', norm='none')
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in timm.create_model('wcgc_cnn_a', norm='none').modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in timm.create_model('wcgc_cnn_c').modules())


def test_cifar_stem_is_3x3_stride_1_without_maxpool():
    model = timm.create_model('resnet34_cifar')
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4


def test_add_tensor_norm_on_resnet50():
    model = timm.create_model('resnet50', num_classes=10)
    n_relu = sum(type(m) is nn.ReLU for m in model.modules())
    assert add_tensor_norm(model) == n_relu == 49
    assert sum(isinstance(m, ReLUTN) for m in model.modules()) == 49
    assert not any(type(m) is nn.ReLU for m in model.modules())
    # TN is really active: the stem activation has zero channel mean at every position
    stem = model.act1(model.bn1(model.conv1(torch.randn(1, 3, 64, 64))))
    torch.testing.assert_close(stem.mean(1), torch.zeros_like(stem.mean(1)), atol=1e-5, rtol=0)


def test_add_tensor_norm_without_relu_is_an_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    with pytest.raises(ValueError, match='no nn.ReLU'):
        add_tensor_norm(model)
    with pytest.raises(ValueError, match='gradient mode'):
        add_tensor_norm(nn.Sequential(nn.ReLU()), grad='nope')


def _saved_bytes(model, x):
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


@pytest.mark.parametrize('tn, twin', [('resnet34_tn', 'resnet34_cifar'), ('wrn28_10_tn', 'wrn28_10')])
def test_tn_keeps_no_extra_activation_memory(tn, twin):
    x = torch.randn(4, 3, 32, 32)
    ratio = _saved_bytes(timm.create_model(tn).train(), x) / _saved_bytes(timm.create_model(twin).train(), x)
    assert 1.0 < ratio <= 1.02  # > 1: the per-position means are really kept


def test_naive_tn_would_fail_the_memory_bound():
    # the check above can fail: the plain formula keeps a second full-size tensor per activation
    class NaiveReLUTN(nn.Module):
        def __init__(self, inplace=False):
            super().__init__()

        def forward(self, x):
            r = torch.relu(x)
            return r - r.mean(1, keepdim=True)

    x = torch.randn(4, 3, 32, 32)
    naive = timm.create_model('resnet34_cifar', act_layer=NaiveReLUTN).train()
    ratio = _saved_bytes(naive, x) / _saved_bytes(timm.create_model('resnet34_cifar').train(), x)
    assert ratio > 1.1
