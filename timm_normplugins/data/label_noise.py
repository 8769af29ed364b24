""" Pairwise label noise, the MCEL paper's Figure 5 setting.

"We randomly paired 10 classes into 5 groups and swapped labels before training"; "percentage noise is the
percentage of labels exchanged between any two classes". Here: a seeded permutation of the classes is cut
into consecutive pairs (a, b); in each pair, ``fraction`` of class a's training images (rounded to a whole
number, drawn without replacement) are relabelled b and the same fraction of class b's relabelled a. Only
the training split is corrupted; validation and test stay clean.

The paper leaves open which classes pair up, whether the draw is per class or over the pair, and whether
noise is redrawn per run; the choices above keep every class's count unchanged and give every run of a
comparison (both losses, every seed) the same corrupted labels when they share ``seed``.
"""
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ['pair_swap_noise', 'apply_label_noise']


def pair_swap_noise(targets: Sequence[int], num_classes: int, fraction: float,
                    seed: int = 0) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """Labels with ``fraction`` of each class exchanged with its partner class, and the pairs used.

    Args:
        targets: the clean integer labels.
        num_classes: C, even (every class needs a partner).
        fraction: share of each class relabelled as its partner, in [0, 0.5] (beyond half the partner's
            label would dominate and the classes would simply swap names).
        seed: draws both the pairing and the relabelled images.
    """
    if num_classes < 2 or num_classes % 2:
        raise ValueError(f'pairwise label noise needs an even number of classes, got {num_classes}')
    if not 0.0 <= fraction <= 0.5:
        raise ValueError(f'label noise fraction must be in [0, 0.5], got {fraction}')
    clean = np.asarray(targets, dtype=np.int64)
    if clean.size and not 0 <= clean.min() <= clean.max() < num_classes:
        raise ValueError(f'labels span [{clean.min()}, {clean.max()}], outside 0..{num_classes - 1}')
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_classes)
    pairs = [(int(order[i]), int(order[i + 1])) for i in range(0, num_classes, 2)]
    noisy = clean.copy()
    for a, b in pairs:
        for src, dst in ((a, b), (b, a)):
            members = np.flatnonzero(clean == src)
            flipped = rng.choice(members, size=int(round(fraction * members.size)), replace=False)
            noisy[flipped] = dst
    return noisy, pairs


def apply_label_noise(dataset, fraction: float, seed: int = 0):
    """Corrupt a classification dataset's ``targets`` in place (see ``pair_swap_noise``); records what was done
    in ``dataset.label_noise`` and returns the dataset."""
    if getattr(dataset, 'task', 'cls') != 'cls':
        raise ValueError('label noise applies to classification datasets only')
    noisy, pairs = pair_swap_noise(dataset.targets, len(dataset.classes), fraction, seed)
    changed = int((noisy != dataset.targets).sum())
    dataset.targets = noisy
    dataset.label_noise = dict(kind='pair_swap', fraction=fraction, seed=seed, pairs=pairs, relabelled=changed)
    return dataset
