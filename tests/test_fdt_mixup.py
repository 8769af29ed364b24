""" FDTMixup (batch level) and FDTDataset (dataset level) against Alg. 2 / eq. 2-4. """
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from timm_normplugins.data import FDTDataset, FDTMixup, fdt_weights


def alg2_factors(n):
    """Alg. 2's first loop, literally: F_i = 1/i, then divided by their sum."""
    F, total = [], 0.0
    for i in range(1, n + 1):
        F.append(1.0 / i)
        total += F[-1]
    return [f / total for f in F]


def alg2_reference(images, labels, num_classes, choices):
    """Alg. 2's second loop for every sample: D = sum_i I_j F_i, GT = sum_i L_j F_i, given the chosen j's."""
    D = torch.zeros_like(images)
    GT = torch.zeros(len(images), num_classes, dtype=images.dtype)
    for b, js in enumerate(choices):
        F = alg2_factors(len(js))
        used = set()
        for i, j in enumerate(js):
            assert int(labels[j]) not in used, 'C(j) must not be in C(GT)'
            used.add(int(labels[j]))
            L = torch.zeros(num_classes, dtype=images.dtype)
            L[labels[j]] = 1
            GT[b] += L * F[i]
            D[b] += images[j] * F[i]
    return D, GT


def choices_from_plan(W):
    """Per row: the chosen images ordered by weight (harmonic weights are strictly decreasing)."""
    out = []
    for row in W:
        nz = torch.nonzero(row).flatten()
        out.append(nz[row[nz].argsort(descending=True)].tolist())
    return out


def batch(B=64, C=10, seed=0, shape=(3, 8, 8), dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, *shape, generator=g, dtype=dtype), torch.randint(0, C, (B,), generator=g)


@pytest.mark.parametrize('C,B', [(10, 64), (100, 100), (3, 7)])
def test_mixed_images_match_alg2_reference_loop(C, B):
    x, y = batch(B, C)
    mixer = FDTMixup(num_classes=C, seed=3)
    W = mixer.sample_plan(y, torch.float64)
    xm, target = mixer.apply_plan(x, y, W)
    choices = choices_from_plan(W)
    for b, js in enumerate(choices):
        assert js[0] == b, 'sample b leads its own mixture (weight F_1)'
        torch.testing.assert_close(W[b, js], torch.tensor(alg2_factors(len(js)), dtype=W.dtype))
    D, GT = alg2_reference(x, y, C, choices)
    torch.testing.assert_close(xm, D, rtol=0, atol=1e-12)
    torch.testing.assert_close(target, GT, rtol=0, atol=1e-12)
    # and __call__ with the same generator state gives the same result
    xm2, t2 = FDTMixup(num_classes=C, seed=3)(x, y)
    torch.testing.assert_close(xm2, xm, rtol=0, atol=0)
    torch.testing.assert_close(t2, target, rtol=0, atol=0)


def test_targets_rows_distinct_classes_and_harmonic_weights():
    C = 10
    x, y = batch(256, C, dtype=torch.float32)
    _, target = FDTMixup(num_classes=C, seed=0)(x, y)
    assert target.shape == (256, C) and target.dtype == torch.float32
    torch.testing.assert_close(target.sum(1), torch.ones(256))
    for row, yb in zip(target, y):
        nz = row[row > 0]
        n = nz.numel()
        # one nonzero per class used (distinct classes), weights = normalised harmonic series of n
        torch.testing.assert_close(nz.sort(descending=True).values, fdt_weights(n).float())
        assert row[yb] == nz.max(), 'the leading image is the sample itself'


def test_n_distribution_covers_1_to_C_uniformly():
    C, B = 10, 500
    y = torch.arange(B) % C                                   # every class present
    W = FDTMixup(num_classes=C, seed=1).sample_plan(y)
    n = (W > 0).sum(1)
    counts = torch.bincount(n, minlength=C + 1)[1:]
    assert (counts > 0).all(), f'n must reach every value 1..C, got {counts.tolist()}'
    expected = B / C
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    assert chi2 < 27.9, f'n not uniform on 1..C (chi2={chi2:.1f}, p<0.001 at 9 dof): {counts.tolist()}'


