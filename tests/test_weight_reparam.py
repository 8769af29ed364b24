""" WN (eq.1) and WS (eq.3) as parametrizations: formulas, gradients, scopes, checkpoints, recipe flags. """
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import torch.nn as nn
from timm.layers import StdConv2d
from timm.optim import create_optimizer_v2
from torch.nn.utils import parametrize

import timm_normplugins  # noqa: F401
from timm_normplugins import apply_weight_reparam, load_model, read_checkpoint_info, save_model
from timm_normplugins.models import weight_reparam_modules
from timm_normplugins.training import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _units(module: nn.Module):
    """Index tuples selecting each output unit's weights, written out per layer type."""
    w = module.weight
    if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
        in_per_group = w.shape[0] // module.groups  # (I, O/g, k...): unit = one output channel of one group
        return [(slice(g * in_per_group, (g + 1) * in_per_group), o)
                for g in range(module.groups) for o in range(w.shape[1])]
    return [(o,) for o in range(w.shape[0])]


def _reference(module: nn.Module, original: torch.Tensor, kind: str, eps: float, gain: float = 1.0):
    out = torch.empty_like(original, dtype=torch.float64)
    for idx in _units(module):
        v = original[idx].double()
        if kind == 'wn':
            out[idx] = gain * v / max(v.pow(2).sum().sqrt().item(), eps)
        else:
            out[idx] = (v - v.mean()) / torch.sqrt(((v - v.mean()) ** 2).mean() + eps)
    return out


LAYERS = {
    'conv': lambda: nn.Conv2d(6, 8, 3),
    'grouped': lambda: nn.Conv2d(6, 8, 3, groups=2),
    'depthwise3x3': lambda: nn.Conv2d(6, 6, 3, groups=6),
    'linear': lambda: nn.Linear(12, 5),
    'conv1d': lambda: nn.Conv1d(4, 3, 5),
    'transposed_grouped': lambda: nn.ConvTranspose2d(6, 4, 3, groups=2),
}


class _Wrap(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.head = nn.Linear(2, 2)

    def get_classifier(self):
        return self.head


@pytest.mark.parametrize('kind', ['wn', 'ws'])
@pytest.mark.parametrize('layer', LAYERS)
def test_formula_per_output_unit(kind, layer):
    torch.manual_seed(0)
    model = _Wrap(LAYERS[layer]())
    original = model.layer.weight.detach().clone()
    assert apply_weight_reparam(model, kind, scope='conv_linear') == 1  # the head is the classifier
    assert weight_reparam_modules(model) == ['layer'] and not parametrize.is_parametrized(model.head)
    torch.testing.assert_close(model.layer.parametrizations.weight.original, original, rtol=0, atol=0)
    eps = 1e-12 if kind == 'wn' else 1e-6
    torch.testing.assert_close(model.layer.weight.double(), _reference(model.layer, original, kind, eps))


def test_wn_gain_and_ws_matches_timm_stdconv():
    torch.manual_seed(0)
    model = _Wrap(nn.Conv2d(3, 4, 3))
    original = model.layer.weight.detach().clone()
    apply_weight_reparam(model, 'wn', gain=2.5)
    torch.testing.assert_close(model.layer.weight.double(), _reference(model.layer, original, 'wn', 1e-12, 2.5))
    # WS is what timm's StdConv2d computes (BiT's weight standardisation, same eps)
    std_conv = StdConv2d(3, 4, 3, eps=1e-6)
    with torch.no_grad():
        std_conv.weight.copy_(original)
    model = _Wrap(nn.Conv2d(3, 4, 3, padding=1, bias=False))
    with torch.no_grad():
        model.layer.weight.copy_(original)
    apply_weight_reparam(model, 'ws')
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model.layer(x), std_conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['wn', 'ws'])
def test_gradient_flows_through_the_normalisation(kind):
    # WN: d/dv of v/||v|| is orthogonal to v; WS: the gradient is also mean-free per filter (so GC on top
    # of WS changes nothing). A projection-style implementation would fail both.
    torch.manual_seed(0)
    model = _Wrap(nn.Conv2d(4, 6, 3))
    apply_weight_reparam(model, kind)
    model.layer(torch.randn(3, 4, 7, 7)).pow(2).mean().backward()
    v = model.layer.parametrizations.weight.original
    g = v.grad.flatten(1).double()
    vf = v.detach().flatten(1).double()
    scale = g.abs().max().item()
    assert scale > 1e-4
    if kind == 'ws':
        torch.testing.assert_close(g.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-6 * scale, rtol=0)
        vf = vf - vf.mean(1, keepdim=True)
    cos = (g * vf).sum(1) / (g.norm(dim=1) * vf.norm(dim=1))
    # WS's eps leaves a radial part of relative size eps / (var + eps), ~1e-4 for these filters
    torch.testing.assert_close(cos, torch.zeros(6, dtype=torch.float64), atol=1e-5 if kind == 'wn' else 1e-3, rtol=0)


