""" ``evaluate_robustness``: clean accuracy plus torchattacks attacks over a loader, for one or many models.

Every model is wrapped with its normalisation (``PixelSpaceModel``) so the attacks work on [0, 1]
pixels, put in eval mode with frozen parameters (gradients only w.r.t. the input), and attacked batch
by batch; each (model, attack, ε, batch) call is seeded from ``seed`` and the batch index, so a
model's numbers do not depend on which other models or attacks run with it, and the caller's RNG
state is restored afterwards. The ε values of a PGD attack without random start (no RNG involved) run
as one call on a batch holding one copy of the images per ε (``stack_eps``).

Resuming: given a report folder, every finished cell (one model, one attack, one ε, all images) is
recorded in ``OUTPUT/cells/`` with the identity of the model, the images and the settings (``cells.py``);
running the same evaluation again after an interruption takes those cells instead of recomputing them.
Each cell is counted in its own pass over the loader (the clean pass first), so the loader must give
the same images each time (no shuffling).

Progress: one tqdm bar counting every image the attacked models see in a forward pass, with ETA.

Segmentation (labels of shape (N, H, W)): clean average pixel accuracy and mIoU; PGD maximises the
per-pixel cross-entropy (pixels with ``ignore_index`` are left out); AutoAttack is for classifiers.
"""
import collections.abc
import logging
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import torchattacks
from tqdm.auto import tqdm

from ..metrics import SegmentationMetric
from ..version import __version__
from .attacks import AttackSpec, format_eps, resolve_attacks, spec_settings
from .cells import CELLS_FOLDER, CellRecords, TensorHasher, model_fingerprint
from .files import check_output
from .guard import _rng_devices, attack_guard
from .normalize import PixelSpaceModel, check_finite_model, eps_to_pixels, pixel_space_model
from .report import REPORT_FILES, RobustnessResult

__all__ = ['evaluate_robustness']

_logger = logging.getLogger(__name__)

_CE_IGNORE = -100  # nn.CrossEntropyLoss's default ignore_index, which torchattacks' PGD uses


class _Tally:
    """Counts for one cell (clean, or one attack at one ε) of one model."""

    def __init__(self):
        self.correct = 0
        self.correct_top5: Optional[int] = None  # clean classification cells (timm's validate reports top-5)
        self.total = 0
        self.iterate_correct: Optional[torch.Tensor] = None  # (T,) summed over images
        self.start_correct = 0
        self.segmentation: Optional[SegmentationMetric] = None
        self.seconds = 0.0
        # per-image fraction of correct iterates (classification): the spread eq. 7's standard error needs
        self.iterate_mean_sum = 0.0
        self.iterate_mean_sq = 0.0

    def add(self, pred: torch.Tensor, target: torch.Tensor, num_classes: int, segmentation: bool):
        valid = target != _CE_IGNORE
        self.correct += int(((pred == target) & valid).sum())
        self.total += int(valid.sum())
        if segmentation:
            if self.segmentation is None:
                self.segmentation = SegmentationMetric(num_classes, ignore_index=_CE_IGNORE)
            self.segmentation.update(pred, target)

    def add_top5(self, logits: torch.Tensor, target: torch.Tensor):
        k = min(5, logits.shape[1])
        hit = (logits.topk(k, dim=1).indices == target[:, None]).any(1) & (target != _CE_IGNORE)
        self.correct_top5 = (self.correct_top5 or 0) + int(hit.sum())

    def add_iterates(self, iterate_correct: torch.Tensor, start_correct: torch.Tensor):
        per_t = iterate_correct.sum(1).cpu()
        self.iterate_correct = per_t if self.iterate_correct is None else self.iterate_correct + per_t
        self.start_correct += int(start_correct.sum())
        per_image = iterate_correct.double().mean(0)
        self.iterate_mean_sum += float(per_image.sum())
        self.iterate_mean_sq += float(per_image.square().sum())

    def counts(self) -> Dict[str, Any]:
        """Everything ``summary`` is computed from, as JSON values (a cell record, ``cells.py``)."""
        seg = self.segmentation
        return {'correct': self.correct, 'correct_top5': self.correct_top5, 'total': self.total,
                'iterate_correct': None if self.iterate_correct is None else self.iterate_correct.tolist(),
                'start_correct': self.start_correct, 'seconds': self.seconds,
                'iterate_mean_sum': self.iterate_mean_sum, 'iterate_mean_sq': self.iterate_mean_sq,
                'confusion': None if seg is None or seg.confusion is None else seg.confusion.cpu().tolist()}

    @classmethod
    def from_counts(cls, counts: Mapping[str, Any]) -> '_Tally':
        tally = cls()
        for key in ('correct', 'correct_top5', 'total', 'start_correct', 'seconds', 'iterate_mean_sum',
                    'iterate_mean_sq'):
            setattr(tally, key, counts[key])
        if counts['iterate_correct'] is not None:
            tally.iterate_correct = torch.tensor(counts['iterate_correct'], dtype=torch.int64)
        if counts['confusion'] is not None:
            confusion = torch.tensor(counts['confusion'], dtype=torch.int64)
            tally.segmentation = SegmentationMetric(confusion.shape[0], ignore_index=_CE_IGNORE)
            tally.segmentation.confusion = confusion
        return tally

    def summary(self) -> Dict[str, Any]:
        pct = lambda c: 100.0 * float(c) / max(self.total, 1)  # noqa: E731
        out = {'accuracy': pct(self.correct), 'n': self.total}
        if self.correct_top5 is not None:
            out['top5'] = pct(self.correct_top5)
        n = self.total
        if self.segmentation is None and n > 1:
            # standard errors in points: binomial for a fraction of images, the spread of the per-image
            # means for eq. 7 (an image's iterates are correlated, so they are not n·T draws)
            p = self.correct / n
            out['stderr'] = 100.0 * math.sqrt(p * (1 - p) / n)
        if self.iterate_correct is not None:
            per_iterate = [pct(c) for c in self.iterate_correct.tolist()]
            out['accuracy_eq7'] = math.fsum(per_iterate) / len(per_iterate)
            out['per_iterate'] = per_iterate
            out['start_accuracy'] = pct(self.start_correct)
            if 'stderr' in out:
                mean = self.iterate_mean_sum / n
                var = max(self.iterate_mean_sq / n - mean * mean, 0.0) * n / (n - 1)
                out['stderr_eq7'] = 100.0 * math.sqrt(var / n)
        if self.segmentation is not None:
            out['miou'] = 100.0 * self.segmentation.compute()['mean_iou']
        return out