def test_n_capped_by_classes_in_batch_and_max_images():
    y = torch.tensor([0, 1, 2] * 40)                          # only 3 of 10 classes present
    n = (FDTMixup(num_classes=10, seed=2).sample_plan(y) > 0).sum(1)
    assert n.max() == 3
    frac = (n == 3).float().mean().item()                     # P(n >= 3) = 8/10 moves onto the cap
    assert abs(frac - 0.8) < 0.12
    y = torch.arange(200) % 10
    n = (FDTMixup(num_classes=10, max_images=4, seed=2).sample_plan(y) > 0).sum(1)
    assert n.max() == 4 and n.min() == 1
    assert torch.bincount(n)[1:].min() > 25                   # uniform on 1..4


def test_min_images_raises_the_lower_end_of_n():
    C, B = 10, 400
    y = torch.arange(B) % C
    n = (FDTMixup(num_classes=C, min_images=C, seed=3).sample_plan(y) > 0).sum(1)
    assert (n == C).all(), 'min_images=C: every sample superimposes all classes (literal max(C, RND))'
    n = (FDTMixup(num_classes=C, min_images=4, max_images=6, seed=3).sample_plan(y) > 0).sum(1)
    counts = torch.bincount(n, minlength=C + 1)
    assert counts[:4].sum() == 0 and counts[7:].sum() == 0 and counts[4:7].min() > 100   # uniform on 4..6
    # the default draws the same n as before the option existed (resumed runs stay bit-identical)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(torch.randint(1, C + 1, (B,), generator=g1),
                       (FDTMixup(num_classes=C, generator=g2).sample_plan(y) > 0).sum(1))
    n = (FDTMixup(num_classes=C, min_images=C, label='hard', seed=3).sample_plan(torch.tensor([0, 1, 2] * 5)) > 0).sum(1)
    assert (n == 3).all(), 'still capped by the classes present in the batch'


def test_partner_draw_follows_alg2():
    """Partner 1 of sample 0: a uniformly random image among those of unused classes (Alg. 2)."""
    y = torch.tensor([0, 1, 1, 1, 2])
    mixer = FDTMixup(num_classes=3, seed=4)
    hits = torch.zeros(5)
    trials = 0
    for _ in range(1500):
        W = mixer.sample_plan(y)
        js = choices_from_plan(W)[0]
        if len(js) >= 2:
            hits[js[1]] += 1
            trials += 1
    p = hits / trials
    assert p[0] == 0
    torch.testing.assert_close(p[1:], torch.full((4,), 0.25), atol=0.05, rtol=0)


def test_ov_hard_label_same_overlay():
    x, y = batch(32, 10)
    xs, ts = FDTMixup(num_classes=10, seed=5)(x, y)
    xh, th = FDTMixup(num_classes=10, seed=5, label='hard')(x, y)
    torch.testing.assert_close(xh, xs, rtol=0, atol=0)
    torch.testing.assert_close(th, torch.nn.functional.one_hot(y, 10).to(th.dtype))


def test_uniform_and_dirichlet_weights():
    x, y = batch(128, 10)
    W = FDTMixup(num_classes=10, weights='uniform', seed=0).sample_plan(y, torch.float64)
    for row in W:
        nz = row[row > 0]
        torch.testing.assert_close(nz, torch.full_like(nz, 1 / nz.numel()))
    mixer = FDTMixup(num_classes=10, weights='dirichlet', seed=0)
    W = mixer.sample_plan(y, torch.float64)
    torch.testing.assert_close(W.sum(1), torch.ones(128, dtype=torch.float64))
    assert (W.diagonal() == W.max(1).values).all(), 'the leading image keeps the largest weight'
    assert len({round(v, 6) for v in W[W > 0].tolist()}) > 100, 'random factors, not a fixed series'
    _, t = mixer(x, y)
    torch.testing.assert_close(t.sum(1), torch.ones(128, dtype=t.dtype))


def test_label_smoothing_matches_timm_convention():
    x, y = batch(16, 10)
    _, t0 = FDTMixup(num_classes=10, seed=7)(x, y)
    _, ts = FDTMixup(num_classes=10, seed=7, label_smoothing=0.1)(x, y)
    torch.testing.assert_close(ts, t0 * 0.9 + 0.01)
    torch.testing.assert_close(ts.sum(1), torch.ones(16, dtype=ts.dtype))


def test_prob_mixes_a_fraction():
    y = torch.arange(1000) % 10
    assert ((FDTMixup(num_classes=10, prob=0.0, seed=0).sample_plan(y) > 0).sum(1) == 1).all()
    n = (FDTMixup(num_classes=10, prob=0.5, seed=0).sample_plan(y) > 0).sum(1)
    frac_single = (n == 1).float().mean().item()              # 0.5 unmixed + 0.5 * P(n=1) = 0.55
    assert abs(frac_single - 0.55) < 0.06


