""" The Triton paths on a real GPU (skipped without CUDA; scripts/gpu_check.sh runs them on a device machine). """
import pytest
import torch
import torch.nn as nn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def away_from_kink(shape, dtype):
    x = torch.randn(shape, device='cuda')
    return (x + 0.1 * torch.sign(x)).to(dtype)


@pytest.mark.parametrize('shape', [(4, 37, 9, 7), (8, 64, 32, 32), (2, 2048, 4, 4), (2, 3000, 3, 3), (16, 24)])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('grad', ['exact', 'paper'])
def test_tn_kernels_match_the_pytorch_path(shape, dtype, channels_last, grad):
    from timm_normplugins.layers import relu_tensor_norm, tensor_norm_triton as tnt, tn_backend
    if channels_last and len(shape) != 4:
        pytest.skip('channels_last is 4-D')
    x = away_from_kink(shape, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    out = {}
    for kernel in ('torch', 'triton'):
        a = x.clone().requires_grad_()
        before = sum(tnt.LAUNCHES.values())
        with tn_backend.tn_kernel(kernel):
            y = relu_tensor_norm(a, grad)
        y.backward(g)
        assert (sum(tnt.LAUNCHES.values()) > before) == (kernel == 'triton')
        out[kernel] = (y, a.grad)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out['triton'][0], out['torch'][0], **tol)
    torch.testing.assert_close(out['triton'][1], out['torch'][1], **tol)
    assert out['triton'][0].stride() == x.stride()


def test_kernel_defaults_on_cuda():
    # measured on an H200 (docs/BENCHMARKS.md): TN's kernels lose to the PyTorch ops in eager mode, WC/GC's win
    from timm_normplugins.layers import tn_backend
    from timm_normplugins.layers.tensor_norm_triton import relu_tensor_norm_triton
    from timm_normplugins.optim import centralization as c
    x = torch.zeros(2, 3, 4, 4, device='cuda')
    assert tn_backend.get_tn_kernel() == 'auto' and tn_backend.fused_relu_tn_impl(x) is None
    with tn_backend.tn_kernel('triton'):  # opt-in, checked once against the PyTorch ops
        assert tn_backend.fused_relu_tn_impl(x) is relu_tensor_norm_triton
        assert tn_backend.TN_KERNEL.verdicts[(str(x.device), torch.float32)] is True
        with pytest.raises(RuntimeError, match='float64'):
            tn_backend.fused_relu_tn_impl(x.double())
    assert c.get_wcgc_kernel() == 'auto' and c.WCGC_KERNEL.use_kernel(x.device, torch.bfloat16)
    assert c.WCGC_KERNEL.verdicts[(str(x.device), torch.bfloat16)] is True


@pytest.mark.parametrize('kernel', ['auto', 'triton'])
def test_compiled_model_matches_eager_in_one_graph(kernel):
    # What matters under torch.compile: one graph (no break around TN) and the eager values. Which kernels
    # Inductor emits is its business: on an H200 it fused TN's ops into its own BN+ReLU kernels.
    import timm
    import timm_normplugins  # noqa: F401
    from timm_normplugins.layers import tn_backend
    torch.manual_seed(0)
    model = timm.create_model('cifar_resnet20_tn', num_classes=10).cuda()
    x = torch.randn(8, 3, 32, 32, device='cuda')
    with tn_backend.tn_kernel(kernel):
        ref = model(x)
        ref.square().sum().backward()
        ref_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(x)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True)
        y = compiled(x)
        y.square().sum().backward()
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-3, rtol=1e-3)


def test_wcgc_rows_kernel_matches_the_torch_path():
    from timm_normplugins.optim import centralization as c
    import timm_normplugins.optim.centralize_triton as ct
    shapes = [(64, 3, 3, 3), (128, 64, 3, 3), (512, 512, 3, 3), (10, 512), (3, 20000)]
    for dtype in DTYPES:
        ts = [torch.randn(s, device='cuda', dtype=dtype) + 0.5 for s in shapes]
        ts[1] = ts[1].to(memory_format=torch.channels_last)
        specs = [c.centralization_spec(s) for s in shapes]
        expected = [c.centralize_(t.clone(), s) for t, s in zip(ts, specs)]
        before = sum(ct.LAUNCHES.values())
        c.centralize_foreach_(ts, specs)
        assert sum(ct.LAUNCHES.values()) - before <= len(ct._BLOCKS) + 1
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
        for t, e in zip(ts, expected):
            torch.testing.assert_close(t, e, **tol)


def test_device_loader_on_cuda_equals_cpu():
    import numpy as np

    from timm_normplugins.data import create_transform
    from timm_normplugins.data.device_pipeline import DeviceAugment
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    aug = DeviceAugment.from_transform(create_transform('cifar10', train=True), 3)
    top, left, flip = aug.sample(64, (32, 32), 'cpu', torch.Generator().manual_seed(0))
    idx = torch.arange(64)
    ref = aug.apply(torch.from_numpy(images), idx, top, left, flip)
    aug_cuda = DeviceAugment.from_transform(create_transform('cifar10', train=True), 3).to('cuda')
    out = aug_cuda.apply(torch.from_numpy(images).cuda(), idx.cuda(), top.cuda(), left.cuda(), flip.cuda())
    assert torch.equal(out.cpu(), ref)