def _named_models(model: Union[nn.Module, Mapping[str, nn.Module]]) -> Dict[str, nn.Module]:
    if isinstance(model, nn.Module):
        inner = model.model if isinstance(model, PixelSpaceModel) else model
        name = (getattr(inner, 'pretrained_cfg', None) or {}).get('architecture') or type(inner).__name__
        return {name: model}
    models = dict(model)
    if not models:
        raise ValueError('no model to evaluate')
    for name, m in models.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f'model {name!r} is a {type(m).__name__}, not an nn.Module')
    return models


def _pixels(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not x.is_floating_point():
        raise TypeError(f'images must be uint8 or float pixels in [0, 1], got {x.dtype}')
    nan = int(torch.isnan(x).sum())
    if nan:  # min/max of a batch holding nan are nan, and nan < 0 is False: the range check below would pass
        raise ValueError(f'images must be pixels in [0, 1], got {nan} nan value(s) in a batch')
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f'images must be pixels in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]): torchattacks clamps '
            'to [0, 1], so normalised inputs would be corrupted silently. Give the loader a transform '
            'without normalisation; evaluate_robustness applies each model\'s own')
    return x


@torch.no_grad()
def _check_perturbation(adv: torch.Tensor, x: torch.Tensor, eps_px: float, norm: str, name: str,
                        clamp: bool = True):
    """The attack stayed in its ε-ball (and, if it clamps, in [0, 1]; eq. 6 does not clamp)."""
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == 'Linf' else delta.norm(dim=1)
    tol = 1e-5 * max(1.0, eps_px)
    outside = clamp and (float(adv.min()) < 0 or float(adv.max()) > 1)
    if float(size.max()) > eps_px + tol or outside:
        raise RuntimeError(f'{name} left the {norm} ball of ε={eps_px:.4g} (max {float(size.max()):.4g}) '
                           f'or [0, 1] ([{float(adv.min()):.4g}, {float(adv.max()):.4g}])')


