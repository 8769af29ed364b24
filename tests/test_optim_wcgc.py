""" Weight and Gradient Centralization (WC/GC paper, eq.2/4, Alg.2/3) in timm's optimizer factory.

The reference below is written straight from the paper: explicit Python loops over filters /
channels / kernels for the means, and the SGD / Adam / AdamW updates of Alg.2 / Alg.3 spelled out
per parameter. The implementation (step hooks, spec-driven reductions, multi-tensor subtraction,
WC skipped where SGD provably keeps the means) must agree with it in float64 to 1e-12: float64
rounding differences over a few steps stay near 1e-15, while any real deviation (a missed mean,
a wrong reference area, a wrong update) moves weights by ~lr * |grad| >= 1e-4.
"""
import copy
import math
import warnings

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import create_optimizer_v2, get_optimizer_class, list_optimizers

import timm_normplugins  # noqa: F401  (registers the names)
from timm_normplugins.optim import (
    AREAS, SGD_WC_INTERVAL, add_centralization, centralization_spec, centralize_, centralize_foreach_,
    register_wcgc_optimizers,
)
from timm_normplugins.optim import timm_registry

ATOL64 = 1e-12


# ------------------------------------------------------------------------------------------------
# a small model with every layer kind the method must tell apart
# ------------------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)            # grouped, with bias
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)  # depthwise 3x3
        self.dw1 = nn.Conv2d(8, 8, 1, groups=8, bias=False)            # depthwise 1x1: one element per filter
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)      # grouped transposed conv
        self.pw = nn.Conv2d(6, 12, 1)
        self.fc = nn.Linear(12, 16)                                     # penultimate FC ("fully")
        self.head = nn.Linear(16, num_classes)                          # classifier

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.gconv(x))
        x = self.dw1(self.dw(x))
        x = F.relu(self.pw(self.up(x)))
        x = F.relu(self.fc(x.mean((2, 3))))
        return self.head(x)

    def get_classifier(self):
        return self.head


# (module name, groups, transposed) of the weights in the default scope, by hand
DEFAULT_SCOPE = [('conv1', 1, False), ('gconv', 2, False), ('dw', 8, False), ('dw1', 8, False),
                 ('up', 2, True), ('pw', 1, False), ('fc', 1, False)]


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = TinyNet().to(dtype)
    with torch.no_grad():  # BN affine away from 1/0 so those 1-D params are not trivially special
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
    return model


def make_batches(n, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, 5, (4,), generator=g))
            for _ in range(n)]


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


# ------------------------------------------------------------------------------------------------
# reference: eq.2 / eq.4 with explicit loops, Alg.2 / Alg.3 per parameter
# ------------------------------------------------------------------------------------------------
def ref_centralize(t, area, groups=1, transposed=False):
    """Subtract the area mean block by block (a copy); blocks of one element are left alone."""
    t = t.clone()
    blocks = []
    d0, d1 = t.shape[:2]
    if area == 'global':
        blocks = [(slice(None),)]
    elif area == 'instance':
        blocks = [(a, b) for a in range(d0) for b in range(d1)] if t.ndim > 2 else []
    else:
        per_row = (area == 'tensor') != transposed  # rows of dim 0 are the reference blocks
        if per_row:
            blocks = [(a,) for a in range(d0)]
        else:  # one block per index of dim 1, within each group of dim 0
            rows = d0 // groups
            blocks = [(slice(gi * rows, (gi + 1) * rows), b) for gi in range(groups) for b in range(d1)]
    for idx in blocks:
        if t[idx].numel() > 1:
            t[idx] = t[idx] - t[idx].mean()
    return t