def test_scopes_follow_wcgc_rules():
    def count(**kw):
        model = timm.create_model('wcgc_cnn_a', num_classes=10)
        n = apply_weight_reparam(model, 'ws', **kw)
        names = weight_reparam_modules(model)
        assert n == len(names) and not any(parametrize.is_parametrized(m, 'bias') for m in model.modules())
        return names
    convs = [n for n, m in timm.create_model('wcgc_cnn_a').named_modules() if isinstance(m, nn.Conv2d)]
    assert count(scope='conv') == convs
    conv_linear = count()
    assert conv_linear == convs + ['fc1']  # + the penultimate FC; the classifier fc stays plain
    assert count(scope='all') == convs + ['fc1', 'fc']
    assert count(exclude='stages.0.*') == conv_linear[2:]
    # a 1x1 depthwise filter holds one weight: left alone (WS would zero it), as WC/GC leaves it
    model = nn.Sequential(nn.Conv2d(4, 4, 1, groups=4), nn.Conv2d(4, 4, 3))
    assert apply_weight_reparam(model, 'ws', scope='conv') == 1 and weight_reparam_modules(model) == ['1']


@pytest.mark.parametrize('kwargs, message', [
    (dict(kind='bn'), 'must be one of'),
    (dict(scope='none'), 'scope must be one of'),
    (dict(scope='convs'), 'scope must be one of'),
    (dict(kind='ws', gain=2.0), 'WN setting'),
    (dict(kind='wn', gain=0.0), 'positive'),
    (dict(kind='wn', eps=0.0), 'eps must be > 0'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        apply_weight_reparam(_Wrap(nn.Conv2d(3, 4, 3)), **kwargs)


def test_twice_and_nothing_to_do_are_errors():
    model = _Wrap(nn.Conv2d(3, 4, 3))
    apply_weight_reparam(model, 'wn')
    with pytest.raises(ValueError, match='already has a weight reparametrisation'):
        apply_weight_reparam(model, 'ws')
    with pytest.raises(ValueError, match='no conv/linear weight in scope'):
        apply_weight_reparam(_Wrap(nn.Linear(3, 4)), 'ws', scope='conv')


def test_reduced_precision_and_autocast_use_fp32_statistics():
    torch.manual_seed(0)
    model = _Wrap(nn.Conv2d(8, 4, 3))
    apply_weight_reparam(model, 'ws')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert model.layer.weight.dtype == torch.float32  # fp32 parameter, fp32 statistics; the conv casts
        assert model.layer(torch.randn(1, 8, 5, 5)).dtype == torch.bfloat16
    model = model.to(torch.bfloat16)
    original = model.layer.parametrizations.weight.original.detach()
    expected = _reference(model.layer, original.float(), 'ws', 1e-6).to(torch.bfloat16)
    assert model.layer.weight.dtype == torch.bfloat16
    torch.testing.assert_close(model.layer.weight, expected, rtol=0, atol=0)


def _trained(name, kind, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs)
    apply_weight_reparam(model, kind, scope='conv')
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    opt.step()
    return model.eval()


@pytest.mark.parametrize('kind', ['wn', 'ws'])
def test_checkpoint_round_trip(tmp_path, kind):
    model = _trained('wcgc_cnn_a', kind, num_classes=10)
    path = save_model(model, tmp_path / 'm.safetensors')
    keys = safetensors.torch.load_file(str(path)).keys()
    assert not any('parametrizations' in k for k in keys) and 'stages.0.0.weight' in keys
    record = read_checkpoint_info(path)['weight_reparam']
    assert record['kind'] == kind and record['modules'] == weight_reparam_modules(model)
    x = torch.randn(3, 3, 32, 32)
    loaded = load_model(path)
    assert weight_reparam_modules(loaded) == weight_reparam_modules(model)
    torch.testing.assert_close(loaded.eval()(x), model(x), rtol=1e-5, atol=1e-5)
    if kind == 'ws':  # the original's scale comes back (only its mean is lost)
        a = model.stages[1][0].parametrizations.weight.original.detach().flatten(1)
        b = loaded.stages[1][0].parametrizations.weight.original.detach().flatten(1)
        torch.testing.assert_close(b, a - a.mean(1, keepdim=True), rtol=1e-3, atol=1e-6)
    # plain timm sees an ordinary state dict holding the normalised weights: same outputs, no parametrization
    via_timm = timm.create_model('wcgc_cnn_a', num_classes=10, pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(path)))
    assert not weight_reparam_modules(via_timm)
    torch.testing.assert_close(via_timm.eval()(x), model(x), rtol=1e-5, atol=1e-5)
    # saving the reloaded model writes the same weights again
    again = safetensors.torch.load_file(str(save_model(loaded, tmp_path / 'again.safetensors')))
    for k, v in safetensors.torch.load_file(str(path)).items():
        torch.testing.assert_close(again[k], v, rtol=1e-5, atol=1e-6)


def test_wcgc_optimizer_centralizes_the_parametrization_input():
    model = timm.create_model('wcgc_cnn_c', num_classes=10)
    n = apply_weight_reparam(model, 'wn', scope='conv')
    opt = create_optimizer_v2(model, opt='adam_wcgc', lr=1e-3, wcgc_scope='conv')
    assert len(opt.wcgc.names) == n and all(s.endswith('parametrizations.weight.original') for s in opt.wcgc.names)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    for name in weight_reparam_modules(model):  # WC ran on the trained tensors
        v = model.get_submodule(name).parametrizations.weight.original.detach().flatten(1)
        torch.testing.assert_close(v.mean(1), torch.zeros(v.shape[0]), atol=1e-6, rtol=0)


def test_channels_last_model():
    model = _Wrap(nn.Conv2d(3, 8, 3))
    apply_weight_reparam(model, 'ws')
    x = torch.randn(2, 3, 9, 9)
    expected = model.layer(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model.layer(x.contiguous(memory_format=torch.channels_last)), expected)


# --- recipe flags -----------------------------------------------------------------------------------------
sys.path.insert(0, str(REPO / 'recipes'))
QUICK = ['--model', 'cifar_resnet20', '--max-train-samples', '100', '--max-val-samples', '50', '--batch-size', '50',
         '--workers', '0', '--epochs', '1', '--mixup', 'none', '--loss', 'ce', '--eval-attack']


def test_recipe_flags_end_to_end(tmp_path):
    import train as train_recipe
    argv = [*QUICK, '--output', str(tmp_path), '--experiment', 'ws', '--opt', 'sgd_gc', '--opt-kwargs',
            'wcgc_scope=conv', '--weight-reparam', 'ws', '--weight-reparam-scope', 'conv', '--error-norm', 'channel']
    assert train_recipe.main(argv) == 0
    info = read_checkpoint_info(tmp_path / 'ws' / 'model.safetensors')
    assert info['weight_reparam']['kind'] == 'ws' and info['weight_reparam']['scope'] == 'conv'
    assert info['error_norm']['area'] == 'channel'
    model = load_model(tmp_path / 'ws' / 'model.safetensors')
    assert len(weight_reparam_modules(model)) == 19  # cifar_resnet20's 19 convs; the fc stays plain
    # a resume must rebuild the same parametrization (the state's keys depend on it)
    with pytest.raises(ConfigError, match="weight_reparam='ws'"):
        train_recipe.main([*argv[:-6], '--weight-reparam', 'wn', '--resume', str(tmp_path / 'ws')])


def test_recipe_flag_errors(tmp_path):
    from timm_normplugins.training import parse_args
    with pytest.raises(SystemExit):
        parse_args(['--weight-reparam', 'bn'])
    with pytest.raises(ConfigError, match='needs an --error-norm area'):
        parse_args(['--error-norm-standardize'])
    with pytest.raises(ConfigError, match='fp16'):
        parse_args(['--error-norm', 'sample', '--error-norm-standardize', '--mixed-precision', 'fp16'])
    bad = tmp_path / 'bad.yaml'
    bad.write_text('weight-reparam: weightnorm\n')
    with pytest.raises(ConfigError, match=r"weight-reparam: invalid choice: 'weightnorm'"):
        parse_args(['--config', str(bad)])
