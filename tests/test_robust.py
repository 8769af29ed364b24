""" Robustness evaluation: pixel-space wrapper, ε units, the paper's PGD (eq. 6-7), AutoAttack, report. """
import json

import albumentations as A
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from torch.utils.data import DataLoader, TensorDataset

import timm_normplugins  # noqa: F401  (registers the models)
from timm_normplugins.models._paper_cfg import PAPER_MEAN, PAPER_STD, paper_mean_std
from timm_normplugins.robust import (
    AutoAttackSpec, PGDSpec, PixelSpaceModel, RobustnessResult, attack_guard, autoattack, eps_to_pixels,
    evaluate_robustness, paper_pgd, pixel_space_model, resolve_attacks)

N_CLASSES = 10


pytestmark = pytest.mark.usefixtures('one_thread')


def _linear_model(seed=0, in_chans=3, size=8):
    """A linear classifier on normalised pixels: easy to attack, with a predictable gradient."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * size * size, N_CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=g))
        model[1].bias.zero_()
    return model.eval()


def _paper_pixel_model(model):
    return PixelSpaceModel(model, PAPER_MEAN, PAPER_STD)


def _data(model, n=24, seed=1, wrong=4, size=8):
    """Pixels on the 8-bit grid; labels = the model's clean predictions except ``wrong`` of them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255
    with torch.no_grad():
        y = _paper_pixel_model(model)(x).argmax(1)
    y[:wrong] = (y[:wrong] + 1) % N_CLASSES
    return x, y


def _loader(x, y, batch_size=10):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


# ---- input space ------------------------------------------------------------------------------
@pytest.mark.parametrize('in_chans', [3, 1])
def test_wrapper_feeds_the_model_exactly_what_training_fed_it(in_chans):
    mean, std = paper_mean_std(in_chans)
    # every 8-bit value on every channel
    img = np.stack([np.arange(256, dtype=np.uint8).reshape(16, 16)] * in_chans, axis=-1)
    trained_on = A.Normalize(mean=mean, std=std, max_pixel_value=255.0)(image=img)['image']
    trained_on = torch.from_numpy(trained_on).permute(2, 0, 1)[None]
    paper = (torch.from_numpy(img).double().permute(2, 0, 1)[None]
             - torch.tensor([122.0, 117.0, 104.0] if in_chans == 3 else [117.0]).view(1, -1, 1, 1)) / 256
    seen = {}
    wrapped = PixelSpaceModel(nn.Identity(), mean, std)
    pixels = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    out = wrapped(pixels)
    assert torch.equal(out, trained_on)  # bit-identical, not merely close
    assert torch.equal(out.double(), paper)

    class Spy(nn.Module):
        def forward(self, x):
            seen['x'] = x
            return x.flatten(1)
    PixelSpaceModel(Spy(), mean, std)(pixels)
    assert torch.equal(seen['x'], trained_on)


def test_wrapper_reads_the_model_cfg():
    model = timm.create_model('resnet34_tn', layers=(1, 1, 1, 1), channels=(8, 8, 8, 8), stem_width=8)
    wrapped = pixel_space_model(model)
    assert wrapped.mean == pytest.approx(PAPER_MEAN) and wrapped.std == pytest.approx(PAPER_STD)
    assert pixel_space_model(wrapped) is wrapped
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(wrapped(x), model((x * 255 - torch.tensor([122., 117., 104.]).view(1, 3, 1, 1)) / 256))
    with pytest.raises(ValueError, match='channels'):
        wrapped(torch.rand(2, 1, 32, 32))