class RefOptimizer:
    """Alg.2 (SGD, torch's momentum semantics + options) / Alg.3 (Adam, AdamW), one loop per parameter."""

    def __init__(self, model, kind, lr, wd, gc, wc, area='tensor', scope=DEFAULT_SCOPE, momentum=0.9,
                 dampening=0.0, nesterov=False, zero_momentum=False, betas=(0.9, 0.999), eps=1e-8):
        self.kind, self.lr, self.gc, self.wc, self.area = kind, lr, gc, wc, area
        self.momentum, self.dampening, self.nesterov, self.betas, self.eps = momentum, dampening, nesterov, betas, eps
        self.zero_momentum = zero_momentum
        modules = dict(model.named_modules())
        self.central = {id(modules[n].weight): (g, tr) for n, g, tr in scope}
        # timm's param groups: no weight decay on 1-D params and biases
        self.params = [(p, 0.0 if (p.ndim <= 1 or n.endswith('.bias')) else wd) for n, p in model.named_parameters()]
        self.state = {}
        self.t = 0
        if wc:
            self._wc()

    def zero_grad(self):
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def _wc(self):
        for p, _ in self.params:
            if id(p) in self.central:
                p.copy_(ref_centralize(p, self.area, *self.central[id(p)]))

    @torch.no_grad()
    def step(self):
        self.t += 1
        for p, wd in self.params:
            if p.grad is None:
                continue
            g = p.grad.clone()
            if self.gc and id(p) in self.central:
                g = ref_centralize(g, self.area, *self.central[id(p)])          # Alg.2/3 line 1
            st = self.state.setdefault(id(p), {})
            if self.kind == 'sgd':
                g = g + wd * p
                if self.momentum:
                    if 'M' not in st:
                        st['M'] = torch.zeros_like(p) if self.zero_momentum else None
                    if st['M'] is None:
                        st['M'] = g.clone()                                       # torch: M_1 = g_1
                    else:
                        st['M'] = self.momentum * st['M'] + (1 - self.dampening) * g
                    g = g + self.momentum * st['M'] if self.nesterov else st['M']
                p -= self.lr * g
            else:
                b1, b2 = self.betas
                if self.kind == 'adamw':
                    p *= 1 - self.lr * wd
                else:
                    g = g + wd * p
                st.setdefault('M', torch.zeros_like(p))
                st.setdefault('V', torch.zeros_like(p))
                st['M'] = b1 * st['M'] + (1 - b1) * g
                st['V'] = b2 * st['V'] + (1 - b2) * g * g
                m_hat = st['M'] / (1 - b1 ** self.t)
                v_hat = st['V'] / (1 - b2 ** self.t)  # Alg.3 prints psi2 * V here: a typo, Adam has none
                p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)
        if self.wc:
            self._wc()                                                            # Alg.2/3 last line


def train(model, optimizer, batches, after_step=None):
    for batch in batches:
        optimizer.zero_grad()
        loss_fn(model, batch).backward()
        optimizer.step()
        if after_step:
            after_step()


def assert_models_close(a, b, atol=ATOL64):
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=atol, msg=lambda m: f'{n}: {m}')


def assert_models_equal(a, b):
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), n


# name -> (reference kind, reference kwargs, create_optimizer_v2 kwargs)
OPTS = {
    'sgd': ('sgd', dict(nesterov=True), dict(lr=0.1)),
    'momentum': ('sgd', dict(nesterov=False), dict(lr=0.1)),
    'adam': ('adam', dict(), dict(lr=1e-2)),
    'adamw': ('adamw', dict(), dict(lr=1e-2)),
}


def run_pair(opt_name, suffix='wcgc', area='tensor', steps=4, wd=5e-4, ref_extra=None, opt_extra=None):
    kind, ref_kw, opt_kw = OPTS[opt_name]
    gc, wc = timm_registry.WCGC_SUFFIXES[suffix]
    model = make_model(torch.float64)
    ref_model = copy.deepcopy(model)
    opt = create_optimizer_v2(model, f'{opt_name}_{suffix}', weight_decay=wd, wcgc_area=area,
                              **opt_kw, **(opt_extra or {}))
    ref = RefOptimizer(ref_model, kind, opt_kw['lr'], wd, gc, wc, area=area, **ref_kw, **(ref_extra or {}))
    batches = make_batches(steps, torch.float64)
    train(model, opt, batches)
    train(ref_model, ref, batches)
    return model, ref_model, opt


# ------------------------------------------------------------------------------------------------
# the math
# ------------------------------------------------------------------------------------------------
LAYOUTS = [  # (shape, groups, transposed)
    ((6, 4, 3, 3), 1, False), ((6, 2, 3, 3), 3, False), ((6, 1, 3, 3), 6, False), ((6, 1, 1, 1), 6, False),
    ((7, 5), 1, False), ((4, 3, 2, 2), 2, True), ((4, 3, 2, 2), 1, True), ((5, 4, 3), 1, False),
    ((4, 2, 2, 3, 3), 2, False),
]


@pytest.mark.parametrize('area', AREAS)
@pytest.mark.parametrize('shape,groups,transposed', LAYOUTS)
def test_centralize_matches_explicit_blocks(shape, groups, transposed, area):
    t = torch.randn(shape, dtype=torch.float64)
    spec = centralization_spec(shape, area, groups=groups, transposed=transposed)
    expected = ref_centralize(t, area, groups, transposed)
    if spec is None:  # every block holds one element: the tensor must be left alone, not zeroed
        assert torch.equal(expected, t)
        return
    out = centralize_(t.clone(), spec)
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL64)
    # foreach form and channels_last layout give the same result, in place
    if len(shape) == 4:
        cl = t.clone().to(memory_format=torch.channels_last)
        centralize_foreach_([cl], [spec])
        assert cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl, expected, rtol=0, atol=ATOL64)


