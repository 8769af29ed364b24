""" timm's model contract on every model this package registers.

What timm's scripts and wrappers call: ``set_grad_checkpointing`` (train.py --grad-checkpointing),
``forward_intermediates`` / ``prune_intermediate_layers`` (``features_only=True, feature_cls='getter'``),
``forward_head(pre_logits=True)``, ``get_classifier`` / ``reset_classifier``. Small variants keep it fast.
"""
import copy

import pytest
import timm
import torch
import torch.nn as nn

from timm_normplugins import list_plugin_models

# name prefix -> (creation kwargs of a small variant, input size)
SMALL = {
    'cifar_resnet': (dict(), (8, 8)),  # depth is the name's (20-110 layers): small images instead
    'resnet': (dict(layers=(1, 1, 1, 1), channels=(8, 8, 16, 16), stem_width=8), (16, 16)),
    'wrn28': (dict(depth=10, widen_factor=1), (16, 16)),
    'wcgc_cnn': (dict(img_size=16), (16, 16)),
    'unet': (dict(encoder_kwargs=dict(layers=(1, 1, 1, 1)), decoder_channels=(16, 8, 8, 8, 8)), (32, 40)),
}
MODELS = list_plugin_models()


def _small(name):
    prefix = next(p for p in SMALL if name.startswith(p))
    return SMALL[prefix]


def _create(name, **kwargs):
    small_kwargs, size = _small(name)
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, **small_kwargs, **kwargs)
    return model.eval(), torch.randn(2, 3, *size)


def _is_segmenter(name):
    return name.startswith('unet')


def test_every_registered_model_is_covered():
    assert len(MODELS) >= 20
    for name in MODELS:
        assert any(name.startswith(p) for p in SMALL), f'{name}: add a small variant to SMALL'


@pytest.mark.parametrize('name', MODELS)
def test_forward_intermediates(name):
    model, x = _create(name)
    info = model.feature_info
    with torch.no_grad():
        final, feats = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [f.shape[1] for f in feats] == [i['num_chs'] for i in info]
        for f, i in zip(feats, info):
            # stride-2 convs round up; the U-Net's last tap is cropped back to the input size
            assert f.shape[-2:] == tuple(-(-s // i['reduction']) for s in x.shape[-2:]), i
        n = len(info)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and torch.equal(last_two[-1], feats[-1]) and torch.equal(last_two[0], feats[-2])
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], feats[0]) and torch.equal(picked[1], feats[n - 1])
        early, only = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, feats[1]) and torch.equal(only[0], feats[1])
    with pytest.raises((ValueError, AssertionError), match='NCHW'):
        model.forward_intermediates(x, output_fmt='NHWC')


@pytest.mark.parametrize('name', MODELS)
def test_prune_intermediate_layers(name):
    model, x = _create(name)
    full = copy.deepcopy(model)
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    with torch.no_grad():
        want = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        # the features now end at tap 1 and the classifier is gone
        assert torch.equal(model.forward_features(x), want[1])
        assert model.num_features == model.feature_info[1]['num_chs'] and model.num_classes == 0
        out = model(x)
    assert out.shape[:2] == (2, model.head_hidden_size)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize('name', MODELS)
def test_timm_feature_getter(name):
    """timm's own wrapper: features_only with feature_cls='getter' prunes and calls forward_intermediates."""
    small_kwargs, size = _small(name)
    model = timm.create_model(name, features_only=True, feature_cls='getter', out_indices=(1, 2),
                              **small_kwargs).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()


@pytest.mark.parametrize('name', MODELS)
def test_grad_checkpointing(name):
    """timm's train.py --grad-checkpointing: same gradients, blocks recomputed in backward."""
    model, x = _create(name)
    model.train()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    calls = [0]
    for m in convs:
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def grads():
        model.zero_grad()
        calls[0] = 0
        model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()], calls[0]

    plain, plain_calls = grads()
    model.set_grad_checkpointing(enable=True)  # timm's train.py passes the keyword
    ckpt, ckpt_calls = grads()
    assert ckpt_calls > plain_calls  # really recomputed
    for a, b in zip(ckpt, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    model.set_grad_checkpointing(False)
    assert grads()[1] == plain_calls


@pytest.mark.parametrize('name', MODELS)
def test_head_and_classifier(name):
    model, x = _create(name)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape[1] == model.head_hidden_size
        assert model.forward_head(feats).shape[1] == 3
        classifier = model.get_classifier()
        assert model.get_submodule(model.get_classifier(name_only=True)) is classifier
        assert torch.equal(classifier(pre), model.forward_head(feats))
        model.reset_classifier(5)
        assert model(x).shape[1] == 5 and model.num_classes == 5
        model.reset_classifier(0)
        assert torch.equal(model(x), model.forward_head(model.forward_features(x), pre_logits=True))
    if not _is_segmenter(name):
        assert model(x).shape == (2, model.head_hidden_size)