def test_eps_conversion():
    assert eps_to_pixels(0.1, PAPER_STD) == pytest.approx(0.1 * 256 / 255, rel=1e-12)
    assert eps_to_pixels(8 / 255, PAPER_STD, 'pixel') == 8 / 255
    with pytest.raises(ValueError, match='same std on every channel'):
        eps_to_pixels(0.1, (0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match='units'):
        eps_to_pixels(0.1, PAPER_STD, 'normalised-ish')
    with pytest.raises(ValueError, match='non-negative'):
        eps_to_pixels(-1.0, PAPER_STD)


def test_normalized_eps_is_eps_in_the_network_input():
    """A saturating attack moves every input of the network by exactly ε normalised units."""
    model = _linear_model()
    x = 0.25 + 0.5 * torch.rand(6, 3, 8, 8)  # away from 0 and 1, so no pixel is clamped
    y = _paper_pixel_model(model)(x).argmax(1)
    eps = 0.01
    spec = PGDSpec(eps=(eps,), steps=5, abs_stepsize=eps)  # one step reaches the corner of the ε-box
    atk = spec.build(_paper_pixel_model(model), eps, PAPER_STD, N_CLASSES, seed=0)
    adv = atk(x, y)
    wrapped = _paper_pixel_model(model)
    moved = (wrapped.normalize(adv) - wrapped.normalize(x)).abs()
    assert moved.max().item() == pytest.approx(eps, abs=2e-6)
    # (an input whose gradient underflows to exactly 0 does not move, hence "almost all")
    assert ((moved - eps).abs() < 2e-6).float().mean() > 0.99


# ---- the paper's PGD (eq. 6-7) -------------------------------------------------------------------
def _reference_pgd(model, x, y, eps, alpha, steps, clamp=False):
    """Eq. 6 written out: x^{t+1} = x^0 + Clip_ε(x^t + α·sign(∇) − x^0) (``clamp``: also kept in [0, 1])."""
    accs, xt = [], x.clone()
    for _ in range(steps):
        xt.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xt), y), xt)
        xt = x + torch.clamp(xt.detach() + alpha * grad.sign() - x, -eps, eps)
        if clamp:
            xt = xt.clamp(0, 1)
        with torch.no_grad():
            accs.append((model(xt).argmax(1) == y).sum().item())
    return accs, xt


@pytest.mark.parametrize('preset,clamp', [('pgd-paper', False), ('pgd-paper-clamped', True)])
def test_per_iterate_accuracy_is_eq7_and_matches_a_hand_written_pgd(preset, clamp):
    model = _linear_model()
    x, y = _data(model, n=24)
    x[:, 0] = 0.0  # pixels at the range limit: where the clamped and the eq. 6 attacks part
    eps, steps = 0.01, 40
    spec, = resolve_attacks(preset, eps=(eps,), steps=steps)
    assert spec.clamp is clamp
    result = evaluate_robustness(model, _loader(x, y), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    row = result.models['Sequential']['attacks'][preset][0]
    per_iterate = row['per_iterate']
    assert len(per_iterate) == steps
    assert row['accuracy_eq7'] == pytest.approx(sum(per_iterate) / steps, abs=1e-12)
    assert per_iterate[-1] == pytest.approx(row['accuracy'], abs=1e-12)
    assert row['start_accuracy'] == pytest.approx(result.accuracy('Sequential'))  # x^0 = the clean image
    # the protocol must be doing something here, so that eq. 7 and the final accuracy differ
    assert per_iterate[0] > per_iterate[-1] and row['accuracy_eq7'] > row['accuracy']

    pm = _paper_pixel_model(model)
    eps_px = eps * 256 / 255
    ref_counts = []
    for xb, yb in _loader(x, y):
        counts, _ = _reference_pgd(pm, xb, yb, eps_px, eps_px * 0.01 / 0.3, steps, clamp=clamp)
        ref_counts.append(counts)
    reference = [100.0 * sum(c) / len(x) for c in zip(*ref_counts)]
    assert per_iterate == pytest.approx(reference, abs=1e-9)
    for xb, yb in _loader(x, y):  # and the other variant is measurably different on these pixels
        assert _reference_pgd(pm, xb, yb, eps_px, eps_px * 0.01 / 0.3, steps, clamp=not clamp)[1].sub(
            _reference_pgd(pm, xb, yb, eps_px, eps_px * 0.01 / 0.3, steps, clamp=clamp)[1]).abs().max() > 1e-3
        break


def _reference_foolbox_pgd(model, x, y, eps, alpha, steps, seed):
    """Foolbox 3's LinfPGD written out: x⁰ = clip(x + U(-ε, ε), 0, 1), then
    x^{t+1} = clip(x + clip(x^t + α·sign(∇) − x, −ε, ε), 0, 1)."""
    torch.manual_seed(seed)
    xt = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    accs = []
    for _ in range(steps):
        xt.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xt), y), xt)
        xt = (x + torch.clamp(xt.detach() + alpha * grad.sign() - x, -eps, eps)).clamp(0, 1)
        with torch.no_grad():
            accs.append((model(xt).argmax(1) == y).sum().item())
    return accs