def test_spec_single_element_groups_and_bad_input():
    assert centralization_spec((8, 1, 1, 1), 'tensor', groups=8) is None   # depthwise 1x1
    assert centralization_spec((8, 1, 1, 1), 'channel', groups=8) is None
    assert centralization_spec((8, 4), 'instance') is None                 # linear has no kernel
    assert centralization_spec((8, 4), 'channel').group_size == 8
    with pytest.raises(ValueError, match='area'):
        centralization_spec((8, 4), 'filter')
    with pytest.raises(ValueError, match='groups'):
        centralization_spec((8, 4, 3, 3), 'tensor', groups=3)
    with pytest.raises(ValueError, match='>= 2 dims'):
        centralization_spec((8,), 'tensor')


# ------------------------------------------------------------------------------------------------
# against the reference
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('area', AREAS)
@pytest.mark.parametrize('opt_name', list(OPTS))
def test_wcgc_matches_reference(opt_name, area):
    model, ref_model, _ = run_pair(opt_name, 'wcgc', area)
    assert_models_close(model, ref_model)


@pytest.mark.parametrize('suffix', ['gc', 'wc'])
@pytest.mark.parametrize('opt_name', ['sgd', 'adamw'])
def test_ablations_match_reference(opt_name, suffix):
    model, ref_model, _ = run_pair(opt_name, suffix)
    assert_models_close(model, ref_model)


def test_paper_momentum_matches_alg2():
    # Alg.2: M = psi M + (1 - psi) dW from M_0 = 0
    model, ref_model, opt = run_pair(
        'momentum', ref_extra=dict(dampening=0.9, zero_momentum=True),
        opt_extra=dict(dampening=0.9, wcgc_momentum_init='zero'))
    assert_models_close(model, ref_model)
    # and torch's default start (M_1 = g_1) is really different
    model2, _, _ = run_pair('momentum', opt_extra=dict(dampening=0.9))
    assert (model2.conv1.weight - model.conv1.weight).abs().max() > 1e-6  # vs the 1e-12 agreement above


@pytest.mark.parametrize('scope', ['conv', 'all'])
def test_scopes_match_reference(scope):
    ref_scope = [s for s in DEFAULT_SCOPE if s[0] != 'fc'] if scope == 'conv' else DEFAULT_SCOPE + [('head', 1, False)]
    model, ref_model, _ = run_pair('adamw', ref_extra=dict(scope=ref_scope), opt_extra=dict(wcgc_scope=scope))
    assert_models_close(model, ref_model)


def test_sgd_wc_interval_still_matches_reference_over_many_steps():
    # WC is skipped between SGD_WC_INTERVAL steps: GC keeps the means, so only rounding differs
    model, ref_model, opt = run_pair('sgd', steps=12)
    assert opt.wcgc.wc_every == SGD_WC_INTERVAL
    assert_models_close(model, ref_model)


def test_foreach_and_single_tensor_paths_agree():
    m1, m2 = make_model(torch.float64), make_model(torch.float64)
    o1 = add_centralization(torch.optim.AdamW(m1.parameters(), lr=1e-2), m1, foreach=True)
    o2 = add_centralization(torch.optim.AdamW(m2.parameters(), lr=1e-2), m2, foreach=False)
    assert o1.wcgc.foreach and not o2.wcgc.foreach
    assert not create_optimizer_v2(m1, 'adamw_wcgc', foreach=True).wcgc.foreach  # CPU: per-tensor is faster
    batches = make_batches(3, torch.float64)
    train(m1, o1, batches)
    train(m2, o2, batches)
    assert_models_close(m1, m2)


def test_lookahead_prefix_matches_reference():
    # timm's Lookahead(k=6, alpha=0.5) around the base; WC sits on the base step and the slow/fast
    # interpolation of centralized weights stays centralized
    model = make_model(torch.float64)
    ref_model = copy.deepcopy(model)
    opt = create_optimizer_v2(model, 'lookahead_adam_wcgc', lr=1e-2)
    assert type(opt).__name__ == 'Lookahead'
    ref = RefOptimizer(ref_model, 'adam', 1e-2, 0.0, True, True)
    slow = {}

    def sync():
        if ref.t % 6 == 0:
            with torch.no_grad():
                for p in ref_model.parameters():
                    s = slow.setdefault(id(p), p.detach().clone())  # timm starts the slow weights at the 1st sync
                    s += 0.5 * (p - s)
                    p.copy_(s)

    batches = make_batches(13, torch.float64)  # two syncs, the second one moves the weights
    train(model, opt, batches)
    train(ref_model, ref, batches, after_step=sync)
    assert_models_close(model, ref_model)


# ------------------------------------------------------------------------------------------------
# invariants
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('opt_name', ['sgd', 'momentum', 'adam', 'adamw'])
def test_centralization_off_is_bit_identical_to_base(opt_name):
    m1, m2 = make_model(), make_model()
    kw = dict(OPTS[opt_name][2], weight_decay=5e-4)
    o1 = create_optimizer_v2(m1, f'{opt_name}_wcgc', wcgc_scope='none', **kw)
    o2 = create_optimizer_v2(m2, opt_name, **kw)
    assert type(o1).wcgc_base is type(o2) and isinstance(o1, type(o2))
    assert o1.wcgc.params == []
    for g1, g2 in zip(o1.param_groups, o2.param_groups, strict=True):
        assert {k: v for k, v in g1.items() if k != 'params'} == {k: v for k, v in g2.items() if k != 'params'}
        assert [p.shape for p in g1['params']] == [p.shape for p in g2['params']]
    batches = make_batches(4)
    train(m1, o1, batches)
    train(m2, o2, batches)
    assert_models_equal(m1, m2)