def test_mixup_enabled_switch_and_single_class_batch():
    x, y = batch(9, 10, dtype=torch.float32)
    mixer = FDTMixup(num_classes=10, label_smoothing=0.1)
    mixer.mixup_enabled = False
    xo, t = mixer(x, y)
    assert xo is x
    torch.testing.assert_close(t, torch.nn.functional.one_hot(y, 10).float() * 0.9 + 0.01)
    mixer.mixup_enabled = True
    same = torch.full((9,), 4)
    xo, t = mixer(x, same)
    assert torch.equal(xo, x), 'a single-class batch comes back unmixed, bit for bit'
    torch.testing.assert_close(t, torch.nn.functional.one_hot(same, 10).float() * 0.9 + 0.01)


@pytest.mark.parametrize('B', [0, 1, 2, 7])
def test_any_batch_size(B):
    x, y = batch(B, 5, dtype=torch.float32)
    xm, t = FDTMixup(num_classes=np.int64(5), seed=0)(x, y)
    assert xm.shape == x.shape and t.shape == (B, 5)
    torch.testing.assert_close(t.sum(1), torch.ones(B))
    if B == 1:
        assert torch.equal(xm, x)


def test_channels_last_kept_and_equal_to_contiguous():
    x, y = batch(16, 10, shape=(3, 8, 8), dtype=torch.float32)
    xc = x.contiguous(memory_format=torch.channels_last)
    a, ta = FDTMixup(num_classes=10, seed=9)(x, y)
    b, tb = FDTMixup(num_classes=10, seed=9)(xc, y)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(tb, ta)
    # a non-dense view also works
    c, _ = FDTMixup(num_classes=10, seed=9)(x[:, :, ::2, ::2], y)
    torch.testing.assert_close(c, a[:, :, ::2, ::2])


def test_cpu_sparse_and_dense_products_agree():
    from timm_normplugins.data.fdt_mixup import _batch_matmul, _use_sparse
    x, y = batch(64, 10, dtype=torch.float32)
    W = FDTMixup(num_classes=10, seed=0).sample_plan(y)
    # mean n 5.5 (uniform 1..10) of 64: sparse; every class (n = 10 of 64, 16 %): dense
    assert _use_sparse(x, 5.5) and not _use_sparse(x, 10) and not _use_sparse(x.to(torch.bfloat16), 5.5)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(_batch_matmul(W, xx, sparse=True), _batch_matmul(W, xx, sparse=False))


def test_reproducible_from_seed_generator_and_global_rng():
    x, y = batch(32, 10, dtype=torch.float32)
    a = FDTMixup(num_classes=10, seed=11)(x, y)[0]
    b = FDTMixup(num_classes=10, seed=11)(x, y)[0]
    c = FDTMixup(num_classes=10, seed=12)(x, y)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(FDTMixup(num_classes=10, generator=g1)(x, y)[0],
                       FDTMixup(num_classes=10, generator=g2)(x, y)[0])
    torch.manual_seed(0)
    d = FDTMixup(num_classes=10)(x, y)[0]
    torch.manual_seed(0)
    assert torch.equal(FDTMixup(num_classes=10)(x, y)[0], d)


@pytest.mark.parametrize('user_generator', [False, True])
def test_state_dict_resumes_the_stream(user_generator):
    x, y = batch(32, 10, dtype=torch.float32)

    def make():
        if user_generator:
            return FDTMixup(num_classes=10, generator=torch.Generator().manual_seed(3))
        return FDTMixup(num_classes=10, seed=3)

    a = make()
    a(x, y)
    state = a.state_dict()
    expected = a(x, y)[0]
    b = make()
    b.load_state_dict(state)
    assert torch.equal(b(x, y)[0], expected)