def test_foolbox_reading_matches_a_hand_written_linf_pgd_with_its_random_start():
    model = _linear_model()
    x, y = _data(model, n=24)
    x[:, 0] = 0.0  # saturated pixels: the clip to [0, 1] acts on the random start and on every iterate
    eps, steps = 0.03, 40
    spec, = resolve_attacks('pgd-foolbox', eps=(eps,), steps=steps)
    assert spec.random_start and spec.clamp and spec.rel_stepsize == pytest.approx(0.01 / 0.3)
    result = evaluate_robustness(model, _loader(x, y), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False, seed=3)
    row = result.models['Sequential']['attacks']['pgd-foolbox'][0]
    assert row['accuracy_eq7'] == pytest.approx(sum(row['per_iterate']) / steps, abs=1e-12)

    pm = _paper_pixel_model(model)
    eps_px = eps * 256 / 255
    ref_counts = [_reference_foolbox_pgd(pm, xb, yb, eps_px, eps_px * 0.01 / 0.3, steps, seed=3 * 1_000_003 + i)
                  for i, (xb, yb) in enumerate(_loader(x, y))]
    reference = [100.0 * sum(c) / len(x) for c in zip(*ref_counts)]
    assert row['per_iterate'] == pytest.approx(reference, abs=1e-9)
    # the random start matters: another evaluation seed gives other iterates, same protocol
    other = evaluate_robustness(model, _loader(x, y), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False, seed=4)
    assert other.models['Sequential']['attacks']['pgd-foolbox'][0]['per_iterate'] != row['per_iterate']
    # and it is not the eq. 6 reading: that one starts at the clean image and never clips to [0, 1]
    paper = evaluate_robustness(model, _loader(x, y), resolve_attacks('pgd-paper', eps=(eps,), steps=steps),
                                mean=PAPER_MEAN, std=PAPER_STD, progress=False, seed=3)
    assert paper.models['Sequential']['attacks']['pgd-paper'][0]['per_iterate'] != row['per_iterate']


def test_clamped_variant_is_torchattacks_pgd_unchanged():
    model = _linear_model()
    x, y = _data(model, n=8)
    x[:, 1] = 1.0
    pm = _paper_pixel_model(model)
    for norm, cls in (('Linf', torchattacks.PGD), ('L2', torchattacks.PGDL2)):
        eps = 0.03 if norm == 'Linf' else 0.5
        ours = paper_pgd(pm, eps=eps, steps=5, rel_stepsize=0.3, norm=norm, clamp=True)(x, y)
        theirs = cls(pm, eps=eps, alpha=eps * 0.3, steps=5, random_start=False)(x, y)
        assert torch.equal(ours, theirs)


def test_iterates_come_from_the_same_run_with_one_extra_forward():
    model = _linear_model()
    x, y = _data(model, n=8)
    calls = []
    counting = nn.Sequential(model)
    counting.register_forward_hook(lambda m, i, o: calls.append(1))
    pm = _paper_pixel_model(counting)
    atk = paper_pgd(pm, eps=0.02, steps=7)
    adv = atk(x, y)
    assert len(calls) == 7 + 1  # T forwards for the T gradients, one for x^T
    assert atk.iterate_correct.shape == (7, 8)
    with torch.no_grad():
        final = (pm(adv).argmax(1) == y).long()
    assert torch.equal(atk.iterate_correct[-1], final)
    assert torch.equal(atk.final_pred, pm(adv).argmax(1))
    with pytest.raises(ValueError, match='norm'):
        paper_pgd(pm, eps=0.1, norm='L1')


@pytest.mark.parametrize('norm', ['Linf', 'L2'])
@pytest.mark.parametrize('random_start', [False, True])
@pytest.mark.parametrize('clamp', [False, True])
def test_perturbations_stay_in_the_eps_ball_and_in_pixel_range(norm, random_start, clamp):
    model = _linear_model()
    x, y = _data(model, n=12)
    x[:, 0] = 0.0  # pixels at the range limits: the [0, 1] clamp must hold them, eq. 6 lets them go
    x[:, 1] = 1.0
    eps_px = 0.05 if norm == 'Linf' else 0.5
    atk = paper_pgd(_paper_pixel_model(model), eps=eps_px, steps=10, rel_stepsize=0.5,
                    random_start=random_start, norm=norm, clamp=clamp)
    adv = atk(x, y)
    if clamp:
        assert adv.min() >= 0 and adv.max() <= 1
    else:
        assert adv.min() < 0 or adv.max() > 1
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
    assert size.max() <= eps_px + 1e-6
    assert size.max() > 0.5 * eps_px  # and they do move