def area_means(t, spec):
    t = t.detach()
    return (t.unflatten(0, (spec.split_groups, -1)) if spec.split_groups > 1 else t).mean(spec.dims)


def filter_means(model, opt):
    """Largest reference-area |mean| of each centralized weight, relative to its largest |entry|."""
    return {name: (area_means(p, spec).abs().max() / p.detach().abs().max()).item()
            for name, p, spec in zip(opt.wcgc.names, opt.wcgc.params, opt.wcgc.specs)}


@pytest.mark.parametrize('opt_name', ['sgd', 'adamw'])
def test_weight_means_zero_at_construction_and_after_every_step(opt_name):
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = create_optimizer_v2(model, f'{opt_name}_wcgc', weight_decay=5e-4, **OPTS[opt_name][2])
    assert opt.wcgc.names == [f'{n}.weight' for n, _, _ in DEFAULT_SCOPE if n != 'dw1']
    # the method really centralized them (they were not centralized before)
    assert max((before['conv1.weight'].mean((1, 2, 3))).abs()) > 1e-3
    assert max(filter_means(model, opt).values()) < 1e-6
    for batch in make_batches(6):
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
        assert max(filter_means(model, opt).values()) < 1e-6


def test_classifier_1d_and_single_element_filters_untouched():
    model = make_model()
    opt = create_optimizer_v2(model, 'momentum_wcgc', lr=0.1, weight_decay=5e-4)
    plain = copy.deepcopy(model)   # same (already centralized) starting point
    plain_opt = create_optimizer_v2(plain, 'momentum', lr=0.1, weight_decay=5e-4)
    for m in (model, plain):
        torch.manual_seed(3)
        for p in m.parameters():
            p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    dw1_before = model.dw1.weight.clone()
    opt.step()
    plain_opt.step()
    centralized = {f'{n}.weight' for n, _, _ in DEFAULT_SCOPE if n != 'dw1'}
    for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        if n in centralized:
            assert not torch.equal(p, q), n
        else:  # head, biases, BN, depthwise 1x1: the plain update, bit for bit, and not frozen
            assert torch.equal(p, q), n
            assert torch.equal(p.grad, grads[n]), n
    assert not torch.equal(model.dw1.weight, dw1_before)  # never frozen


def test_state_dict_round_trip_continues_identically():
    for name in ('sgd_wcgc', 'adamw_wcgc'):
        model = make_model()
        opt = create_optimizer_v2(model, name, lr=0.05, weight_decay=5e-4)
        batches = make_batches(6)
        train(model, opt, batches[:3])
        sd, msd = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
        assert 'wcgc' in sd
        resumed = make_model(seed=7)
        resumed_opt = create_optimizer_v2(resumed, name, lr=0.05, weight_decay=5e-4)
        resumed.load_state_dict(msd)
        resumed_opt.load_state_dict(sd)
        train(model, opt, batches[3:])
        train(resumed, resumed_opt, batches[3:])
        assert_models_equal(model, resumed)
        # the state dict also loads into the plain base optimizer, and the base's into a WC/GC one,
        # whose next step then runs WC (those weights need not be centralized)
        base_opt = create_optimizer_v2(make_model(), name.split('_')[0], lr=0.05, weight_decay=5e-4)
        base_opt.load_state_dict(sd)
        base_sd = base_opt.state_dict()
        for st in base_sd['state'].values():  # a momentum buffer from a run without GC
            if 'momentum_buffer' in st:
                st['momentum_buffer'] += torch.randn_like(st['momentum_buffer'])
        resumed_opt.load_state_dict(base_sd)
        assert resumed_opt.wcgc._wc_due
        if name == 'sgd_wcgc':  # the SGD shortcut needs centralized momentum: made so on load
            for p, spec in zip(resumed_opt.wcgc.params, resumed_opt.wcgc.specs):
                assert area_means(resumed_opt.state[p]['momentum_buffer'], spec).abs().max() < 1e-6


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(F.relu(self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))))

    def get_classifier(self):
        return self.head


@pytest.mark.parametrize('opt_name,lr', [('sgd_wcgc', 0.1), ('adamw_wcgc', 0.01)])
def test_loss_decreases_on_small_problem(opt_name, lr):
    torch.manual_seed(0)
    model = SmallCNN()
    patterns = torch.randn(2, 3, 6, 6)
    y = torch.arange(32) % 2
    x = torch.randn(32, 3, 6, 6) + patterns[y]
    opt = create_optimizer_v2(model, opt_name, lr=lr, weight_decay=5e-4)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# ------------------------------------------------------------------------------------------------