def test_no_host_device_sync_runs_on_meta_device():
    """On the meta device any read of a value (.item(), boolean masks, nonzero) raises."""
    x = torch.empty(16, 3, 8, 8, device='meta')
    y = torch.empty(16, dtype=torch.long, device='meta')
    for kw in ({}, dict(prob=0.5), dict(weights='dirichlet'), dict(weights='uniform', label='hard',
                                                                     label_smoothing=0.1, max_images=3)):
        xm, t = FDTMixup(num_classes=10, **kw)(x, y)
        assert xm.shape == x.shape and t.shape == (16, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_properties():
    x, y = batch(64, 10, dtype=torch.float32)
    mixer = FDTMixup(num_classes=10, seed=0)
    xm, t = mixer(x.cuda().contiguous(memory_format=torch.channels_last), y.cuda())
    assert xm.is_cuda and xm.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(t.sum(1), torch.ones(64, device='cuda'))
    W = mixer.sample_plan(y.cuda()).cpu()
    D, GT = alg2_reference(x.double(), y, 10, choices_from_plan(W.double()))
    xm, t = mixer.apply_plan(x.cuda(), y.cuda(), W.cuda())
    torch.testing.assert_close(xm.cpu().double(), D, atol=1e-3, rtol=0)  # TF32 matmul if enabled


def test_bad_inputs_raise():
    x, y = batch(8, 10, dtype=torch.float32)
    mixer = FDTMixup(num_classes=10)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 9\]'):
        mixer(x, torch.full((8,), 10))
    with pytest.raises(ValueError, match='labels must lie'):
        mixer(x, torch.full((8,), -1))
    with pytest.raises(ValueError, match='shape \\(B,\\)'):
        mixer(x, torch.nn.functional.one_hot(y, 10).float())
    with pytest.raises(ValueError, match='8 images but 7 labels'):
        mixer(x, y[:7])
    with pytest.raises(TypeError, match='floating-point'):
        mixer((x * 255).to(torch.uint8), y)
    with pytest.raises(TypeError, match='integer class indices'):
        mixer(x, y.float())
    for kw, msg in [(dict(max_images=0), 'max_images'), (dict(num_classes=0), 'num_classes'),
                    (dict(min_images=0), 'min_images'), (dict(min_images=5, max_images=4), 'min_images=5 exceeds'),
                    (dict(min_images=11), 'min_images=11 exceeds'), (dict(min_images=2.0), 'min_images'),
                    (dict(prob=1.5), 'prob'), (dict(weights='geometric'), 'weights'),
                    (dict(label='multi'), 'label'), (dict(label_smoothing=1.0), 'label_smoothing'),
                    (dict(seed=1, generator=torch.Generator()), 'either seed or generator')]:
        with pytest.raises(ValueError, match=msg):
            FDTMixup(**{'num_classes': 10, **kw})
    with pytest.raises(ValueError, match='n >= 1'):
        fdt_weights(0)


# ----------------------------------------------------------------------------------------------------
# FDTDataset