class _Progress:
    """One tqdm bar over the whole evaluation, in image-forwards: every image the attacked model sees in a
    forward pass counts one (a PGD step is one per image), so the ETA moves with the attack's steps.

    Each call (clean pass, or one attack at one ε on one batch) gets a planned amount of work,
    ``images × spec.forwards_per_image``: exact for PGD, AutoAttack's worst case (images leave it once
    broken). Counting stops at the plan and ``end`` adds what the call did not use, so the bar reaches its
    total exactly.
    """

    def __init__(self, models: Dict[str, nn.Module], total: Optional[int], enabled: bool):
        self.bar = tqdm(total=total, desc='robustness', unit='img·fwd', unit_scale=True, disable=not enabled,
                        dynamic_ncols=True, smoothing=0.05)
        self.left = 0
        self.enabled = enabled
        self.hooks = [m.register_forward_hook(self._count) for m in models.values()] if enabled else []

    def _count(self, module, args, output):
        n = min(self.left, args[0].shape[0])
        if n:
            self.left -= n
            self.bar.update(n)

    def begin(self, planned: int, what: str):
        self.left = planned
        if self.enabled:
            self.bar.set_description(what, refresh=False)

    def end(self):
        if self.left:
            self.bar.update(self.left)
        self.left = 0

    def close(self):
        for h in self.hooks:
            h.remove()
        self.bar.close()


def _planned_total(loader, num_images, n_models, specs, n_classes_guess) -> Optional[int]:
    """Image-forwards of the whole evaluation, or None when the loader's length is unknown."""
    dataset = getattr(loader, 'dataset', None)
    try:
        n = len(dataset)
    except TypeError:
        return None
    if num_images is not None:
        n = min(n, num_images)
    per_image = 1 + sum(len(s.eps) * s.forwards_per_image(n_classes_guess) for s in specs)
    return n * n_models * per_image


def _eps_groups(spec, stack: bool) -> List[Tuple[float, ...]]:
    """The ε values attacked together: all of a deterministic PGD spec's at once when ``stack``, else one by one.

    Stacked, the batch holds one copy of the images per ε and each copy gets its own ε and α (per-sample
    tensors): the same arithmetic per image in fewer, larger operations (faster where small operations
    are costly: a loaded CPU, likely a GPU). A random start draws from the RNG, so those run one by one.
    """
    if stack and spec.kind == 'pgd' and not spec.random_start and len(spec.eps) > 1:
        return [tuple(spec.eps)]
    return [(eps,) for eps in spec.eps]


def _attack(pm, spec, group, x, y, cells, built, *, name, n_classes, seed, batch_seed, device, autocast, bar, seg):
    """One attack call for the ε values in ``group`` on one batch; counts go to each ε's cell."""
    k, b = len(group), len(x)
    if k == 1:
        key = (name, spec.name, group[0])
        if key not in built:
            built[key] = spec.build(pm, group[0], pm.std, n_classes, seed)
        atk = built[key]
        xs, ys = x, y
    else:
        atk = spec.build_stacked(pm, group, pm.std, b)
        xs, ys = x.repeat(k, *[1] * (x.dim() - 1)), y.repeat(k, *[1] * (y.dim() - 1))
    bar.begin(len(xs) * spec.forwards_per_image(n_classes),
              f"{name}: {spec.name} ε={', '.join(format_eps(e, spec.eps_units) for e in group)}")
    start = time.perf_counter()
    with attack_guard(pm, seed=batch_seed), autocast():
        adv = atk(xs, ys).detach()
    if spec.kind != 'pgd':
        with torch.no_grad(), autocast(), attack_guard(pm):
            final_pred = pm(adv).argmax(1)
    else:
        final_pred = atk.final_pred
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / k  # stacked ε share the call's time equally
    bar.end()
    for i, eps in enumerate(group):
        part = slice(i * b, (i + 1) * b)
        _check_perturbation(adv[part], x, eps_to_pixels(eps, pm.std, spec.eps_units), getattr(spec, 'norm', 'Linf'),
                            spec.name, getattr(spec, 'clamp', True))
        cell = cells[name, spec.name, eps]
        if spec.kind == 'pgd':
            cell.add_iterates(atk.iterate_correct[:, part], atk.start_correct[part])
        cell.seconds += seconds
        cell.add(final_pred[part], y, n_classes, seg)