# timm integration: names, param groups, plain parameter lists
# ------------------------------------------------------------------------------------------------
def test_names_registered_for_every_base():
    names = set(list_optimizers())
    # every base whose class imports here; apex/bitsandbytes bases without their package get no names
    bases = [n for n in names if '_' not in n
             and timm_registry._import_class(timm.optim.get_optimizer_info(n).opt_class) is not None]
    for base in ['sgd', 'momentum', 'adam', 'adamw', 'nadamw', 'lamb', 'lion'] + bases:
        assert {f'{base}_wcgc', f'{base}_gc', f'{base}_wc'} <= names, base
    assert not any(n.startswith('fused') and n.endswith('_wcgc') for n in names)  # apex is not installed here
    assert register_wcgc_optimizers() == []  # idempotent


def _creatable(base):
    info = timm.optim.get_optimizer_info(base)
    return not (isinstance(info.opt_class, str) or base.startswith(('fused', 'bnb')))


def _create_and_step(base):
    model = make_model()
    opt = create_optimizer_v2(model, f'{base}_wcgc', lr=1e-3)
    base_type = type(create_optimizer_v2(make_model(), base, lr=1e-3))
    assert isinstance(opt, base_type) and type(opt).__name__ == f'{base_type.__name__}_WCGC', base
    second_order = timm.optim.get_optimizer_info(base).second_order
    grads = torch.autograd.grad(loss_fn(model, make_batches(1)[0]), list(model.parameters()), create_graph=second_order)
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    opt.step()
    assert max(filter_means(model, opt).values()) < 1e-5, base


# Kron compiles its preconditioner update on the first step (~10 s on a CPU)
SLOW_BASES = ('kron', 'kronc', 'kronw')


def test_every_base_creates_and_steps():
    bases = sorted(n for n in list_optimizers() if '_' not in n and _creatable(n) and n not in SLOW_BASES)
    assert len(bases) > 50
    for base in bases:
        _create_and_step(base)


@pytest.mark.slow
@pytest.mark.parametrize('base', SLOW_BASES)
def test_slow_bases_create_and_step(base):
    if base not in list_optimizers():
        pytest.skip(f'timm {timm.__version__} has no {base}')
    _create_and_step(base)


def test_param_group_behaviour_kept():
    model = make_model()
    # weight-decay exclusion of 1-D params: same groups as the base name
    o1 = create_optimizer_v2(model, 'sgd_wcgc', weight_decay=1e-4)
    o2 = create_optimizer_v2(model, 'sgd', weight_decay=1e-4)
    assert [(g['weight_decay'], [id(p) for p in g['params']]) for g in o1.param_groups] == \
           [(g['weight_decay'], [id(p) for p in g['params']]) for g in o2.param_groups]
    # layer decay (per-group lr scales) likewise
    o1 = create_optimizer_v2(model, 'adamw_wcgc', weight_decay=1e-4, layer_decay=0.7)
    o2 = create_optimizer_v2(model, 'adamw', weight_decay=1e-4, layer_decay=0.7)
    assert [(g['lr_scale'], len(g['params'])) for g in o1.param_groups] == \
           [(g['lr_scale'], len(g['params'])) for g in o2.param_groups]
    # param_group_fn, with a group opted out of WC/GC by its 'wcgc' key
    def group_fn(m):
        return [{'params': [m.conv1.weight], 'lr': 0.01, 'wcgc': False},
                {'params': [p for n, p in m.named_parameters() if n != 'conv1.weight']}]
    o = create_optimizer_v2(model, 'sgd_wcgc', lr=0.1, param_group_fn=group_fn)
    assert 'conv1.weight' not in o.wcgc.names and 'gconv.weight' in o.wcgc.names
    assert o.param_groups[0]['lr'] == 0.01


@pytest.mark.parametrize('weight_decay', [0.0, 1e-4])
def test_frozen_weights_never_touched(weight_decay):
    model = make_model()
    model.conv1.weight.requires_grad_(False)
    before = model.conv1.weight.clone()
    # also when the frozen weight is handed to the optimizer (a plain parameter list)
    for params in (model, list(model.parameters())):
        opt = create_optimizer_v2(params, 'sgd_wcgc', lr=0.1, weight_decay=weight_decay)
        train(model, opt, make_batches(2))
        assert torch.equal(model.conv1.weight, before)
        assert all(p is not model.conv1.weight for p in opt.wcgc.params)


