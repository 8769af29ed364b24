""" Robustness evaluation as a person reads it: per-step progress, clean-accuracy table, standard errors,
and attack settings that are honoured or refused. """
import math

import pytest
import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import timm_normplugins  # noqa: F401  (registers the models)
import timm_normplugins.robust.evaluate as evaluate_module
from timm_normplugins.models._paper_cfg import PAPER_MEAN, PAPER_STD
from timm_normplugins.robust import (
    AutoAttackSpec, PGDSpec, PixelSpaceModel, RobustnessResult, evaluate_robustness, resolve_attacks)

N_CLASSES = 10


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, N_CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=g))
    return model.eval()


def _loader(n=10, batch_size=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g).float() / 255
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _evaluate(attacks, **kwargs):
    return evaluate_robustness(_model(), _loader(), attacks, mean=PAPER_MEAN, std=PAPER_STD, **kwargs)


class _RecordingBar:
    """Stands in for tqdm: keeps the total and every update."""
    made = []

    def __init__(self, total=None, **kwargs):
        self.total, self.updates, self.closed = total, [], False
        _RecordingBar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def set_description(self, *args, **kwargs):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        self.closed = True


def test_progress_counts_every_attack_step(monkeypatch):
    monkeypatch.setattr(evaluate_module, 'tqdm', _RecordingBar)
    _RecordingBar.made.clear()
    model = PixelSpaceModel(_model(), PAPER_MEAN, PAPER_STD)
    evaluate_robustness(model, _loader(), [PGDSpec(eps=(0.1, 0.01), steps=3)])
    bar, = _RecordingBar.made
    # 10 images: one clean forward each, and per ε 3 steps + the final iterate
    assert bar.total == 10 * (1 + 2 * (3 + 1)) == sum(bar.updates) and bar.closed
    # per step, not per batch: the clean pass (batches of 4, 4, 2 images), then the attack's pass, 4 forwards
    # per batch, each of both ε's stacked copies
    assert bar.updates == [4, 4, 2] + [2 * 4] * 4 + [2 * 4] * 4 + [2 * 2] * 4
    assert not model._forward_hooks  # the counting hooks come off again


def test_progress_reaches_its_total_for_autoattack(monkeypatch):
    monkeypatch.setattr(evaluate_module, 'tqdm', _RecordingBar)
    _RecordingBar.made.clear()
    _evaluate([AutoAttackSpec(steps=2, n_queries=4)])
    bar, = _RecordingBar.made
    # AutoAttack's plan is its worst case; images it breaks early leave, and each call settles the rest
    assert sum(bar.updates) == bar.total == 10 * (1 + AutoAttackSpec(steps=2, n_queries=4).forwards_per_image(10))


def test_clean_only_report_has_the_accuracy_table_and_no_empty_plot(tmp_path):
    (tmp_path / 'accuracy_vs_eps.png').write_bytes(b'stale')  # from an earlier run with attacks
    result = _evaluate([], output=tmp_path, progress=False)
    md = (tmp_path / 'report.md').read_text(encoding='utf-8')
    acc = result.accuracy(next(iter(result.models)))
    assert '## Clean accuracy' in md and f'| {acc:.2f} |' in md and '| 10 |' in md
    assert '**Attacks.**' not in md
    assert not (tmp_path / 'accuracy_vs_eps.png').exists()
    with pytest.raises(ValueError, match='no attack ran'):
        result.plot(tmp_path / 'x.png')


def test_standard_errors():
    result = _evaluate([PGDSpec(eps=(0.1,), steps=3)], progress=False)
    entry = next(iter(result.models.values()))
    clean, row = entry['clean'], entry['attacks']['pgd-paper'][0]
    p = clean['accuracy'] / 100
    assert clean['stderr'] == pytest.approx(100 * math.sqrt(p * (1 - p) / 10))
    p = row['accuracy'] / 100
    assert row['stderr'] == pytest.approx(100 * math.sqrt(p * (1 - p) / 10))
    # eq. 7: the standard error of the mean of the images' per-iterate accuracies; it is at most the
    # binomial bound at p = 50 % and 0 when every image keeps its label through all iterates
    assert 0 <= row['stderr_eq7'] <= 100 * math.sqrt(0.25 / 10)
    md = result.markdown()
    assert 'standard error' in md and f'at most {50 / math.sqrt(10):.1f}' in md
    reloaded = RobustnessResult.from_dict(result.to_dict())
    assert reloaded.markdown() == md


def test_attack_settings_are_honoured_or_refused():
    fast, = resolve_attacks('autoattack-fast', steps=3, n_queries=7)
    built = fast.build(nn.Identity(), 8 / 255, PAPER_STD, N_CLASSES, seed=0)
    apgd, apgdt, fab, square = built._autoattack.attacks
    assert apgd.steps == apgdt.steps == fab.steps == 3 and square.n_queries == 7
    assert '3 iterations each; Square 7 queries' in fast.describe(N_CLASSES)
    with pytest.raises(ValueError, match=r"n_queries=7 does not apply to the selected attacks \(pgd-paper\); "
                                         r"attacks that take it: autoattack, autoattack-fast"):
        resolve_attacks('pgd-paper', n_queries=7)
    with pytest.raises(ValueError, match='rel_stepsize'):
        resolve_attacks(['autoattack'], rel_stepsize=0.1)
    # applies to those that have it when the list is mixed
    pgd, aa = resolve_attacks(['pgd-paper', 'autoattack'], n_queries=7, steps=5)
    assert aa.n_queries == 7 and pgd.steps == aa.steps == 5


@pytest.mark.parametrize('spec', [
    PGDSpec(eps=(0.1, 0.01, 0.001), steps=3),
    PGDSpec(name='clamped', eps=(0.1, 0.01), steps=3, clamp=True),
    PGDSpec(name='l2', eps=(0.5, 0.05), steps=3, norm='L2', abs_stepsize=0.1),
])
def test_stacked_eps_are_the_same_attack(spec):
    """All ε of a PGD spec in one batch (the default, faster on a CPU) give the numbers of
    running them one by one."""
    torch.manual_seed(0)
    model = timm.create_model('wcgc_cnn_c', num_classes=N_CLASSES).eval()
    loader = DataLoader(TensorDataset(torch.rand(6, 3, 32, 32), torch.randint(0, N_CLASSES, (6,))), batch_size=4)
    runs = [evaluate_robustness(model, loader, [spec], stack_eps=stack, progress=False).to_dict()['models']
            for stack in (True, False)]
    for rows_stacked, rows_single in zip(*(next(iter(r.values()))['attacks'][spec.name] for r in runs)):
        for key in ('accuracy', 'accuracy_eq7', 'per_iterate', 'start_accuracy', 'stderr_eq7'):
            assert rows_stacked[key] == pytest.approx(rows_single[key]), key
