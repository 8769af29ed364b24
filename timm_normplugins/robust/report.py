""" The robustness report: Markdown in the layout of the FDT/TN paper's Table 1, JSON, and a plot.

``RobustnessResult`` holds every number ``evaluate_robustness`` measured plus its settings:

* ``settings``: attacks (with their one-line descriptions), ε conventions, images, seed, versions...
* ``models[name]['clean']``: ``accuracy`` (%; pixel accuracy for segmentation), ``n``, (``miou``), and for
  classification ``stderr`` (binomial standard error, points)
* ``models[name]['attacks'][attack]``: one row per ε with ``eps`` (the attack's units), ``eps_pixel``,
  ``accuracy`` (final iterate, %), and for PGD ``accuracy_eq7`` (the paper's eq. 7: the mean of
  ``per_iterate``), ``per_iterate`` (x¹..x^T), ``start_accuracy`` (x⁰), ``alpha_pixel``; (``miou``).
"""
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from .attacks import format_eps
from .files import check_output, write_files_atomic

__all__ = ['RobustnessResult', 'REPORT_FILES']

REPORT_FILES = {'markdown': 'report.md', 'json': 'report.json', 'plot': 'accuracy_vs_eps.png'}

# A classifier whose clean accuracy is within this many binomial standard errors of chance (1/classes) is
# reported as at chance: its robust accuracies say nothing (e.g. a collapsed or untrained model, whose flat
# chance-level curve would otherwise pass the other checks).
_CHANCE_SIGMAS = 3.0

# Tolerance (percentage points) of the "smallest ε gives the clean accuracy" sanity check, which only
# runs when the smallest ε is below one grey level of an 8-bit image (larger budgets do change accuracy).
_CLEAN_TOL = 1.0
_CLEAN_EPS_PIXEL = 1 / 255


