""" Error normalisation (WC/GC paper eq.8-11, Table 2's ERROR rows): identity forward, normalised backward. """
import pytest
import safetensors.torch
import timm
import torch
import torch.nn as nn

import timm_normplugins  # noqa: F401
from timm_normplugins import ErrorNorm, add_error_normalization, error_norm, load_model, read_checkpoint_info, save_model
from timm_normplugins.layers import ERROR_NORM_AREAS
from timm_normplugins.models import error_norm_modules


def _reference(g: torch.Tensor, area: str, standardize: bool, eps: float = 1e-20) -> torch.Tensor:
    """Eq.8-11 written out: loop over the index the statistics are kept per, normalise the rest."""
    g = g.double()
    N, C = g.shape[:2]
    def norm(block):
        out = block - block.mean()
        return out / torch.sqrt(out.pow(2).mean() + eps) if standardize else out
    out = torch.empty_like(g)
    if area == 'global':
        out = norm(g)
    elif area == 'sample':  # EL / ELN: one statistic per sample s, over (c, y, x)
        for s in range(N):
            out[s] = norm(g[s])
    elif area == 'channel':  # EB / EBN: one statistic per channel c, over (s, y, x)
        for c in range(C):
            out[:, c] = norm(g[:, c])
    else:  # instance: per (s, c), over (y, x)
        for s in range(N):
            for c in range(C):
                out[s, c] = norm(g[s, c])
    return out


@pytest.mark.parametrize('standardize', [False, True], ids=['mean', 'std'])
@pytest.mark.parametrize('area', ERROR_NORM_AREAS)
def test_identity_forward_and_backward_formula(area, standardize):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    layer = ErrorNorm(area, standardize)
    y = layer(x)
    assert torch.equal(y, x)
    # the error is small, like real gradients: eps must not bias the standardisation
    g = 1e-6 * torch.randn_like(x) + 3e-7
    y.backward(g)
    torch.testing.assert_close(x.grad, _reference(g, area, standardize))
    if standardize:
        assert x.grad.std().item() == pytest.approx(1.0, rel=0.2)


@pytest.mark.parametrize('area', ['sample', 'channel'])
def test_bf16_errors_get_fp32_statistics_and_channels_last_stays(area):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = (torch.randn(4, 8, 6, 6) + 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    error_norm(x, area).backward(g)
    assert x.grad.dtype == torch.bfloat16 and x.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad.double(), _reference(g, area, False), atol=0.04, rtol=0.02)


def test_no_grad_inputs_without_grad_and_eval_mode_pass_straight_through():
    x = torch.randn(2, 3, 4, 4)
    assert error_norm(x, 'channel') is x
    layer = ErrorNorm('channel').eval()
    xg = x.clone().requires_grad_()
    g = torch.randn_like(x) + 1
    layer(xg).backward(g)
    assert torch.equal(xg.grad, g)
    with torch.no_grad():
        x.requires_grad_()
        assert error_norm(x, 'channel') is x


def test_bad_areas_and_shapes():
    with pytest.raises(ValueError, match='must be one of'):
        ErrorNorm('batch')
    with pytest.raises(ValueError, match='eps must be > 0'):
        ErrorNorm('sample', standardize=True, eps=0)
    with pytest.raises(ValueError, match=r'needs an input of shape \(N, C, \*spatial\)'):
        error_norm(torch.randn(4, 3, requires_grad=True), 'instance')
    x = torch.randn(4, 3, requires_grad=True)  # (N, C) errors of a linear layer: fine for the other areas
    error_norm(x, 'sample').backward(torch.ones(4, 3) + torch.arange(3.0))
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, 0.0, 1.0]).expand(4, 3))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def get_classifier(self):
        return self.fc

    def forward(self, x, pre=None):
        h = self.act(self.conv1(x))
        h = pre(h) if pre is not None else h
        return self.fc(self.conv2(h).mean((2, 3)))


def _grads(model, x, pre=None):
    model.zero_grad()
    x = x.clone().requires_grad_()
    model(x, pre).pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, x.grad


