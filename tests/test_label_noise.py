""" Pairwise label noise (MCEL paper, Figure 5): which labels change, how many, and that the draw repeats. """
import numpy as np
import pytest

from timm_normplugins.data import create_dataset
from timm_normplugins.data.label_noise import apply_label_noise, pair_swap_noise


def _labels(per_class=40, num_classes=10):
    return np.repeat(np.arange(num_classes), per_class)


@pytest.mark.parametrize('fraction', [0.0, 0.1, 0.25, 0.5])
def test_each_class_gives_the_fraction_to_its_partner_and_nothing_else(fraction):
    clean = _labels()
    noisy, pairs = pair_swap_noise(clean, 10, fraction, seed=3)
    assert sorted(c for p in pairs for c in p) == list(range(10))  # a perfect matching of the classes
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    for c in range(10):
        got = noisy[clean == c]
        assert (got == partner[c]).sum() == round(fraction * 40)
        assert set(got) <= {c, partner[c]}
    assert np.bincount(noisy, minlength=10).tolist() == [40] * 10  # exchanged, so counts are unchanged
    assert (noisy != clean).mean() == pytest.approx(round(fraction * 40) / 40)


def test_same_seed_same_noise_other_seed_other_noise():
    clean = _labels()
    a, pa = pair_swap_noise(clean, 10, 0.2, seed=0)
    b, pb = pair_swap_noise(clean, 10, 0.2, seed=0)
    c, _ = pair_swap_noise(clean, 10, 0.2, seed=1)
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='even'):
        pair_swap_noise(_labels(num_classes=3), 3, 0.1)
    with pytest.raises(ValueError, match=r'\[0, 0.5\]'):
        pair_swap_noise(_labels(), 10, 0.6)
    with pytest.raises(ValueError, match='outside'):
        pair_swap_noise(_labels(), 8, 0.1)


def test_dataset_targets_are_corrupted_and_recorded():
    ds = create_dataset('digits', split='train')
    clean = ds.targets.copy()
    apply_label_noise(ds, 0.3, seed=5)
    assert ds.label_noise['relabelled'] == int((ds.targets != clean).sum()) > 0
    assert ds[int(np.flatnonzero(ds.targets != clean)[0])][1] != clean[np.flatnonzero(ds.targets != clean)[0]]


def test_training_flag_corrupts_only_the_training_split():
    from timm_normplugins.training import ConfigError, parse_args
    from timm_normplugins.training.build import build_datasets
    args = parse_args(['--dataset', 'digits', '--label-noise', '0.2', '--label-noise-seed', '4'])
    _, train, val = build_datasets(args)
    clean_train = create_dataset('digits', split='train')
    assert train.label_noise['relabelled'] == int((train.targets != clean_train.targets).sum()) > 0
    assert np.array_equal(val.targets, create_dataset('digits', split='test').targets)  # validation stays clean
    with pytest.raises(ConfigError, match='--label-noise 0.7'):
        build_datasets(parse_args(['--dataset', 'digits', '--label-noise', '0.7']))