def test_plain_param_list():
    model = make_model()
    opt = create_optimizer_v2(model.parameters(), 'adamw_wcgc', lr=1e-2)
    # no model: every >= 2-D parameter, the classifier included (nothing tells it apart)
    assert len(opt.wcgc.params) == sum(p.ndim >= 2 for p in model.parameters()) - 1  # dw1 has 1-element filters
    # the classifier opts out through its param group
    model = make_model()
    groups = [{'params': [p for n, p in model.named_parameters() if not n.startswith('head')]},
              {'params': list(model.head.parameters()), 'wcgc': False}]
    opt = create_optimizer_v2(groups, 'adamw_wcgc', lr=1e-2)
    assert all(p is not model.head.weight for p in opt.wcgc.params)
    # get_optimizer_class() gives the same kind of optimizer from parameters
    opt = get_optimizer_class('sgd_wcgc')(model.parameters(), lr=0.1, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults['nesterov'] and opt.wcgc.gc and opt.wcgc.wc


def test_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match="unknown base optimizer 'nosuch'"):
        create_optimizer_v2(model, 'nosuch_wcgc')
    with pytest.raises(ValueError, match='unknown base optimizer'):
        create_optimizer_v2(model, 'lookahead_wcgc')
    with pytest.raises(ValueError, match='area must be one of'):
        create_optimizer_v2(model, 'sgd_wcgc', wcgc_area='filter')
    with pytest.raises(ValueError, match='scope must be one of'):
        create_optimizer_v2(model, 'sgd_wcgc', wcgc_scope='fully')
    with pytest.raises(ValueError, match='unknown WC/GC option'):
        create_optimizer_v2(model, 'sgd_wcgc', wcgc_areas='tensor')
    with pytest.raises(ValueError, match='not a WC/GC optimizer'):
        create_optimizer_v2(model, 'sgd', wcgc_area='tensor')
    with pytest.raises(ValueError, match='wc_every'):
        create_optimizer_v2(model, 'sgd_wcgc', wcgc_wc_every=0)
    with pytest.raises(ValueError, match='momentum_init'):
        create_optimizer_v2(model, 'adamw_wcgc', wcgc_momentum_init='zero')
    with pytest.raises(ValueError, match='needs the model'):
        create_optimizer_v2(model.parameters(), 'sgd_wcgc', wcgc_exclude=['head.*'])
    opt = create_optimizer_v2(model, 'sgd_wcgc')
    with pytest.raises(ValueError, match='already'):
        add_centralization(opt, model)
    opt.wcgc.detach()  # back to the plain base; attachable again
    assert add_centralization(opt, model, gc=False).wcgc.wc


def test_exclude_patterns_and_cli_style_options():
    model = make_model()
    # what timm's --opt-kwargs parser produces: strings and literals
    opt = create_optimizer_v2(model, 'sgd_wcgc', wcgc_exclude='g*', wcgc_area='channel', wcgc_wc_every=1)
    assert 'gconv.weight' not in opt.wcgc.names and 'conv1.weight' in opt.wcgc.names
    assert opt.wcgc.area == 'channel' and opt.wcgc.wc_every == 1


def test_registry_guard(monkeypatch):
    from timm.optim import _optim_factory
    monkeypatch.setattr(timm, '__version__', '9.9.9')  # a newer timm with the same interface: no warning
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert timm_registry._timm_registry() is _optim_factory.default_registry
    monkeypatch.setattr(_optim_factory, 'default_registry', object())
    with pytest.warns(UserWarning, match='interface changed'):
        assert timm_registry._timm_registry() is None


def test_fresh_registry_gets_names_and_hook():
    from timm.optim import OptimInfo, OptimizerRegistry
    registry = OptimizerRegistry()
    registry.register(OptimInfo(name='sgd', opt_class=torch.optim.SGD, has_eps=False, has_momentum=True))
    assert register_wcgc_optimizers(registry) == ['sgd_wcgc', 'sgd_gc', 'sgd_wc']
    opt = registry.create_optimizer(make_model(), 'sgd_gc', lr=0.1)
    assert opt.wcgc.gc and not opt.wcgc.wc


def test_timm_builds_the_wcgc_class_itself():
    # the optimizer create_optimizer_v2 returns is constructed as the WC/GC class (no retyping afterwards)
    from timm.optim import OptimInfo, OptimizerRegistry
    built = []

    class Recording(torch.optim.SGD):
        def __init__(self, *args, **kwargs):
            built.append(type(self))
            super().__init__(*args, **kwargs)

    registry = OptimizerRegistry()
    registry.register(OptimInfo(name='rec', opt_class=Recording, has_eps=False, has_momentum=True))
    register_wcgc_optimizers(registry)
    model = make_model()
    opt = registry.create_optimizer(model, 'lookahead_rec_wcgc', lr=0.1)
    cls = registry.get_optimizer_class('rec_wcgc', bind_defaults=False)
    assert built == [cls] and type(opt._base_optimizer) is cls and opt.wcgc is opt._base_optimizer.wcgc
    assert 'head.weight' not in opt.wcgc.names  # the model reached the class: its classifier is excluded


