""" torch.fx on every TN model: symbolic_trace and timm's FX feature extraction, equal to eager.

TN's entry points are leaf functions (``torch.fx.wrap`` and timm's ``register_notrace_function``), so a
traced graph holds one ``relu_tensor_norm`` node per activation and runs the same custom autograd
Function as eager mode.
"""
import pytest
import timm
import torch
import torch.fx
from timm.models import create_feature_extractor, get_graph_node_names

import timm_normplugins  # noqa: F401  (registers the models)

TN_MODELS = sorted(n for n in timm.list_models() if n.endswith('_tn') or '_tn_' in n)


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