class RobustnessResult:
    """Numbers and settings of one evaluation; ``write(folder)`` produces the report files."""

    def __init__(self, settings: Mapping[str, Any], models: Mapping[str, Mapping[str, Any]]):
        self.settings = dict(settings)
        self.models = {k: dict(v) for k, v in models.items()}

    # ---- access -------------------------------------------------------------------------------
    def accuracy(self, model: str, attack: Optional[str] = None, eps: Optional[float] = None,
                 metric: str = 'accuracy') -> float:
        """Clean accuracy (``attack=None``) or an attack's ``metric`` at ``eps`` (%)."""
        entry = self.models[model]
        if attack is None:
            return entry['clean'][metric]
        rows = entry['attacks'][attack]
        if eps is None:
            if len(rows) != 1:
                raise ValueError(f'{attack} ran at {len(rows)} ε values; name one')
            return rows[0][metric]
        for row in rows:
            if abs(row['eps'] - eps) <= 1e-12 * max(1.0, abs(eps)):
                return row[metric]
        raise KeyError(f'{attack} did not run at ε={eps}; it ran at {[r["eps"] for r in rows]}')

    def timm_results(self) -> List[Dict[str, Any]]:
        """One dict per model with the fields of timm's ``validate.py`` result, in its order and rounding:
        model, top1, top1_err, top5, top5_err, param_count (millions), img_size, crop_pct, interpolation.

        ``model`` is the timm architecture (timm's ``--model``); ``name`` adds the report's name for it.
        Classification only (timm's validate.py has no segmentation).
        """
        if self.settings.get('task') != 'classification':
            raise ValueError('timm validate results are for classification; this report is '
                             f"{self.settings.get('task')}")
        facts = self.settings.get('model_facts', {})
        results = []
        for name, entry in self.models.items():
            f, clean = facts.get(name, {}), entry['clean']
            top1, top5 = clean['accuracy'], clean.get('top5', float('nan'))
            input_size = f.get('input_size') or [None]
            param_count = f.get('param_count')
            results.append(dict(
                model=f.get('architecture', name),
                top1=round(top1, 4), top1_err=round(100 - top1, 4),
                top5=round(top5, 4), top5_err=round(100 - top5, 4),
                param_count=round(param_count / 1e6, 2) if param_count is not None else None,
                img_size=input_size[-1], crop_pct=f.get('crop_pct'), interpolation=f.get('interpolation'),
                name=name,
            ))
        return results

    @property
    def attack_settings(self) -> List[Dict[str, Any]]:
        return list(self.settings.get('attacks', []))

    def to_dict(self) -> Dict[str, Any]:
        return {'settings': self.settings, 'models': self.models}

    def to_json(self) -> str:
        """report.json: the numbers and settings, and the sanity checks as they came out."""
        return json.dumps(dict(self.to_dict(), sanity_checks=self.sanity_checks()), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> 'RobustnessResult':
        return cls(d['settings'], d['models'])

    @classmethod
    def load(cls, path: Union[str, Path]) -> 'RobustnessResult':
        """Read a ``report.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / REPORT_FILES['json']
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- checks -------------------------------------------------------------------------------
    def sanity_checks(self) -> List[Dict[str, Any]]:
        """Clean accuracy above chance (classification); for every multi-ε attack: accuracy falls with ε, and
        a sub-grey-level smallest ε gives the clean accuracy."""
        checks = []
        for name, entry in self.models.items():
            clean = entry['clean']['accuracy']
            chance = self._chance_check(name, entry['clean'])
            if chance:
                checks.append(chance)
            for attack, rows in entry['attacks'].items():
                rows = sorted(rows, key=lambda r: r['eps'])
                metric = self._headline(attack)
                accs = [r[metric] for r in rows]
                if len(rows) < 2:
                    continue
                if rows[0].get('eps_pixel', rows[0]['eps']) < _CLEAN_EPS_PIXEL:
                    checks.append(dict(model=name, attack=attack, check='smallest ε ≈ clean',
                                       ok=abs(accs[0] - clean) <= _CLEAN_TOL,
                                       detail=f'{accs[0]:.2f} at ε={rows[0]["eps"]:g} vs clean {clean:.2f} '
                                              f'(tolerance {_CLEAN_TOL:g} pp)'))
                checks.append(dict(model=name, attack=attack, check='accuracy falls as ε grows',
                                   ok=all(b <= a for a, b in zip(accs, accs[1:])),
                                   detail=' ≥ '.join(f'{a:.2f}' for a in accs)))
        return checks

    def _chance_check(self, name: str, clean: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """Clean accuracy more than ``_CHANCE_SIGMAS`` standard errors above 1/num_classes (classification)."""
        if self.settings.get('task') != 'classification':
            return None  # pixel accuracy has no chance level: the majority class may cover most pixels
        classes = self.settings.get('num_classes') or {}
        k = classes.get(name) if isinstance(classes, dict) else classes
        n = clean.get('n') or 0
        if not k or k < 2 or not n:
            return None
        p = 1.0 / k
        bar = 100.0 * (p + _CHANCE_SIGMAS * math.sqrt(p * (1 - p) / n))
        acc = clean['accuracy']
        return dict(model=name, attack='clean', check='clean accuracy above chance',
                    ok=acc > bar,
                    detail=f'{acc:.2f} vs chance {100 * p:.2f} with {k} classes; needs > {bar:.2f} '
                           f'({_CHANCE_SIGMAS:g} standard errors with {n} images)'
                           + ('' if acc > bar else ': the model is at chance, its robust accuracies mean nothing'))

    def failed_checks(self) -> List[Dict[str, Any]]:
        return [c for c in self.sanity_checks() if not c['ok']]

    def _attack(self, name: str) -> Dict[str, Any]:
        return next(a for a in self.attack_settings if a['name'] == name)

    def _headline(self, attack: str) -> str:
        """The metric an attack is reported by: eq. 7 for the paper's PGD, else final accuracy."""
        return 'accuracy_eq7' if self._attack(attack).get('eq7') else 'accuracy'

    # ---- Markdown -----------------------------------------------------------------------------
    def _tables(self, attack: Dict[str, Any]):
        seg = self.settings.get('task') == 'segmentation'
        acc = 'pixel accuracy' if seg else 'accuracy'
        if attack['kind'] == 'pgd':
            t = attack['steps']
            tables = [('accuracy', f'final-iterate robust {acc} (x^{t}), %')]
            if attack.get('eq7'):
                tables.insert(0, ('accuracy_eq7',
                                  f"the paper's robust {acc} (eq. 7: mean over iterates x¹..x^{t}), %"))
        else:
            tables = [('accuracy', f'robust {acc}, %')]
        if seg:
            tables.append(('miou', 'final-iterate mIoU, %'))
        return tables

    def markdown(self) -> str:
        s = self.settings
        lines = ['# Robustness report', '']
        lines += [f'- {k}: {v}' for k, v in (
            ('task', s.get('task')), ('data', s.get('data', 'caller-supplied loader')),
            ('images', s.get('num_images')), ('seed', s.get('seed')),
            ('device', s.get('device')), ('autocast', s.get('autocast') or 'off'),
            ('versions', ', '.join(f'{k} {v}' for k, v in s.get('versions', {}).items())),
        )]
        if self.attack_settings:
            lines += ['', '**Input space and ε.** ' + s.get('eps_convention', ''), '']
        else:
            lines += ['', '**Input.** No attack ran: clean accuracy only.', '']
        for name, conv in s.get('normalization', {}).items():
            lines.append(f'- {name}: {conv}')
        if self.attack_settings:
            lines += ['', '**Attacks.**', '']
            lines += [f"- {a['description']}" for a in self.attack_settings]
        lines.append('')
        lines += self._clean_table()
        names = list(self.models)
        for attack in self.attack_settings:
            eps_list = attack['eps']
            units = attack['eps_units']
            for metric, title in self._tables(attack):
                lines += [f"## {attack['name']}: {title}", '']
                head = ['Model', 'Baseline'] + [f'ε = {format_eps(e, units)}' for e in eps_list]
                lines.append('| ' + ' | '.join(head) + ' |')
                lines.append('| --- | ' + ' | '.join('---:' for _ in head[1:]) + ' |')
                for name in names:
                    entry = self.models[name]
                    base = entry['clean'].get(metric, entry['clean']['accuracy'])
                    rows = {r['eps']: r for r in entry['attacks'].get(attack['name'], [])}
                    cells = [f'{rows[e][metric]:.2f}' if e in rows else '–' for e in eps_list]
                    lines.append('| ' + ' | '.join([name, f'{base:.2f}'] + cells) + ' |')
                lines.append('')
        checks = self.sanity_checks()
        if checks:
            lines += ['## Sanity checks', '']
            lines += [f"- {'✓' if c['ok'] else '⚠'} {c['model']} / {c['attack']}: {c['check']} ({c['detail']})"
                      for c in checks]
            lines.append('')
        timing = [(n, a, sum(r.get('seconds', 0.0) for r in rows))
                  for n, e in self.models.items() for a, rows in e['attacks'].items()]
        if timing:
            lines += ['## Time', '']
            lines += [f'- {n} / {a}: {t:.1f} s' for n, a, t in timing]
            lines.append('')
        return '\n'.join(lines)

    def _clean_table(self) -> List[str]:
        """Clean accuracy of every model (and how precise an accuracy from this many images is)."""
        seg = self.settings.get('task') == 'segmentation'
        if seg:
            lines = ['## Clean accuracy', '', '| Model | pixel accuracy, % | mIoU, % | labelled pixels |',
                     '| --- | ---: | ---: | ---: |']
            lines += [f"| {name} | {e['clean']['accuracy']:.2f} | {e['clean'].get('miou', float('nan')):.2f} | "
                      f"{e['clean'].get('n', '–')} |" for name, e in self.models.items()]
            return lines + ['']
        lines = ['## Clean accuracy', '', '| Model | top-1 accuracy, % | standard error, points | images |',
                 '| --- | ---: | ---: | ---: |']
        for name, e in self.models.items():
            c = e['clean']
            se = f"{c['stderr']:.2f}" if 'stderr' in c else '–'
            lines.append(f"| {name} | {c['accuracy']:.2f} | {se} | {c.get('n', '–')} |")
        n = self.settings.get('num_images')
        if n:
            lines += ['', f'With {n} images an accuracy of p % has a standard error of √(p·(100 − p)/{n}) points, '
                          f'at most {50 / n ** 0.5:.1f} (p = 50); every cell of report.json carries its `stderr` '
                          "(eq. 7: `stderr_eq7`, from the spread of the images' per-iterate means)."]
        return lines + ['']

    # ---- plot ---------------------------------------------------------------------------------
    def plot(self, path: Union[str, Path]) -> Path:
        """Accuracy vs ε (log axis), one panel per attack, one colour per model."""
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt

        attacks = self.attack_settings
        if not attacks:
            raise ValueError('no attack ran: there is no accuracy-vs-ε curve to plot (the clean accuracy is in '
                             'the Markdown report)')
        n = len(attacks)
        fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
        colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
        seg = self.settings.get('task') == 'segmentation'
        for ax, attack in zip(axes[0], attacks):
            for i, (name, entry) in enumerate(self.models.items()):
                c = colors[i % len(colors)]
                rows = sorted(entry['attacks'].get(attack['name'], []), key=lambda r: r['eps'])
                if not rows:
                    continue
                eps = [r['eps'] for r in rows]
                if attack.get('eq7'):
                    ax.plot(eps, [r['accuracy_eq7'] for r in rows], 'o-', color=c, label=f'{name} (eq. 7)')
                    ax.plot(eps, [r['accuracy'] for r in rows], 's--', color=c, alpha=0.7,
                            label=f'{name} (final iterate)')
                else:
                    ax.plot(eps, [r['accuracy'] for r in rows], 'o-', color=c, label=name)
                ax.axhline(entry['clean']['accuracy'], color=c, ls=':', lw=1)
            ax.set_xscale('log')
            units = 'normalised units' if attack['eps_units'] == 'normalized' else 'pixels, [0, 1] scale'
            ax.set_xlabel(f'ε ({units})')
            ax.set_ylabel(('pixel accuracy' if seg else 'accuracy') + ' (%)  · dotted: clean')
            ax.set_title(attack['name'])
            ax.set_ylim(-2, 102)
            ax.grid(True, which='both', alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    # ---- files --------------------------------------------------------------------------------
    def write(self, output: Union[str, Path]) -> Dict[str, Path]:
        """Write ``report.md``, ``report.json`` and, when an attack ran, ``accuracy_vs_eps.png`` into ``output``.

        All or nothing: the files are written to temporaries, flushed to disk and then renamed over the
        previous report, so a full disk or a kill leaves the previous report whole
        (``ReportOutputError`` names the file that could not be written).
        """
        out = check_output(output, list(REPORT_FILES.values()))
        paths = {k: out / v for k, v in REPORT_FILES.items()}
        markdown, text = self.markdown(), self.to_json()

        def writer(content):
            def write(tmp: Path):
                with open(tmp, 'w', encoding='utf-8') as f:
                    f.write(content)
            return write
        files = [(paths['markdown'], writer(markdown)), (paths['json'], writer(text))]
        if self.attack_settings:
            files.append((paths['plot'], self.plot))
        write_files_atomic(files)
        if not self.attack_settings:  # clean accuracy only: no empty plot, and none left from an earlier run
            paths.pop('plot').unlink(missing_ok=True)
        return paths

    def __repr__(self) -> str:
        return f'RobustnessResult(models={list(self.models)}, attacks={[a["name"] for a in self.attack_settings]})'