class _InputIgnoring(nn.Module):
    """Always predicts class 3; the 0·x term keeps the input in the autograd graph."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(N_CLASSES))
        with torch.no_grad():
            self.bias[3] = 5.0

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0.0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize('label,expected', [(3, 100.0), (7, 0.0)])
def test_a_model_ignoring_its_input_is_exactly_as_robust_as_it_is_accurate(label, expected):
    x = torch.rand(6, 3, 8, 8)
    y = torch.full((6,), label)
    attacks = [PGDSpec(eps=(0.1, 0.001), steps=3), PGDSpec(name='pgd', eps=(8 / 255,), eps_units='pixel', steps=3,
                                                           random_start=True, eq7=False),
               AutoAttackSpec(steps=3, n_queries=10)]
    result = evaluate_robustness(_InputIgnoring(), _loader(x, y, 4), attacks, mean=PAPER_MEAN, std=PAPER_STD,
                                 progress=False)
    entry = result.models['_InputIgnoring']
    assert entry['clean']['accuracy'] == expected
    for rows in entry['attacks'].values():
        for row in rows:
            assert row['accuracy'] == expected
            assert all(a == expected for a in row.get('per_iterate', [expected]))


# ---- AutoAttack --------------------------------------------------------------------------------
def test_autoattack_is_robustbench_standard():
    pm = _paper_pixel_model(_linear_model())
    multi = autoattack(pm, eps=8 / 255, n_classes=100)
    assert isinstance(multi, torchattacks.MultiAttack)
    apgd, apgdt, fab, square = multi.attacks
    assert type(apgd) is torchattacks.APGD and apgd.loss == 'ce' and apgd.steps == 100 and apgd.n_restarts == 1
    assert type(apgdt) is torchattacks.APGDT and apgdt.steps == 100 and apgdt.n_target_classes == 9
    assert type(fab) is torchattacks.FAB and fab.multi_targeted and fab.steps == 100 and fab.n_target_classes == 9
    assert type(square) is torchattacks.Square and square.n_queries == 5000
    assert all(a.eps == 8 / 255 and a.norm == 'Linf' for a in multi.attacks)
    assert autoattack(pm, n_classes=5).attacks[1].n_target_classes == 4
    cheap = autoattack(pm, version='torchattacks', n_classes=10)
    assert type(cheap) is torchattacks.AutoAttack and cheap._autoattack.attacks[0].steps == 10
    with pytest.raises(ValueError, match='at least 4 classes'):
        autoattack(pm, n_classes=3)
    with pytest.raises(ValueError, match='version'):
        autoattack(pm, version='plus')


def test_autoattack_runs_and_leaves_no_trace():
    torch.manual_seed(123)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, N_CLASSES))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
    model.train()  # the caller's mode; the attack must use eval mode and give it back
    bn_stats = model[1].running_mean.clone()
    x = torch.rand(8, 3, 8, 8)
    with torch.no_grad():
        y = _paper_pixel_model(model).eval()(x).argmax(1)
    model.train()
    pm = _paper_pixel_model(model)

    rng = torch.get_rng_state()
    torchattacks.FAB(pm, steps=3, multi_targeted=True, eps=1e-3)(x, y)
    # what the guard is for: torchattacks reseeds the global RNG and FAB leaves .grad behind
    assert not torch.equal(torch.get_rng_state(), rng)
    assert any(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.train()

    torch.manual_seed(7)
    rng = torch.get_rng_state()
    # ε small enough that images survive APGD, so FAB-T and Square run too
    spec = AutoAttackSpec(eps=(1e-3, 8 / 255), steps=3, n_queries=5)
    result = evaluate_robustness(model, _loader(x, y, 5), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.training and torch.equal(model[1].running_mean, bn_stats)
    small, large = (result.accuracy('Sequential', 'autoattack', e) for e in spec.eps)
    assert large <= small <= result.accuracy('Sequential') == 100.0
    assert small > 0
    assert 'RobustBench standard' in result.settings['attacks'][0]['description']


def test_attack_guard_restores_grads_and_flags():
    model = _linear_model()
    model[1].weight.requires_grad_(False)
    model[1].bias.grad = torch.ones(N_CLASSES)
    with attack_guard(model, seed=3) as m:
        assert not any(p.requires_grad for p in m.parameters())
        first = torch.rand(3)
    with attack_guard(model, seed=3):
        assert torch.equal(torch.rand(3), first)
    assert not model[1].weight.requires_grad and model[1].bias.requires_grad
    assert torch.equal(model[1].bias.grad, torch.ones(N_CLASSES))


# ---- evaluate_robustness -------------------------------------------------------------------------
def test_seeded_runs_repeat_and_models_do_not_influence_each_other():
    a, b = _linear_model(0), _linear_model(5)
    x, y = _data(a, n=16)
    spec = PGDSpec(name='pgd', eps=(0.02,), eps_units='pixel', steps=4, rel_stepsize=0.25, random_start=True)
    together = evaluate_robustness({'a': a, 'b': b}, _loader(x, y, 6), spec, seed=3,
                                   mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    alone = evaluate_robustness({'a': a}, _loader(x, y, 6), spec, seed=3,
                                mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != 'seconds'} for r in rows]  # noqa: E731
    assert strip(together.models['a']['attacks']['pgd']) == strip(alone.models['a']['attacks']['pgd'])
    assert set(together.models) == {'a', 'b'}


def test_num_images_and_input_checks():
    model = _linear_model()
    x, y = _data(model, n=30)
    result = evaluate_robustness(model, _loader(x, y, 8), (), num_images=13, progress=False,
                                 mean=PAPER_MEAN, std=PAPER_STD)
    assert result.models['Sequential']['clean']['n'] == 13 and result.settings['num_images'] == 13
    expected = (_paper_pixel_model(model)(x[:13]).argmax(1) == y[:13]).float().mean().item() * 100
    assert result.accuracy('Sequential') == pytest.approx(expected)
    # uint8 pixels are accepted as they are
    u8 = (x * 255).round().to(torch.uint8)
    assert evaluate_robustness(model, _loader(u8, y, 8), (), num_images=13, progress=False,
                               mean=PAPER_MEAN, std=PAPER_STD).accuracy('Sequential') == pytest.approx(expected)
    normalised = (x * 255 - 117) / 256
    with pytest.raises(ValueError, match=r'pixels in \[0, 1\]'):
        evaluate_robustness(model, _loader(normalised, y), (), progress=False)
    with pytest.raises(ValueError, match='unknown attack'):
        evaluate_robustness(model, _loader(x, y), ['pgd-papr'], progress=False)
    with pytest.raises(ValueError, match='normalised units needs the same std'):
        evaluate_robustness(model, _loader(x, y), ['pgd-paper'], mean=(0.5,) * 3, std=(0.2, 0.3, 0.4),
                            progress=False)


def test_resolve_attacks_overrides():
    specs = resolve_attacks(['pgd-paper', 'autoattack'], steps=7, eps=None)
    assert [s.steps for s in specs] == [7, 7] and specs[0].eps == (0.1, 0.01, 0.001, 0.0001)
    with pytest.raises(ValueError, match='unique'):
        resolve_attacks(['pgd', 'pgd'])


def test_report_files_are_written_and_reload(tmp_path):
    a, b = _linear_model(0), _linear_model(5)
    x, y = _data(a, n=12)
    attacks = [PGDSpec(eps=(0.1, 0.01, 0.001), steps=4), AutoAttackSpec(steps=2, n_queries=5)]
    result = evaluate_robustness({'tn_fdt': a, 'baseline': b}, _loader(x, y, 6), attacks,
                                 mean=PAPER_MEAN, std=PAPER_STD, seed=11, output=tmp_path, progress=False,
                                 info={'data': 'synthetic'})
    md = (tmp_path / 'report.md').read_text(encoding='utf-8')
    assert '| Model | Baseline | ε = 0.1 | ε = 0.01 | ε = 0.001 |' in md
    assert '| Model | Baseline | ε = 8/255 |' in md
    assert 'eq. 7' in md and '256/255' in md and 'RobustBench' in md
    for name in ('tn_fdt', 'baseline'):
        eq7 = result.accuracy(name, 'pgd-paper', 0.01, 'accuracy_eq7')
        assert f'| {name} | {result.accuracy(name):.2f} | ' in md and f'{eq7:.2f}' in md
    loaded = RobustnessResult.load(tmp_path)
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict()))
    settings = loaded.settings
    assert settings['seed'] == 11 and settings['num_images'] == 12 and settings['data'] == 'synthetic'
    assert settings['versions']['torchattacks'] == torchattacks.__version__
    assert settings['attacks'][0]['steps'] == 4 and settings['attacks'][0]['eps_units'] == 'normalized'
    row = loaded.models['tn_fdt']['attacks']['pgd-paper'][0]
    assert row['eps_pixel'] == pytest.approx(0.1 * 256 / 255) and len(row['per_iterate']) == 4
    assert loaded.markdown() == md
    png = (tmp_path / 'accuracy_vs_eps.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000


def test_sanity_checks_flag_a_broken_result():
    settings = {'attacks': [{'name': 'pgd-paper', 'kind': 'pgd', 'eq7': True, 'steps': 40, 'eps': [0.1, 0.001],
                             'eps_units': 'normalized', 'description': 'x'}]}
    rows = [{'eps': 0.1, 'accuracy': 50.0, 'accuracy_eq7': 60.0}, {'eps': 0.001, 'accuracy': 10.0, 'accuracy_eq7': 20.0}]
    result = RobustnessResult(settings, {'m': {'clean': {'accuracy': 90.0}, 'attacks': {'pgd-paper': rows}}})
    checks = {c['check']: c['ok'] for c in result.sanity_checks()}
    assert checks == {'smallest ε ≈ clean': False, 'accuracy falls as ε grows': False}
    assert '⚠' in result.markdown()
    # ε = 0.01 (2.6 grey levels) may lower accuracy a lot: only the monotonicity check applies
    rows = [{'eps': 0.1, 'accuracy': 0.0, 'accuracy_eq7': 3.0}, {'eps': 0.01, 'accuracy': 18.0, 'accuracy_eq7': 25.5}]
    result = RobustnessResult(settings, {'m': {'clean': {'accuracy': 40.0}, 'attacks': {'pgd-paper': rows}}})
    assert [(c['check'], c['ok']) for c in result.sanity_checks()] == [('accuracy falls as ε grows', True)]


# ---- segmentation --------------------------------------------------------------------------------
class _PixelClassifier(nn.Module):
    """1×1 conv: per-pixel logits (N, K, H, W)."""

    def __init__(self, k=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 3)
            self.conv.bias.zero_()

    def forward(self, x):
        return self.conv(x)


def _confusion_miou(pred, target, k, ignore=255):
    ious = []
    valid = target != ignore
    for c in range(k):
        p, t = (pred == c) & valid, (target == c) & valid
        union = (p | t).sum().item()
        if union:
            ious.append((p & t).sum().item() / union)
    return 100 * sum(ious) / len(ious)


def test_segmentation_clean_metrics_and_pgd():
    model = _PixelClassifier()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 5, 7, generator=g)
    with torch.no_grad():
        pred = _paper_pixel_model(model)(x).argmax(1)
    y = pred.clone()
    y[:, 0] = (y[:, 0] + 1) % 4  # a wrong row
    y[:, 1, :3] = 255  # ignored pixels
    result = evaluate_robustness(model, _loader(x, y, 4), PGDSpec(eps=(0.05, 0.001), steps=3),
                                 mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    assert result.settings['task'] == 'segmentation'
    clean = result.models['_PixelClassifier']['clean']
    valid = y != 255
    assert clean['n'] == int(valid.sum())
    assert clean['accuracy'] == pytest.approx(100 * ((pred == y) & valid).sum().item() / valid.sum().item())
    assert clean['miou'] == pytest.approx(_confusion_miou(pred, y, 4))
    rows = result.models['_PixelClassifier']['attacks']['pgd-paper']
    assert rows[0]['accuracy'] < clean['accuracy']  # per-pixel CE PGD hurts at ε = 0.05
    for row in rows:
        assert row['accuracy_eq7'] == pytest.approx(sum(row['per_iterate']) / 3)
        assert row['per_iterate'][-1] == pytest.approx(row['accuracy']) and 'miou' in row
    with pytest.raises(ValueError, match='segmentation supports PGD'):
        evaluate_robustness(model, _loader(x, y, 4), ['autoattack'], mean=PAPER_MEAN, std=PAPER_STD,
                            progress=False)


def test_autocast_is_optional_and_recorded():
    model = _linear_model()
    x, y = _data(model, n=8)
    spec = PGDSpec(eps=(0.01,), steps=3)
    full = evaluate_robustness(model, _loader(x, y), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False)
    assert full.settings['autocast'] is None  # off unless asked for
    bf16 = evaluate_robustness(model, _loader(x, y), spec, mean=PAPER_MEAN, std=PAPER_STD, progress=False,
                               amp_dtype=torch.bfloat16)
    assert bf16.settings['autocast'] == 'bfloat16'
    row = bf16.models['Sequential']['attacks']['pgd-paper'][0]
    assert row['accuracy_eq7'] == pytest.approx(sum(row['per_iterate']) / 3)
