""" Attack settings: what ``evaluate_robustness`` runs, by preset name or as an explicit spec.

Presets (``ATTACK_PRESETS``):

* ``pgd-paper``: the FDT/TN paper's protocol (eq. 6-7): L∞ PGD, 40 steps, α = ε·0.01/0.3 (Foolbox's
  relative step), ε ∈ {1e-1, 1e-2, 1e-3, 1e-4} in normalised units, x^0 = the clean image (eq. 6;
  Foolbox's LinfPGD would start at a random point: ``random_start=True``). Reports eq. 7 (mean over
  the iterates x^1..x^T) and the final-iterate accuracy. Eq. 6 has no valid-pixel clamp, so neither
  has this preset: iterates may leave [0, 1] by up to ε.
* ``pgd-paper-clamped``: the same with every iterate clamped to valid pixels [0, 1] (torchattacks'
  and Foolbox's behaviour; lower robust accuracy at large ε where pixels sit near 0 or 255).
* ``pgd-foolbox``: the paper's protocol read through Foolbox 3's ``LinfPGD`` defaults, which the paper cites
  for its step: a uniform random start in the ε-ball, every iterate (the start included) clipped to valid
  pixels [0, 1], the same 40 steps, α = ε·0.01/0.3 and ε units; eq. 7 over x^1..x^T. The second honest
  reading of eq. 6; docs/ROBUSTNESS.md compares the two.
* ``pgd``: the usual PGD evaluation: L∞, ε = 8/255 (pixels), α = ε/4 = 2/255, 20 steps, random start.
* ``autoattack``: RobustBench's standard AutoAttack, ε = 8/255 (pixels), 100 iterations.
* ``autoattack-fast``: torchattacks' ``AutoAttack(version='standard')`` (10 iterations, 5000 Square queries;
  ``steps`` and ``n_queries`` are honoured).
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from .autoattack import AUTOATTACK_VERSIONS, autoattack, autoattack_forwards, describe_autoattack
from .normalize import EPS_UNITS, eps_to_pixels
from .pgd_paper import FOOLBOX_REL_STEPSIZE, PGD_NORMS, paper_pgd

__all__ = ['PGDSpec', 'AutoAttackSpec', 'ATTACK_PRESETS', 'resolve_attacks', 'format_eps']

PAPER_EPS = (1e-1, 1e-2, 1e-3, 1e-4)


def format_eps(eps: float, units: str) -> str:
    """``8/255`` for pixel ε on the 8-bit grid, ``0.01`` style otherwise."""
    k = eps * 255
    if units == 'pixel' and eps > 0 and abs(k - round(k)) < 1e-9:
        return f'{round(k)}/255'
    return f'{eps:g}'


def _check_eps(spec) -> None:
    """Normalise ``spec.eps`` to a tuple of floats and check it and its units (shared by every spec)."""
    spec.eps = tuple(float(e) for e in spec.eps)
    if not spec.eps:
        raise ValueError(f'{spec.name}: at least one ε is needed')
    if spec.eps_units not in EPS_UNITS:
        raise ValueError(f'{spec.name}: eps_units must be one of {EPS_UNITS}, got {spec.eps_units!r}')


@dataclass
class PGDSpec:
    """PGD from torchattacks with the per-iterate record (eq. 7) and the final-iterate accuracy.

    ``eps`` and ``abs_stepsize`` are in ``eps_units`` ('normalized': the model's normalised input, the
    paper's convention, converted to pixels by × std = 256/255; 'pixel': [0, 1] pixels).
    The step is ``abs_stepsize`` if given, else ``rel_stepsize · ε`` (Foolbox's rule).
    Both the eq. 7 and the final-iterate accuracy are always measured; ``eq7`` says whether the
    report leads with the paper's eq. 7 number (tables, plot, sanity checks). ``clamp``: keep every
    iterate in [0, 1] (torchattacks); False follows eq. 6, which has no such clamp.
    """
    name: str = 'pgd-paper'
    eps: Tuple[float, ...] = PAPER_EPS
    eps_units: str = 'normalized'
    steps: int = 40
    rel_stepsize: float = FOOLBOX_REL_STEPSIZE
    abs_stepsize: Optional[float] = None
    random_start: bool = False
    norm: str = 'Linf'
    eq7: bool = True
    clamp: bool = False
    kind: str = field(default='pgd', init=False)

    def __post_init__(self):
        _check_eps(self)
        if self.norm not in PGD_NORMS:
            raise ValueError(f'{self.name}: norm must be one of {PGD_NORMS}, got {self.norm!r}')
        if self.steps < 1:
            raise ValueError(f'{self.name}: steps must be >= 1, got {self.steps}')

    def alpha(self, eps: float) -> float:
        """Step size in the same units as ``eps``."""
        return self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps

    def forwards_per_image(self, n_classes: int) -> int:
        """Forward passes per image of one call: one per step, plus the final iterate's."""
        return self.steps + 1

    def build(self, model, eps: float, std: Sequence[float], n_classes: int, seed: int):
        eps_px = eps_to_pixels(eps, std, self.eps_units)
        alpha_px = eps_to_pixels(self.alpha(eps), std, self.eps_units)
        return paper_pgd(model, eps=eps_px, steps=self.steps, abs_stepsize=alpha_px,
                         random_start=self.random_start, norm=self.norm, clamp=self.clamp)

    def build_stacked(self, model, eps_values: Sequence[float], std: Sequence[float], batch_size: int):
        """One attack for several ε: the batch holds ``len(eps_values)`` copies of ``batch_size`` images, copy k
        attacked with ε = ``eps_values[k]`` (per-sample ε and α tensors). Deterministic specs only: a random
        start would draw other numbers than the one-ε-at-a-time run."""
        if self.random_start:
            raise ValueError(f'{self.name}: a random start cannot be stacked over ε; build one ε at a time')
        device = next(model.parameters()).device

        def per_sample(values):
            return torch.tensor(values, device=device).repeat_interleave(batch_size).view(-1, 1, 1, 1)

        eps_px = per_sample([eps_to_pixels(e, std, self.eps_units) for e in eps_values])
        alpha_px = per_sample([eps_to_pixels(self.alpha(e), std, self.eps_units) for e in eps_values])
        return paper_pgd(model, eps=eps_px, steps=self.steps, abs_stepsize=alpha_px, random_start=False,
                         norm=self.norm, clamp=self.clamp)

    def describe(self, n_classes: Optional[int] = None) -> str:
        step = (f'α = {self.abs_stepsize:g}' if self.abs_stepsize is not None
                else f'α = ε·{self.rel_stepsize:.6g}' + (' (= ε·0.01/0.3, Foolbox)' if
                                                        abs(self.rel_stepsize - FOOLBOX_REL_STEPSIZE) < 1e-12 else ''))
        start = 'random start in the ε-ball' if self.random_start else 'x⁰ = clean image (no random start)'
        start += ', iterates clamped to [0, 1]' if self.clamp else ', no valid-pixel clamp (eq. 6)'
        eps = ', '.join(format_eps(e, self.eps_units) for e in self.eps)
        return (f'{self.name}: {self.norm} PGD (torchattacks), {self.steps} steps, {step}, {start}; '
                f'ε ∈ {{{eps}}} in {self.eps_units} units; eq. 7 (mean over iterates x¹..x^{self.steps}) '
                'and final-iterate accuracy from the same run')


@dataclass
class AutoAttackSpec:
    """AutoAttack (see ``autoattack``): RobustBench's standard configuration or torchattacks' one."""
    name: str = 'autoattack'
    eps: Tuple[float, ...] = (8 / 255,)
    eps_units: str = 'pixel'
    version: str = 'robustbench'
    norm: str = 'Linf'
    steps: int = 100
    n_target_classes: int = 9
    n_queries: int = 5000
    kind: str = field(default='autoattack', init=False)

    def __post_init__(self):
        _check_eps(self)
        if self.version not in AUTOATTACK_VERSIONS:
            raise ValueError(f'{self.name}: version must be one of {AUTOATTACK_VERSIONS}, got {self.version!r}')

    def forwards_per_image(self, n_classes: int) -> int:
        """Forward passes per image of one call if no image is broken early (an upper estimate)."""
        return autoattack_forwards(self.version, n_classes, self.steps, self.n_target_classes, self.n_queries)

    def build(self, model, eps: float, std: Sequence[float], n_classes: int, seed: int):
        return autoattack(model, eps=eps_to_pixels(eps, std, self.eps_units), norm=self.norm, n_classes=n_classes,
                          version=self.version, seed=seed, steps=self.steps,
                          n_target_classes=self.n_target_classes, n_queries=self.n_queries)

    def describe(self, n_classes: Optional[int] = None) -> str:
        eps = ', '.join(format_eps(e, self.eps_units) for e in self.eps)
        return (f'{self.name}: ' + describe_autoattack(self.version, self.norm, n_classes, self.steps,
                                                       self.n_target_classes, self.n_queries)
                + f'; ε ∈ {{{eps}}} in {self.eps_units} units')


AttackSpec = Union[PGDSpec, AutoAttackSpec]

ATTACK_PRESETS = {
    'pgd-paper': lambda: PGDSpec(),
    'pgd-paper-clamped': lambda: PGDSpec(name='pgd-paper-clamped', clamp=True),
    'pgd-foolbox': lambda: PGDSpec(name='pgd-foolbox', random_start=True, clamp=True),
    'pgd': lambda: PGDSpec(name='pgd', eps=(8 / 255,), eps_units='pixel', steps=20, rel_stepsize=0.25,
                           random_start=True, eq7=False, clamp=True),
    'autoattack': lambda: AutoAttackSpec(),
    'autoattack-fast': lambda: AutoAttackSpec(name='autoattack-fast', version='torchattacks', steps=10),
}


def resolve_attacks(attacks: Union[str, AttackSpec, Iterable[Union[str, AttackSpec]]],
                    **overrides: Any) -> List[AttackSpec]:
    """Preset names and/or specs → specs. ``overrides`` (e.g. ``steps=10``, ``eps=(0.1,)``) replace the
    fields of every spec that has them (``None`` values are ignored); one that no spec has is an error
    (e.g. ``n_queries`` with PGD attacks only), rather than silently doing nothing."""
    if isinstance(attacks, (str, PGDSpec, AutoAttackSpec)):
        attacks = [attacks]
    specs = []
    for a in attacks:
        if isinstance(a, str):
            if a not in ATTACK_PRESETS:
                raise ValueError(f'unknown attack {a!r}; choose from {sorted(ATTACK_PRESETS)}')
            a = ATTACK_PRESETS[a]()
        elif not isinstance(a, (PGDSpec, AutoAttackSpec)):
            raise TypeError(f'an attack is a preset name or a PGDSpec/AutoAttackSpec, got {type(a).__name__}')
        fields = {f.name for f in dataclasses.fields(a) if f.init}
        changes = {k: v for k, v in overrides.items() if v is not None and k in fields}
        specs.append(dataclasses.replace(a, **changes) if changes else a)
    names = [s.name for s in specs]
    for key, value in overrides.items():
        if value is not None and not any(key in {f.name for f in dataclasses.fields(s) if f.init} for s in specs):
            takers = sorted(n for n, make in ATTACK_PRESETS.items()
                            if key in {f.name for f in dataclasses.fields(make()) if f.init})
            raise ValueError(f'{key}={value!r} does not apply to the selected attacks ({", ".join(names)}); '
                             f'attacks that take it: {", ".join(takers) or "none"}')
    if len(set(names)) != len(names):
        raise ValueError(f'attack names must be unique, got {names}')
    return specs


def spec_settings(spec: AttackSpec) -> Dict[str, Any]:
    d = dataclasses.asdict(spec)
    d['eps'] = list(d['eps'])
    return d
