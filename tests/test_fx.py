""" torch.fx on every TN model: symbolic_trace and timm's FX feature extraction, equal to eager; and
``torch.jit.script`` of those graphs for every model the package registers (timm's own model tests script
the FX feature-extractor graph).

TN's entry points are leaf functions (``torch.fx.wrap`` and timm's ``register_notrace_function``), so a
traced graph holds one ``relu_tensor_norm`` node per activation and runs the same custom autograd
Function as eager mode; TorchScript compiles the leaf itself and runs the plain formula there.
"""
import warnings

import pytest
import timm
import torch
import torch.fx
from timm.models import create_feature_extractor, get_graph_node_names

import timm_normplugins  # registers the models

TN_MODELS = sorted(n for n in timm.list_models() if n.endswith('_tn') or '_tn_' in n)
PLUGIN_MODELS = timm_normplugins.list_plugin_models()
# deeper or wider twins of a model scripted in the fast run: the same code, only a longer compile
SAME_CODE_AS_FAST = {'cifar_resnet32', 'cifar_resnet32_tn', 'cifar_resnet56', 'cifar_resnet56_tn', 'cifar_resnet110',
                     'cifar_resnet110_tn', 'wrn28_12', 'wrn28_12_tn', 'resnet152_cifar'}


pytestmark = pytest.mark.usefixtures('one_thread')


def _model_and_input(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).eval()
    in_chans = model.pretrained_cfg['input_size'][0]
    # odd sizes for the U-Net: its size-dependent steps must stay correct after tracing
    x = torch.randn(2, in_chans, 37, 41) if name.startswith('unet') else torch.randn(2, in_chans, 32, 32)
    return model, x


def test_every_tn_model_is_covered():
    assert {'cifar_resnet20_tn', 'resnet34_tn', 'wrn28_10_tn', 'unet_resnet34_tn'} <= set(TN_MODELS)


@pytest.mark.parametrize('name', TN_MODELS)
def test_symbolic_trace_matches_eager(name):
    model, x = _model_and_input(name)
    graph = torch.fx.symbolic_trace(model)
    tn_nodes = [n for n in graph.graph.nodes if n.op == 'call_function' and n.target.__name__ == 'relu_tensor_norm']
    assert tn_nodes, 'TN should appear as a leaf call in the graph'
    with torch.no_grad():
        assert torch.allclose(graph(x), model(x), rtol=1e-5, atol=1e-6)
    # and it trains: gradients through a graph traced in training mode equal eager ones (FX fixes Python
    # branches on self.training at trace time, e.g. in timm's BatchNormAct2d, so trace in the mode you run)
    model.train()
    graph = torch.fx.symbolic_trace(model)
    graph(x).square().mean().backward()
    traced_grads = {n: p.grad.clone() for n, p in graph.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(x).square().mean().backward()
    model_grads = dict(model.named_parameters())
    assert traced_grads
    for name, grad in traced_grads.items():  # by name: a graph module holds its submodules in call order
        assert torch.allclose(grad, model_grads[name].grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize('name', TN_MODELS)
def test_timm_fx_feature_extraction(name):
    model, x = _model_and_input(name)
    _, eval_nodes = get_graph_node_names(model)
    tn_nodes = [n for n in eval_nodes if n.endswith('relu_tensor_norm')]
    wanted = {tn_nodes[len(tn_nodes) // 2]: 'mid_tn', eval_nodes[-1]: 'out'}
    extractor = create_feature_extractor(model, return_nodes=wanted)
    with torch.no_grad():
        feats = extractor(x)
        assert torch.allclose(feats['out'], model(x), rtol=1e-5, atol=1e-6)
    mid = feats['mid_tn']
    assert torch.allclose(mid.mean(1), torch.zeros(()), atol=1e-5)  # a TN output: zero channel mean


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)  # torch 2.x marks torch.jit.script deprecated
        return torch.jit.script(module)


def test_script_list_covers_every_plugin_model():
    assert set(TN_MODELS) <= set(PLUGIN_MODELS)
    assert SAME_CODE_AS_FAST <= set(PLUGIN_MODELS)  # a renamed model must not drop out of the slow run silently


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in SAME_CODE_AS_FAST else n for n in PLUGIN_MODELS])
def test_fx_graph_scripts_and_matches_eager(name):
    """timm's ``test_model_forward_fx_torchscript``: the FX feature-extractor graph of the last node, scripted."""
    model, x = _model_and_input(name)
    if model.pretrained_cfg.get('fixed_input_size'):
        x = torch.randn(2, *model.pretrained_cfg['input_size'])
    _, eval_nodes = get_graph_node_names(model)
    scripted = _script(create_feature_extractor(model, return_nodes=[eval_nodes[-1]]))
    traced = _script(torch.fx.symbolic_trace(model))
    with torch.no_grad():
        want = model(x)
        out, = scripted(x).values()
        assert torch.allclose(out, want, rtol=1e-5, atol=1e-6)
        assert torch.allclose(traced(x), want, rtol=1e-5, atol=1e-6)
    if name in TN_MODELS:  # TN is in the scripted graph (as the plain formula), not dropped
        assert 'relu_tensor_norm' in traced.graph.str() or 'relu_tensor_norm' in traced.code