@pytest.mark.parametrize('area', ['sample', 'channel'])
def test_retrofit_normalises_the_error_each_conv_sends_back(area):
    torch.manual_seed(0)
    model, x = _Net(), torch.randn(4, 3, 8, 8)
    plain, plain_x_grad = _grads(model, x)
    explicit, _ = _grads(model, x, pre=ErrorNorm(area))  # the layer placed by hand before conv2
    assert add_error_normalization(model, area) == 2  # conv1, conv2; the classifier fc is left alone
    assert error_norm_modules(model) == ['conv1', 'conv2']
    hooked, x_grad = _grads(model, x)
    for name in plain:
        torch.testing.assert_close(hooked[name], explicit[name])
    # Algorithm 1: conv2's (and fc's) own gradient uses the error it received, only what it sends back changes
    for name in ('conv2.weight', 'conv2.bias', 'fc.weight'):
        torch.testing.assert_close(hooked[name], plain[name])
    assert not torch.allclose(hooked['conv1.weight'], plain['conv1.weight'])
    # the error conv1 sends to the image is normalised too (when the image needs one)
    dims = (1, 2, 3) if area == 'sample' else (0, 2, 3)
    torch.testing.assert_close(x_grad.mean(dims), torch.zeros(x_grad.shape[0 if area == 'sample' else 1]),
                               atol=1e-7, rtol=0)
    # the forward pass is untouched
    with torch.no_grad():
        torch.testing.assert_close(model(x), _Net.forward(model, x))
    # eval mode (validation, adversarial attacks): the model's true gradients
    model.eval()  # (_Net has no BN or dropout: eval computes what training did)
    eval_grads, eval_x_grad = _grads(model, x)
    for name in plain:
        torch.testing.assert_close(eval_grads[name], plain[name])
    torch.testing.assert_close(eval_x_grad, plain_x_grad)


def test_scopes_and_errors():
    model = timm.create_model('wcgc_cnn_a', num_classes=10)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert add_error_normalization(model, 'global') == len(convs) and error_norm_modules(model) == convs
    with pytest.raises(ValueError, match='already has error normalisation'):
        add_error_normalization(model, 'global')
    model = timm.create_model('wcgc_cnn_a', num_classes=10)
    assert add_error_normalization(model, 'sample', scope='conv_linear') == len(convs) + 1  # + fc1
    assert add_error_normalization(timm.create_model('wcgc_cnn_a'), 'sample', scope='all') == len(convs) + 2
    with pytest.raises(ValueError, match="'instance'"):
        add_error_normalization(timm.create_model('wcgc_cnn_a'), 'instance', scope='conv_linear')
    with pytest.raises(ValueError, match='scope must be one of'):
        add_error_normalization(timm.create_model('wcgc_cnn_a'), 'sample', scope='linear')
    with pytest.raises(ValueError, match='must be one of'):
        add_error_normalization(timm.create_model('wcgc_cnn_a'), 'batch')
    with pytest.raises(ValueError, match='no layer in scope'):
        add_error_normalization(nn.Sequential(nn.Linear(3, 3)), 'sample')


def test_checkpoint_round_trip(tmp_path):
    # a conv classifier (the U-Net's head) is left alone like a linear one
    model = timm.create_model('unet_resnet34', encoder='resnet18', num_classes=3, decoder_channels=[32, 16, 16, 16, 16])
    add_error_normalization(model, 'instance', standardize=True)
    assert 'head' not in error_norm_modules(model)
    path = save_model(model.eval(), tmp_path / 'unet.safetensors')
    assert read_checkpoint_info(path)['error_norm']['area'] == 'instance'
    assert set(safetensors.torch.load_file(str(path))) == set(model.state_dict())  # no tensors of its own
    loaded = load_model(path)
    assert error_norm_modules(loaded) == error_norm_modules(model)
    assert loaded.error_norm_retrofit['standardize'] is True
    x = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(loaded.eval()(x), model(x))