@pytest.mark.parametrize('name', ['sgd_wcgc', 'adamw_wcgc', 'momentum_gc'])
@pytest.mark.parametrize('how', ['deepcopy', 'pickle'])
def test_copies_keep_centralizing_and_continue_identically(name, how):
    import pickle
    model = make_model()
    opt = create_optimizer_v2(model, name, lr=0.05, weight_decay=5e-4)
    batches = make_batches(6)
    train(model, opt, batches[:3])
    both = (model, opt)
    copy_model, copy_opt = copy.deepcopy(both) if how == 'deepcopy' else pickle.loads(pickle.dumps(both))
    assert type(copy_opt) is type(opt) and copy_opt.wcgc is not opt.wcgc
    assert copy_opt.wcgc.params == [dict(copy_model.named_parameters())[n] for n in copy_opt.wcgc.names]
    assert copy_opt.state_dict()['wcgc'] == opt.state_dict()['wcgc'] if opt.wcgc.wc else True
    train(model, opt, batches[3:])
    train(copy_model, copy_opt, batches[3:])
    assert_models_equal(model, copy_model)
    # and it is the copy's own hooks that centralize: removing them changes the next step
    copy_opt.wcgc.detach()
    train(model, opt, batches[:1])
    train(copy_model, copy_opt, batches[:1])
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), copy_model.parameters()))


# ------------------------------------------------------------------------------------------------
# works with: AMP, clipping, closures, channels_last, schedulers, Accelerate, DDP, torch.compile
# ------------------------------------------------------------------------------------------------
def test_grad_scaler_centralizes_used_grads_and_skipped_step_nothing():
    m1, m2 = make_model(), make_model()
    o1 = create_optimizer_v2(m1, 'sgd_wcgc', lr=0.1)
    o2 = create_optimizer_v2(m2, 'sgd_wcgc', lr=0.1)
    scaler = torch.amp.GradScaler('cpu', init_scale=2. ** 10)
    batch = make_batches(1)[0]
    for model, opt, use_scaler in ((m1, o1, True), (m2, o2, False)):
        opt.zero_grad()
        loss = loss_fn(model, batch)
        if use_scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    assert_models_equal(m1, m2)  # power-of-two scaling is exact: same gradients, same step
    # an overflow: GradScaler skips the step, so neither weights nor gradients are touched
    o1.zero_grad()
    scaler.scale(loss_fn(m1, batch)).backward()
    m1.conv1.weight.grad[0, 0, 0, 0] = float('inf')
    weights = {n: p.clone() for n, p in m1.named_parameters()}
    grads = {n: p.grad.clone() for n, p in m1.named_parameters()}
    scaler.step(o1)
    for n, p in m1.named_parameters():
        assert torch.equal(p, weights[n]), n
        if n != 'conv1.weight':  # GradScaler unscaled them in place; the inf one is nan now
            torch.testing.assert_close(p.grad, grads[n] / scaler.get_scale(), rtol=0, atol=0)


def test_grad_clipping_then_step_matches_reference():
    from timm.utils import dispatch_clip_grad
    model = make_model(torch.float64)
    ref_model = copy.deepcopy(model)
    opt = create_optimizer_v2(model, 'momentum_wcgc', lr=0.1)
    ref = RefOptimizer(ref_model, 'sgd', 0.1, 0.0, True, True)
    for batch in make_batches(3, torch.float64):
        for m, o in ((model, opt), (ref_model, ref)):
            for p in m.parameters():
                p.grad = None
            loss_fn(m, batch).backward()
            dispatch_clip_grad(m.parameters(), 0.05)  # clipping sees the raw gradients, GC the clipped ones
            o.step()
    assert_models_close(model, ref_model)


def test_closure_grads_are_centralized():
    m1, m2 = make_model(torch.float64), make_model(torch.float64)
    o1 = create_optimizer_v2(m1, 'adamw_wcgc', lr=1e-2)
    o2 = create_optimizer_v2(m2, 'adamw_wcgc', lr=1e-2)
    batch = make_batches(1, torch.float64)[0]

    def closure():
        o1.zero_grad()
        loss = loss_fn(m1, batch)
        loss.backward()
        return loss

    o1.step(closure)
    o2.zero_grad()
    loss_fn(m2, batch).backward()
    o2.step()
    assert_models_equal(m1, m2)


def test_channels_last_weights():
    m1 = make_model(torch.float64)
    m2 = copy.deepcopy(m1).to(memory_format=torch.channels_last)
    o1 = create_optimizer_v2(m1, 'adamw_wcgc', lr=1e-2, wcgc_area='channel')
    o2 = create_optimizer_v2(m2, 'adamw_wcgc', lr=1e-2, wcgc_area='channel')
    batches = make_batches(3, torch.float64)
    train(m1, o1, batches)
    train(m2, o2, [(x.to(memory_format=torch.channels_last), y) for x, y in batches])
    assert m2.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_models_close(m1, m2)