class _Pass:
    """What every pass over the loader must agree on: the images (hashed), their number and the task."""

    def __init__(self, specs):
        self.specs = specs
        self.task = None
        self.seen = None
        self.data_hash = None

    def batches(self, loader, num_images, device, ignore_index, what):
        """``(batch_idx, x, y, seg)`` in pixels on ``device``; at the end the pass is checked against the first."""
        hasher = TensorHasher()
        seen = 0
        for batch_idx, batch in enumerate(loader):
            if num_images is not None and seen >= num_images:
                break
            images, labels = batch[0], batch[1]
            if num_images is not None:
                images, labels = images[:num_images - seen], labels[:num_images - seen]
            hasher.update(images)
            hasher.update(labels)
            x = _pixels(images.to(device, non_blocking=True))
            y = labels.to(device, non_blocking=True).long()
            batch_task = 'segmentation' if y.dim() == 3 else 'classification'
            if self.task is None:
                self.task = batch_task
                if self.task == 'segmentation' and any(s.kind != 'pgd' for s in self.specs):
                    raise ValueError('AutoAttack is for classifiers; segmentation supports PGD attacks only')
            elif self.task != batch_task:
                raise ValueError(f'labels changed from {self.task} to {batch_task} shape mid-loader')
            seg = self.task == 'segmentation'
            if seg and ignore_index is not None:
                y = y.masked_fill(y == ignore_index, _CE_IGNORE)
            seen += len(x)
            yield batch_idx, x, y, seg
        digest = hasher.hexdigest()
        if self.data_hash is None:
            self.data_hash, self.seen = digest, seen
        elif (digest, seen) != (self.data_hash, self.seen):
            # each cell is counted in its own pass: a loader that shuffles would give each cell other images
            raise ValueError(f'the loader gave other images for {what} than in its first pass ({seen} vs '
                             f'{self.seen} images, or another order): evaluation needs a loader without '
                             'shuffling or random transforms')


def _run(pixel_models: Dict[str, PixelSpaceModel], loader: Iterable, specs, *, num_images, seed, device,
         amp_dtype, ignore_index, progress, stack_eps, records: Optional[CellRecords] = None):
    """Clean pass and every (attack, ε) of every model, counted per cell, one cell (or one group of stacked
    ε) per pass over the loader, so each finished cell can be recorded and an interrupted evaluation resumed.

    Every attack call is seeded from ``seed`` and the batch's index, so the order of the passes changes no
    number.
    """
    cells: Dict[Tuple[str, str, float], _Tally] = defaultdict(_Tally)
    built: Dict[Tuple[str, str, float], torchattacks.attack.Attack] = {}
    num_classes: Dict[str, int] = {}
    input_size: Dict[str, Tuple[int, ...]] = {}
    passes = _Pass(specs)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    def batches(what):
        return passes.batches(loader, num_images, device, ignore_index, what)

    first_model = next(iter(pixel_models.values())).model
    bar = _Progress(pixel_models, _planned_total(loader, num_images, len(pixel_models), specs,
                                                 getattr(first_model, 'num_classes', None) or 10), progress)
    try:  # the bar's hooks must come off the models, whatever happens
        for name, pm in pixel_models.items():
            fingerprint = model_fingerprint(pm) if records is not None else None
            for batch_idx, x, y, seg in batches(f'{name}: clean'):
                bar.begin(len(x), f'{name}: clean')
                with torch.no_grad(), autocast(), attack_guard(pm):
                    logits = pm(x)
                bar.end()
                num_classes.setdefault(name, logits.shape[1])
                cells[name, 'clean', 0.0].add(logits.argmax(1), y, logits.shape[1], seg)
                if not seg:
                    cells[name, 'clean', 0.0].add_top5(logits, y)
                input_size.setdefault(name, tuple(x.shape[1:]))
                if progress:
                    summary = cells[name, 'clean', 0.0].summary()
                    bar.bar.set_postfix(images=batch_idx + 1 if seg else summary['n'],
                                        clean=f"{summary['accuracy']:.1f}%")
            if not passes.seen:
                raise ValueError('the loader yielded no images')
            for spec in specs:
                for group in _eps_groups(spec, stack_eps):
                    identity = {eps: _identity(spec, eps, fingerprint, passes, seed, device, amp_dtype, ignore_index)
                                for eps in group} if records is not None else {}
                    todo = []
                    for eps in group:
                        counts = records.load((name, spec.name, eps), identity[eps]) if records is not None else None
                        if counts is None:
                            todo.append(eps)
                            continue
                        cells[name, spec.name, eps] = _Tally.from_counts(counts)
                        bar.begin(passes.seen * spec.forwards_per_image(num_classes[name]), f'{name}: reused')
                        bar.end()
                    if not todo:
                        continue
                    label = f"{name}: {spec.name} ε={', '.join(format_eps(e, spec.eps_units) for e in todo)}"
                    for batch_idx, x, y, seg in batches(label):
                        batch_seed = seed * 1_000_003 + batch_idx
                        _attack(pm, spec, tuple(todo), x, y, cells, built, name=name, n_classes=num_classes[name],
                                seed=seed, batch_seed=batch_seed, device=device, autocast=autocast, bar=bar, seg=seg)
                    for eps in todo:
                        if records is not None:
                            records.save((name, spec.name, eps), identity[eps], cells[name, spec.name, eps].counts())
                        # attacks built for this cell are not needed again
                        built.pop((name, spec.name, eps), None)
    finally:
        bar.close()
    return cells, num_classes, input_size, passes.task, passes.seen or 0


