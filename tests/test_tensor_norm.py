import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from timm_normplugins.layers import ReLUTN, TensorNorm, relu_tensor_norm, tensor_norm


def reference_relu_tn(x):
    r = F.relu(x)
    return r - r.mean(dim=1, keepdim=True)


def away_from_kink(*shape, dtype=torch.float64, seed=0):
    # keep |x| > 0.1 so finite differences never straddle the ReLU kink
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, dtype=dtype, generator=g)
    return x + 0.1 * torch.sign(x)


@pytest.mark.parametrize('shape', [(4, 6, 10), (3, 8, 5, 7), (2, 5, 3, 4, 6)])
@pytest.mark.parametrize('module', [TensorNorm(), ReLUTN(), ReLUTN(inplace=True), ReLUTN(grad='paper')])
def test_zero_channel_mean_at_every_position(shape, module):
    x = torch.randn(*shape)
    y = module(x.clone())
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=1), torch.zeros_like(y.mean(dim=1)), atol=1e-6, rtol=0)


def test_forward_matches_formula():
    x = torch.randn(4, 16, 9, 9)
    torch.testing.assert_close(relu_tensor_norm(x), reference_relu_tn(x))
    torch.testing.assert_close(tensor_norm(x), x - x.mean(1, keepdim=True))


def test_channels_last_keeps_layout_and_values():
    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    y = ReLUTN()(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, reference_relu_tn(x.contiguous()))


@pytest.mark.parametrize('fn', [lambda x: relu_tensor_norm(x, 'exact'), lambda x: tensor_norm(x, 'exact')])
def test_gradcheck_exact_mode(fn):
    x = away_from_kink(2, 5, 3, 3).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(lambda t: tensor_norm(t, 'exact'), (x,))


def test_exact_gradient_equals_autograd_of_the_plain_formula():
    x = away_from_kink(3, 7, 4, 4)
    g = torch.randn_like(x)
    a = x.clone().requires_grad_()
    relu_tensor_norm(a).backward(g)
    b = x.clone().requires_grad_()
    reference_relu_tn(b).backward(g)
    torch.testing.assert_close(a.grad, b.grad)
    # written out: (g - mean_c g) masked by the ReLU
    torch.testing.assert_close(a.grad, (g - g.mean(1, keepdim=True)) * (x > 0))


def test_paper_mode_gradient_is_relu_masked_incoming_gradient():
    x = away_from_kink(3, 7, 4, 4, dtype=torch.float32)
    g = torch.randn_like(x)
    a = x.clone().requires_grad_()
    relu_tensor_norm(a, grad='paper').backward(g)
    torch.testing.assert_close(a.grad, g * (x > 0))
    b = x.clone().requires_grad_()
    tensor_norm(b, grad='paper').backward(g)
    torch.testing.assert_close(b.grad, g)


def test_mask_recovered_when_channels_are_all_zero_or_mixed():
    # a position whose channels are all negative (mean 0) and one with a single positive channel
    x = torch.tensor([[-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]]).T.reshape(1, 3, 2).contiguous()
    x.requires_grad_()
    y = ReLUTN()(x.clone())
    g = torch.ones_like(y)
    y.backward(g)
    expected = (torch.ones_like(g) - 1.0) * (x > 0)  # g - mean(g) is 0 everywhere
    torch.testing.assert_close(x.grad, expected)
    x.grad = None
    ReLUTN(grad='paper')(x.clone()).backward(g)
    torch.testing.assert_close(x.grad, (x > 0).float())


def test_inplace_overwrites_input_and_backward_flows():
    conv = nn.Conv2d(3, 6, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    h = conv(x)
    ref = reference_relu_tn(h.detach())
    y = ReLUTN(inplace=True)(h)
    assert y.data_ptr() == h.data_ptr()
    torch.testing.assert_close(y, ref)
    y.pow(2).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_inplace_on_leaf_requiring_grad_falls_back_out_of_place():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = ReLUTN(inplace=True)(x)
    assert y.data_ptr() != x.data_ptr()
    y.sum().backward()


def test_saved_for_backward_is_output_plus_per_position_mean():
    x = torch.randn(4, 16, 8, 8, requires_grad=True)
    h = x * 1.0
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ReLUTN(inplace=True)(h)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    assert y.untyped_storage().data_ptr() in storages
    assert sum(storages.values()) == y.numel() * 4 + y.numel() // 16 * 4


def test_autocast_bf16():
    x = torch.randn(2, 8, 4, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        h = nn.Conv2d(8, 8, 1)(x)
        y = ReLUTN()(h)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), reference_relu_tn(h.float()), atol=2e-2, rtol=2e-2)
    y.float().sum().backward()


def test_torchscript_and_export_fall_back_to_the_formula():
    for module in (ReLUTN(inplace=True), TensorNorm()):
        scripted = torch.jit.script(module)
        x = torch.randn(2, 4, 5, 5)
        torch.testing.assert_close(scripted(x.clone()), module(x.clone()))

    model = nn.Sequential(nn.Conv2d(3, 4, 3), ReLUTN(inplace=True), nn.Conv2d(4, 2, 1), TensorNorm())
    x = torch.randn(2, 3, 9, 9)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x))


def test_torch_compile_matches_eager_forward_and_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), ReLUTN(inplace=True), nn.Conv2d(8, 4, 3))
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 10, 10)
    y_ref = model(x)
    y_ref.square().sum().backward()
    grads_ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    y = compiled(x)
    y.square().sum().backward()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), grads_ref):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match='gradient mode'):
        ReLUTN(grad='approx')
    with pytest.raises(ValueError, match='gradient mode'):
        relu_tensor_norm(torch.randn(2, 3), grad='other')
    with pytest.raises(ValueError, match=r'\(N, C, \*spatial\)'):
        tensor_norm(torch.randn(5))