def test_lr_schedulers():
    from timm.scheduler import CosineLRScheduler
    model = make_model()
    opt = create_optimizer_v2(model, 'sgd_wcgc', lr=0.1)
    sched = CosineLRScheduler(opt, t_initial=10, warmup_t=2, warmup_lr_init=0.01)
    assert math.isclose(opt.param_groups[0]['lr'], 0.01)
    sched.step(5)
    assert 0.01 < opt.param_groups[0]['lr'] < 0.1
    opt2 = create_optimizer_v2(make_model(), 'adamw_wcgc', lr=1e-2)
    torch_sched = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    opt2.step()
    torch_sched.step()
    assert math.isclose(opt2.param_groups[0]['lr'], 5e-3)


def test_accelerate_prepared_optimizer_matches_plain():
    from accelerate import Accelerator
    m1, m2 = make_model(), make_model()
    o1 = create_optimizer_v2(m1, 'sgd_wcgc', lr=0.1, weight_decay=5e-4)
    o2 = create_optimizer_v2(m2, 'sgd_wcgc', lr=0.1, weight_decay=5e-4)
    accelerator = Accelerator(cpu=True)
    pm, po = accelerator.prepare(m1, o1)
    batches = make_batches(3)
    for batch in batches:
        po.zero_grad()
        accelerator.backward(loss_fn(pm, batch))
        po.step()
    train(m2, o2, batches)
    assert_models_equal(accelerator.unwrap_model(pm), m2)


def test_ddp_wrapped_model(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        m1, m2 = make_model(), make_model()
        ddp = DistributedDataParallel(m1)
        o1 = create_optimizer_v2(ddp, 'sgd_wcgc', lr=0.1)  # classifier still found through .module
        o2 = create_optimizer_v2(m2, 'sgd_wcgc', lr=0.1)
        assert 'module.head.weight' not in o1.wcgc.names and len(o1.wcgc.names) == len(o2.wcgc.names)
        batches = make_batches(2)
        train(ddp, o1, batches)
        train(m2, o2, batches)
        assert_models_close(m1, m2, atol=1e-6)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('backend', ['eager', pytest.param('inductor', marks=pytest.mark.slow)])
def test_compiled_step(backend):
    torch._dynamo.reset()
    m1, m2 = make_model(), make_model()
    o1 = create_optimizer_v2(m1, 'adamw_wcgc', lr=1e-2, weight_decay=5e-4)
    o2 = create_optimizer_v2(m2, 'adamw_wcgc', lr=1e-2, weight_decay=5e-4)
    step = torch.compile(o1.step, backend=backend)
    batches = make_batches(3)
    for batch in batches:
        o1.zero_grad()
        loss_fn(m1, batch).backward()
        step()
    train(m2, o2, batches)
    assert_models_close(m1, m2, atol=1e-5)
    assert max(filter_means(m1, o1).values()) < 1e-6


@pytest.mark.parametrize('load_optimizer_state', [False, True])
def test_sgd_shortcut_recentres_weights_changed_outside_the_optimizer(load_optimizer_state):
    """The WC-every-100-steps shortcut must not leave loaded or edited weights off-centre."""
    model = make_model()
    opt = create_optimizer_v2(model, 'sgd_wcgc', lr=0.1, momentum=0.9)
    assert opt.wcgc.wc_every == SGD_WC_INTERVAL
    train(model, opt, make_batches(3))
    saved = copy.deepcopy(opt.state_dict())

    def off_centre():
        w = model.conv1.weight.detach()
        return float(w.flatten(1).mean(1).abs().max() / w.abs().max())

    other = make_model()  # weights from elsewhere: not centralized
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.3)
    model.load_state_dict(other.state_dict())
    if load_optimizer_state:
        opt.load_state_dict(saved)
    assert off_centre() > 0.1
    train(model, opt, make_batches(1))
    assert off_centre() < 1e-5

    # an edit under no_grad is caught the same way; an untouched model costs no extra WC
    with torch.no_grad():
        model.conv1.weight.add_(1.0)
    train(model, opt, make_batches(1))
    assert off_centre() < 1e-5
    steps_since = opt.wcgc._steps_since_wc
    train(model, opt, make_batches(1))
    assert opt.wcgc._steps_since_wc == steps_since + 1


def test_restoring_centred_weights_with_their_optimizer_state_stays_exact():
    """A resume (weights + optimizer state of the same run) must not trigger an extra WC."""
    model_a = make_model()
    opt_a = create_optimizer_v2(model_a, 'sgd_wcgc', lr=0.1, momentum=0.9)
    train(model_a, opt_a, make_batches(3))
    model_b = make_model(seed=1)
    opt_b = create_optimizer_v2(model_b, 'sgd_wcgc', lr=0.1, momentum=0.9)
    model_b.load_state_dict(copy.deepcopy(model_a.state_dict()))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    batches = make_batches(4)
    train(model_a, opt_a, batches)
    train(model_b, opt_b, batches)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