def _identity(spec, eps, fingerprint, passes, seed, device, amp_dtype, ignore_index) -> Dict[str, Any]:
    """What a cell's numbers depend on: equal identities, equal numbers (``cells.py``)."""
    attack = spec_settings(spec)
    attack['eps'] = eps
    return {'model': fingerprint, 'images': passes.data_hash, 'num_images': passes.seen, 'attack': attack,
            'seed': seed, 'device': device.type, 'autocast': str(amp_dtype) if amp_dtype is not None else None,
            'ignore_index': ignore_index if passes.task == 'segmentation' else None,
            'versions': {'torch': torch.__version__, 'torchattacks': torchattacks.__version__,
                         'timm_normplugins': __version__}}


def evaluate_robustness(
        model: Union[nn.Module, Mapping[str, nn.Module]],
        loader: Iterable,
        attacks: Union[str, AttackSpec, Sequence[Union[str, AttackSpec]]] = ('pgd-paper',),
        *,
        num_images: Optional[int] = None,
        seed: int = 0,
        device: Optional[Union[str, torch.device]] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        amp_dtype: Optional[torch.dtype] = None,
        ignore_index: Optional[int] = 255,
        output: Optional[Union[str, Path]] = None,
        progress: bool = True,
        info: Optional[Mapping[str, Any]] = None,
        stack_eps: bool = True,
) -> RobustnessResult:
    """Clean accuracy and robust accuracy under ``attacks`` for one model or ``{name: model}``.

    Args:
        model: a model taking normalised inputs (wrapped here with its mean/std), a
            ``PixelSpaceModel`` (used as is), or a mapping name → model for a side-by-side report.
        loader: yields ``(images, labels)`` with images as [0, 1] float or uint8 pixels, NCHW,
            without normalisation; labels (N,) for classification, (N, H, W) for segmentation.
        attacks: preset names (``'pgd-paper'``, ``'pgd'``, ``'autoattack'``, ``'autoattack-fast'``)
            and/or ``PGDSpec``/``AutoAttackSpec``; ``()`` for clean accuracy only.
        num_images: evaluate only the first ``num_images`` images.
        seed: seeds every attack call (random starts; AutoAttack's internal seeds).
        device: defaults to the first model's device.
        mean, std: normalisation (timm's [0, 1] units) for models that are not ``PixelSpaceModel``;
            default: each model's pretrained cfg.
        amp_dtype: run forward passes under ``torch.autocast`` with this dtype (off by default:
            reduced precision changes the gradients the attacks follow).
        ignore_index: segmentation label to leave out of metrics and of the attack's loss.
        output: if given, the report is written there (``RobustnessResult.write``).
        progress: one tqdm bar over every image-forward of the evaluation (each attack step), with ETA.
        info: extra entries for the report's settings (e.g. dataset, checkpoint paths).
        stack_eps: attack all ε of a PGD spec without random start in one batch (one image copy per ε,
            per-sample ε and α): the same attack per image in fewer, larger operations (1.5x faster on a
            loaded 2-core CPU, about even on a quiet one); the batch is ``len(eps)`` times larger, so turn
            it off when that does not fit in memory.
            Floating-point results can differ in the last bits (larger batches may sum in another order).
    """
    models = _named_models(model)
    specs = resolve_attacks(attacks) if attacks else []
    first = next(iter(models.values()))
    device = torch.device(device) if device is not None else next(first.parameters()).device
    pixel_models = {n: pixel_space_model(m, mean, std).to(device) for n, m in models.items()}
    for name, pm in pixel_models.items():  # nan/inf weights score chance at every ε: no result, an error
        check_finite_model(pm, f'model {name!r}')
    for spec in specs:
        _logger.info('attack %s', spec.describe())

    records = None
    if output is not None:  # an unusable folder is found now, not after the attacks
        records = CellRecords(check_output(output, list(REPORT_FILES.values()) + [CELLS_FOLDER + '/']))
    if isinstance(loader, collections.abc.Iterator):  # a one-shot iterator: every cell takes its own pass over the images
        loader = list(loader)
    # the caller's RNG state is left as found (DataLoader iteration and the attacks draw from it)
    with torch.random.fork_rng(devices=_rng_devices(first)):
        cells, num_classes, input_size, task, seen = _run(
            pixel_models, loader, specs, num_images=num_images, seed=seed, device=device, amp_dtype=amp_dtype,
            ignore_index=ignore_index, progress=progress, stack_eps=stack_eps, records=records)
    if records is not None and records.reused:
        _logger.info('reused %d finished cell(s) from %s: %s', len(records.reused), records.folder,
                     ', '.join(f'{n} / {a} ε={e:g}' for n, a, e in records.reused))
    if num_images is not None and seen < num_images:
        _logger.warning('asked for %d images, the loader had %d', num_images, seen)

    results = {}
    for name, pm in pixel_models.items():
        entry = {'clean': cells[name, 'clean', 0.0].summary(), 'attacks': {}}
        for spec in specs:
            rows = []
            for eps in spec.eps:
                cell = cells[name, spec.name, eps]
                row = {'eps': eps, 'eps_pixel': eps_to_pixels(eps, pm.std, spec.eps_units)}
                if spec.kind == 'pgd':
                    row['alpha_pixel'] = eps_to_pixels(spec.alpha(eps), pm.std, spec.eps_units)
                row.update(cell.summary())
                row['seconds'] = cell.seconds
                rows.append(row)
            entry['attacks'][spec.name] = rows
        results[name] = entry

    settings = _settings(specs, pixel_models, num_classes, task, seen, seed, device, amp_dtype, ignore_index)
    settings['stack_eps'] = stack_eps
    settings['model_facts'] = {name: _model_facts(pm, input_size.get(name)) for name, pm in pixel_models.items()}
    settings.update(info or {})
    result = RobustnessResult(settings, results)
    if output is not None:
        paths = result.write(output)
        _logger.info('report written to %s', ', '.join(str(p) for p in paths.values()))
    return result