class ToyDataset(Dataset):
    """Item i: a 2x3 image whose pixels encode i, label i % C; optional .targets."""

    def __init__(self, n=60, C=6, with_targets=True):
        self.labels = [i % C for i in range(n)]
        self.n, self.C = n, C
        if with_targets:
            self.targets = list(self.labels)
        self.classes = [f'c{c}' for c in range(C)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.arange(6, dtype=torch.float32).view(2, 3) + 100.0 * i, self.labels[i]


def test_fdt_dataset_items_follow_alg2():
    ds = ToyDataset(60, 6)
    fdt = FDTDataset(ds, seed=1)
    assert fdt.num_classes == 6
    ns = []
    for i in range(len(fdt)):
        picked, w = fdt.plan(i)
        ns.append(len(picked))
        assert picked[0] == i
        classes = [ds.labels[j] for j in picked]
        assert len(set(classes)) == len(classes), 'pairwise distinct classes'
        np.testing.assert_allclose(w, alg2_factors(len(picked)))
        x, target = fdt[i]
        D, GT = alg2_reference(torch.stack([ds[j][0] for j in range(len(ds))]).double(),
                               torch.tensor(ds.labels), 6, [picked.tolist()])
        torch.testing.assert_close(x.double(), D[0], rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(target.double(), GT[0], rtol=0, atol=1e-6)
    assert set(ns) == set(range(1, 7)), 'n reaches C: partners come from the whole dataset'


def test_fdt_dataset_n_reaches_C_for_100_classes():
    ds = ToyDataset(400, 100)
    fdt = FDTDataset(ds, seed=0)
    ns = [len(fdt.plan(i)[0]) for i in range(400)]
    assert max(ns) >= 95 and min(ns) == 1
    assert abs(np.mean(ns) - 50.5) < 5


def test_fdt_dataset_deterministic_per_index_and_epoch():
    a, b = FDTDataset(ToyDataset(), seed=3), FDTDataset(ToyDataset(with_targets=False), seed=3)
    for i in (0, 7, 59):
        for e in (0, 1):
            pa, wa = a.plan(i, e)
            pb, wb = b.plan(i, e)
            np.testing.assert_array_equal(pa, pb)
            np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(a.plan(i, 0)[0], a.plan(i, 1)[0]) for i in range(20)), 'epochs differ'
    assert any(not np.array_equal(a.plan(i)[0], FDTDataset(ToyDataset(), seed=4).plan(i)[0])
               for i in range(20)), 'seeds differ'
    a.set_epoch(1)
    x1, t1 = a[5]
    a.set_epoch(0)
    a[5]
    a.set_epoch(1)
    x2, t2 = a[5]
    assert torch.equal(x1, x2) and torch.equal(t1, t2), 'order of access does not matter'


def test_fdt_dataset_with_persistent_dataloader_workers():
    fdt = FDTDataset(ToyDataset(40, 5), seed=2, label_smoothing=0.1)
    expected = {}
    for e in (0, 1):
        fdt.set_epoch(e)
        expected[e] = [fdt[i] for i in range(len(fdt))]
    loader = DataLoader(fdt, batch_size=8, num_workers=2, persistent_workers=True)
    for e in (0, 1):
        fdt.set_epoch(e)                    # reaches the persistent workers through shared memory
        xs, ts = zip(*loader)
        torch.testing.assert_close(torch.cat(xs), torch.stack([x for x, _ in expected[e]]), rtol=0, atol=0)
        torch.testing.assert_close(torch.cat(ts), torch.stack([t for _, t in expected[e]]), rtol=0, atol=0)


def test_fdt_dataset_options_subset_and_errors():
    ds = ToyDataset(60, 6)
    hard = FDTDataset(ds, seed=1, label='hard')
    soft = FDTDataset(ds, seed=1)
    for i in range(10):
        torch.testing.assert_close(hard[i][0], soft[i][0])
        assert hard[i][1].tolist() == torch.nn.functional.one_hot(torch.tensor(ds.labels[i]), 6).float().tolist()
    capped = FDTDataset(ds, max_images=2)
    assert max(len(capped.plan(i)[0]) for i in range(60)) == 2
    assert all(len(FDTDataset(ds, min_images=6, seed=2).plan(i)[0]) == 6 for i in range(60))
    assert {len(FDTDataset(ds, min_images=2, max_images=3).plan(i)[0]) for i in range(60)} == {2, 3}
    assert all(len(FDTDataset(ds, min_images=6, prob=0.0).plan(i)[0]) == 1 for i in range(20))
    assert all(len(FDTDataset(ds, prob=0.0).plan(i)[0]) == 1 for i in range(20))
    dirichlet = FDTDataset(ds, weights='dirichlet', seed=0)
    for i in range(10):
        _, w = dirichlet.plan(i)
        assert math.isclose(w.sum(), 1.0) and w[0] == w.max()
    sub = Subset(ds, list(range(0, 60, 2)))   # classes 0, 2, 4 only
    fs = FDTDataset(sub, num_classes=6)
    for i in range(len(sub)):
        picked, _ = fs.plan(i)
        assert all(ds.labels[sub.indices[j]] in (0, 2, 4) for j in picked) and len(picked) <= 3
    with pytest.raises(ValueError, match='max_images'):
        FDTDataset(ds, max_images=0)
    with pytest.raises(ValueError, match='min_images=7 exceeds'):
        FDTDataset(ds, min_images=7)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 4\]'):
        FDTDataset(ds, num_classes=5)
    with pytest.raises(ValueError, match='one label per item'):
        FDTDataset(ds, labels=[0, 1])
    with pytest.raises(IndexError):
        soft.plan(60)


def test_mixer_and_dataset_share_one_options_object():
    from timm_normplugins.data import FDTOptions
    opts = dict(num_classes=10, prob=0.5, weights='uniform', label='hard', label_smoothing=0.1, max_images=4,
                min_images=2)
    items = [(torch.zeros(3, 4, 4), i % 10) for i in range(20)]
    mixer, dataset = FDTMixup(**opts), FDTDataset(items, labels=[y for _, y in items], **opts)
    assert mixer.options == dataset.options == FDTOptions(**opts)
    assert (mixer.mix_prob, mixer.n_max, dataset.label_smoothing, dataset.min_images) == (0.5, 4, 0.1, 2)
    with pytest.raises(AttributeError):
        mixer.num_classes = 3  # one source of truth: change options by building a new mixer
    for bad in (dict(min_images=5), dict(weights='zipf'), dict(prob=1.5)):
        with pytest.raises(ValueError):
            FDTOptions(**{**opts, **bad})
