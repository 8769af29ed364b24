""" AutoAttack as RobustBench runs it, assembled from torchattacks' own attack classes.

RobustBench's standard L∞ evaluation (Croce & Hein 2020; ``autoattack.AutoAttack(version='standard')``)
runs, each on the images still robust after the previous one:
APGD-CE (100 iterations, 1 restart), APGD-T (DLR loss, 9 target classes × 100 iterations),
FAB-T (9 target classes × 100 iterations) and Square (5,000 queries).
torchattacks 3.5.1's ``AutoAttack(version='standard')`` uses the same four attacks with the classes'
default 10 iterations and n_classes − 1 targets, so this module rebuilds the original configuration
with ``torchattacks.MultiAttack``; ``version='torchattacks'`` gives torchattacks' cheaper one.

``autoattack_forwards`` estimates the forward passes per image, for progress bars.
"""
from typing import Optional

import torchattacks

__all__ = ['autoattack', 'autoattack_forwards', 'describe_autoattack', 'AUTOATTACK_VERSIONS']

AUTOATTACK_VERSIONS = ('robustbench', 'torchattacks')


def _check(version: str, norm: str, n_classes: int):
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f'AutoAttack version must be one of {AUTOATTACK_VERSIONS}, got {version!r}')
    if norm not in ('Linf', 'L2'):
        raise ValueError(f"AutoAttack norm must be 'Linf' or 'L2', got {norm!r}")
    if n_classes < 4:
        # APGD-T's targeted DLR loss reads the 4th-largest logit
        raise ValueError(f'AutoAttack needs at least 4 classes (APGD-T DLR loss), got n_classes={n_classes}')


def autoattack(
        model,
        eps: float = 8 / 255,
        norm: str = 'Linf',
        n_classes: int = 10,
        version: str = 'robustbench',
        seed: int = 0,
        steps: Optional[int] = None,
        n_target_classes: int = 9,
        n_queries: int = 5000,
        verbose: bool = False,
) -> torchattacks.attack.Attack:
    """AutoAttack on a model taking [0, 1] pixels; ``eps`` in pixel units.

    ``version='robustbench'``: APGD-CE, APGD-T, FAB-T, Square with ``steps`` iterations (default 100),
    ``min(n_target_classes, n_classes − 1)`` targets and ``n_queries`` queries.
    ``version='torchattacks'``: ``torchattacks.AutoAttack(version='standard')`` (n_classes − 1 targets)
    with ``steps`` (default: torchattacks' 10) and ``n_queries`` set on its attacks; ``n_target_classes``
    does not apply.
    The attacks reseed the global RNG with ``seed``; run them inside ``attack_guard`` to keep the
    caller's RNG state.
    """
    _check(version, norm, n_classes)
    if steps is None:
        steps = 10 if version == 'torchattacks' else 100
    if steps < 1 or n_queries < 1:
        raise ValueError(f'AutoAttack needs steps >= 1 and n_queries >= 1, got steps={steps}, n_queries={n_queries}')
    if version == 'torchattacks':
        aa = torchattacks.AutoAttack(model, norm=norm, eps=eps, version='standard',
                                     n_classes=n_classes, seed=seed, verbose=verbose)
        # torchattacks fixes them at construction; its attacks read them at run time, so setting them is honoured
        apgd_ce, apgd_t, fab_t, square = aa._autoattack.attacks
        apgd_ce.steps = apgd_t.steps = fab_t.steps = steps
        square.n_queries = n_queries
        return aa
    n_targets = min(n_target_classes, n_classes - 1)
    common = dict(norm=norm, eps=eps, seed=seed, verbose=verbose)
    apgd_ce = torchattacks.APGD(model, steps=steps, n_restarts=1, loss='ce', **common)
    apgd_t = torchattacks.APGDT(model, steps=steps, n_restarts=1, n_classes=n_classes, **common)
    fab_t = torchattacks.FAB(model, steps=steps, n_restarts=1, multi_targeted=True, n_classes=n_classes, **common)
    square = torchattacks.Square(model, n_queries=n_queries, n_restarts=1, **common)
    # torchattacks derives the target count from n_classes (n_classes − 1); RobustBench uses 9
    apgd_t.n_target_classes = n_targets
    fab_t.n_target_classes = n_targets
    return torchattacks.MultiAttack([apgd_ce, apgd_t, fab_t, square])


def autoattack_forwards(version: str, n_classes: int, steps: int, n_target_classes: int, n_queries: int) -> int:
    """Forward passes per image when no image is broken early (counted on torchattacks 3.5.1):
    APGD-CE steps + 2, APGD-T n_t·(steps + 2) + 1, FAB-T n_t·(2·steps + 3) + 1, Square n_queries + 3.

    Images leave the later attacks once broken, so this is the worst case; progress bars use it as the
    planned work of a call and jump to it when the call ends.
    """
    n_t = n_classes - 1 if version == 'torchattacks' else min(n_target_classes, n_classes - 1)
    return (steps + 2) + (n_t * (steps + 2) + 1) + (n_t * (2 * steps + 3) + 1) + (n_queries + 3)


def describe_autoattack(
        version: str = 'robustbench',
        norm: str = 'Linf',
        n_classes: Optional[int] = None,
        steps: int = 100,
        n_target_classes: int = 9,
        n_queries: int = 5000,
) -> str:
    """One line saying which AutoAttack configuration ran."""
    if version == 'torchattacks':
        targets = f'{n_classes - 1}' if n_classes else 'n_classes−1'
        return (f"AutoAttack {norm}, torchattacks' AutoAttack(version='standard'): APGD-CE, "
                f'APGD-T ({targets} targets), FAB-T ({targets} targets), {steps} iterations each; '
                f'Square {n_queries} queries (cheaper than RobustBench)')
    targets = min(n_target_classes, n_classes - 1) if n_classes else n_target_classes
    return (f'AutoAttack {norm}, RobustBench standard configuration: APGD-CE ({steps} it.), '
            f'APGD-T ({targets} targets × {steps} it.), FAB-T ({targets} targets × {steps} it.), '
            f'Square ({n_queries} queries); torchattacks classes in a MultiAttack')