def _model_facts(pm: PixelSpaceModel, input_size) -> Dict[str, Any]:
    """What timm's validate.py reports besides accuracy: architecture, size, and the evaluated input."""
    cfg = getattr(pm.model, 'pretrained_cfg', None) or {}
    return {
        'architecture': cfg.get('architecture') or type(pm.model).__name__,
        'param_count': sum(p.numel() for p in pm.model.parameters()),
        'input_size': list(input_size) if input_size else None,
        'crop_pct': cfg.get('crop_pct'),
        'interpolation': cfg.get('interpolation'),
    }


def _join(values) -> str:
    values = list(values)
    return values[0] if len(set(values)) == 1 else '(' + ', '.join(values) + ')'


def _settings(specs, pixel_models, num_classes, task, seen, seed, device, amp_dtype, ignore_index) -> Dict[str, Any]:
    n_classes = next(iter(num_classes.values()), None)
    attacks = []
    for spec in specs:
        d = spec_settings(spec)
        d['description'] = spec.describe(n_classes)
        attacks.append(d)
    normalization = {}
    for name, pm in pixel_models.items():
        std_px = _join(f'{s * 255:g}' for s in pm.std)
        mean_px = _join(f'{m * 255:g}' for m in pm.mean)
        factor = _join(f'{s:.6g}' for s in pm.std)
        normalization[name] = (f'input = (pixel·255 − {mean_px}) / {std_px}; 1 normalised unit = '
                               f'{factor} pixel units (= {std_px}/255)')
    return {
        'task': task,
        'num_images': seen,
        'num_classes': num_classes,
        'seed': seed,
        'device': str(device),
        'autocast': str(amp_dtype).replace('torch.', '') if amp_dtype is not None else None,
        'ignore_index': ignore_index if task == 'segmentation' else None,
        'eps_convention': (
            "Attacks run on [0, 1] pixels (the model's normalisation is applied inside the attacked model). "
            "ε in 'normalized' units is measured in the network's input, as in the FDT/TN paper, and is "
            "converted to pixels by × std (× 256/255 for the papers' (pixel·255 − mean)/256); ε in 'pixel' "
            'units (e.g. 8/255) is used as is. eps_pixel in the JSON is the value the attack used.'),
        'normalization': normalization,
        'attacks': attacks,
        'versions': {'torch': torch.__version__, 'torchattacks': torchattacks.__version__,
                     'timm': timm.__version__, 'timm_normplugins': __version__},
        'eps_display': {s.name: [format_eps(e, s.eps_units) for e in s.eps] for s in specs},
    }
