#!/usr/bin/env python
""" Verdicts on the papers' claims from a reproduce.py result file, by rules fixed in advance: the FDT/TN
paper's Table 1 (below), the WC/GC paper's Table 3 and the MCEL paper's Figure 5 (``wcgc_verdicts``,
``mcel_verdicts``; their rules are in docs/REPRODUCTION.md).

    python scripts/verdicts.py reproduction/fdt_tn/table1/results-fashion_mnist-e20-resnet20.json

Standard error of a row's accuracy (percentage points): over its seeds and its test images together,
``se = sqrt(std_seeds² / n_seeds + p(1 − p) / (n_images · n_seeds))``. The binomial term is an upper
bound for eq. 7 accuracy (a mean over 40 correlated iterates of the same images varies less than one
iterate). A difference of two rows has ``se = sqrt(se_a² + se_b²)``; "significant" means beyond 2 se.

Rules (docs/REPRODUCTION.md states them before any number):
* gate: the baseline's clean top-1 must reach 92 %, else every verdict is "inconclusive (too short)".
* a claim is decided only when every row it compares has its 2 seeds (the design's count); before that it
  is "inconclusive (rows missing)", so an interim one-seed row cannot pass for a verdict.
* C1, FDT ≥ 2× baseline in eq. 7 accuracy at ε = 0.1: reproduced if FDT − baseline > 2 se and
  FDT − 2·baseline > −2 se; not reproduced if FDT − 2·baseline < −2 se; otherwise inconclusive.
* C2, OV between baseline and FDT at ε = 0.1: reproduced if OV − baseline > 2 se and OV − FDT < 2 se;
  not reproduced if OV − baseline < −2 se or OV − FDT > 2 se; otherwise inconclusive.
* Second reading of the PGD protocol (``pgd-foolbox``: random start, valid-pixel clip): C1 and C2 by the
  same rules on its eq. 7 accuracy, written beside the first reading's, never instead of it.
* C3, TN hurts neither clean accuracy nor robustness (TN vs baseline and TN+FDT vs FDT, clean top-1
  and eq. 7 at ε = 0.1 and 0.01): not reproduced if any difference is below −2 se; reproduced otherwise.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import run_name  # noqa: E402  (the run folders' names, one definition)

CLEAN_GATE = 92.0
SECOND_READING = 'pgd-foolbox'  # the PGD protocol read through Foolbox's LinfPGD defaults
MIN_SEEDS = 2
ROWS = {'baseline': 'fmnist_baseline', 'ov': 'fmnist_ov', 'fdt': 'fmnist_fdt', 'tn': 'fmnist_tn',
        'tn_fdt': 'fmnist_tn_fdt'}


def row_stat(record: dict, row: str, key: str, image_se: Optional[dict] = None):
    """(mean, se) of ``key`` for ``row``, or None when that row or metric lacks its ``MIN_SEEDS`` runs.
    ``image_se`` maps (row, key) to the per-seed standard errors over test images to use instead of the
    binomial term."""
    match = next((r for r in record['rows'] if r['row'] == row), None)
    stat = match and match['ours'].get(key)
    if not stat or len(stat['values']) < MIN_SEEDS:
        return None
    n_images = record.get('max_val_samples') or 10000 if key == 'top1' else record.get('num_images') or 100
    n_seeds, p = len(stat['values']), stat['mean'] / 100
    per_seed = (image_se or {}).get((row, key))
    images_var = (sum(se ** 2 for se in per_seed) / n_seeds ** 2 if per_seed and len(per_seed) == n_seeds
                  else 1e4 * p * (1 - p) / (n_images * n_seeds))
    return stat['mean'], math.sqrt((stat['std'] ** 2) / n_seeds + images_var)


def image_se_from_reports(record: dict, table_dir: Path) -> dict:
    """Per-seed standard errors of eq. 7 accuracy over the test images (``stderr_eq7`` of each run's
    eval/report.json): the spread of the images' per-iterate means, tighter than the binomial bound."""
    out = {}
    naming = SimpleNamespace(epochs=record['epochs'], variant=record.get('variant'))
    for row in record['rows']:
        for seed in range(len(next(iter(row['ours'].values()))['values'])):
            report = table_dir / row['row'] / run_name(naming, seed) / 'eval' / 'report.json'
            if not report.exists():
                continue
            model = json.loads(report.read_text())['models'].get(row['row'], {})
            for cell in model.get('attacks', {}).get('pgd-paper', []):
                out.setdefault((row['row'], f'pgd-paper@{cell["eps"]:g}:eq7'), []).append(cell['stderr_eq7'])
    return out


def _diff(a, b, scale_b=1.0):
    return a[0] - scale_b * b[0], math.sqrt(a[1] ** 2 + (scale_b * b[1]) ** 2)


def verdicts(record: dict, rows=ROWS, image_se: Optional[dict] = None, attack: str = 'pgd-paper') -> dict:
    """The claims' verdicts under ``attack``'s eq. 7 numbers: ``pgd-paper`` (eq. 6 as written) decides C1-C3;
    ``pgd-foolbox`` (the second reading) re-decides C1 and C2 only, as docs/REPRODUCTION.md fixed in advance."""
    keys = ('top1', f'{attack}@0.1:eq7', f'{attack}@0.01:eq7')
    get = {name: {k: row_stat(record, row, k, image_se) for k in keys} for name, row in rows.items()}
    out = {}
    base_clean = get['baseline']['top1']
    gate = base_clean is not None and base_clean[0] >= CLEAN_GATE
    eps1 = {name: g[keys[1]] for name, g in get.items()}

    def decide(needed, rule):
        if any(x is None for x in needed):
            return dict(verdict='inconclusive (rows missing)')
        if not gate:
            return dict(verdict=f'inconclusive (too short: baseline clean top-1 below {CLEAN_GATE:g} %)')
        return rule()

    def c1():
        gain, gain_se = _diff(eps1['fdt'], eps1['baseline'])
        double, double_se = _diff(eps1['fdt'], eps1['baseline'], 2.0)
        v = ('reproduced' if gain > 2 * gain_se and double > -2 * double_se else
             'not reproduced' if double < -2 * double_se else 'inconclusive')
        return dict(verdict=v, fdt_minus_baseline=[gain, gain_se], fdt_minus_2x_baseline=[double, double_se])

    def c2():
        above, above_se = _diff(eps1['ov'], eps1['baseline'])
        over, over_se = _diff(eps1['ov'], eps1['fdt'])
        v = ('reproduced' if above > 2 * above_se and over < 2 * over_se else
             'not reproduced' if above < -2 * above_se or over > 2 * over_se else 'inconclusive')
        return dict(verdict=v, ov_minus_baseline=[above, above_se], ov_minus_fdt=[over, over_se])

    def c3():
        diffs = {f'{a}-{b}:{k}': _diff(get[a][k], get[b][k]) for a, b in (('tn', 'baseline'), ('tn_fdt', 'fdt'))
                 for k in keys}
        worst = min((d / s if s else 0.0) for d, s in diffs.values())
        return dict(verdict='not reproduced' if worst < -2 else 'reproduced',
                    differences={k: list(v) for k, v in diffs.items()})

    c3_needed = [get[n][k] for n in ('tn', 'baseline', 'tn_fdt', 'fdt') for k in get[n]]
    out['C1: FDT >= 2x baseline at eps 0.1'] = decide([eps1['fdt'], eps1['baseline']], c1)
    out['C2: OV between baseline and FDT at eps 0.1'] = decide([eps1['ov'], eps1['baseline'], eps1['fdt']], c2)
    if attack == 'pgd-paper':
        out['C3: TN hurts neither clean accuracy nor robustness'] = decide(c3_needed, c3)
    out['gate'] = dict(baseline_clean=base_clean, threshold=CLEAN_GATE)
    return out


# ---- WC/GC Table 3 and MCEL Figure 5 at full CIFAR-10 (docs/REPRODUCTION.md, rules fixed 2026-12-04) ----------
WCGC_GATE = 81.87 - 3.0
WCGC_ROWS = {'a_baseline': 't3_c10_a_baseline', 'a_wc': 't3_c10_a_wc', 'a_wn': 't3_c10_a_wn', 'a_ws': 't3_c10_a_ws',
             'a_wc_gc_fully': 't3_c10_a_wc_gc_fully', 'c_baseline': 't3_c10_c_baseline', 'c_wc_gc': 't3_c10_c_wc_gc'}
MCEL_NOISE = (20, 40)


def _gain_rule(diff, half_paper_gain):
    """Reproduced if the gain exceeds 2 se; not reproduced if even its upper bound (+2 se) is below half the
    paper's gain; inconclusive otherwise."""
    d, se = diff
    v = 'reproduced' if d > 2 * se else 'not reproduced' if d + 2 * se < half_paper_gain else 'inconclusive'
    return dict(verdict=v, difference=[d, se])


def wcgc_verdicts(record: dict, rows=WCGC_ROWS) -> dict:
    get = {name: row_stat(record, row, 'top1') for name, row in rows.items()}
    base = get['a_baseline']
    gate = base is not None and base[0] >= WCGC_GATE

    def decide(needed, rule):
        if any(get[n] is None for n in needed):
            return dict(verdict='inconclusive (rows missing)')
        if not gate:
            return dict(verdict=f'inconclusive (too short: model a baseline below {WCGC_GATE:g} %)')
        return rule()

    def w3():
        diffs = {n: _diff(get[n], base) for n in ('a_wn', 'a_ws')}
        v = ('reproduced' if all(d < -2 * se for d, se in diffs.values()) else
             'not reproduced' if any(d >= 0 for d, _ in diffs.values()) else 'inconclusive')
        return dict(verdict=v, differences={n: list(d) for n, d in diffs.items()})

    return {
        'W1: WC+GC fully beats the baseline (model a, no BN)': decide(
            ['a_wc_gc_fully', 'a_baseline'], lambda: _gain_rule(_diff(get['a_wc_gc_fully'], base), 2.60)),
        'W2: WC beats the baseline (model a, no BN)': decide(
            ['a_wc', 'a_baseline'], lambda: _gain_rule(_diff(get['a_wc'], base), 1.57)),
        'W3: WN and WS are below the baseline (model a, no BN)': decide(['a_wn', 'a_ws', 'a_baseline'], w3),
        'W4: WC+GC beats the baseline (model c)': decide(
            ['c_wc_gc', 'c_baseline'], lambda: _gain_rule(_diff(get['c_wc_gc'], get['c_baseline']), 1.66)),
        'gate': dict(baseline_clean=base, threshold=WCGC_GATE),
    }


def mcel_verdicts(record: dict) -> dict:
    levels = {}
    for noise in MCEL_NOISE:
        ce, mcel = (row_stat(record, f'c10_resnet32{m}_noise{noise}', 'top1') for m in ('', '_mcel'))
        if ce is None or mcel is None:
            levels[noise] = None
            continue
        d, se = _diff(mcel, ce)
        levels[noise] = dict(difference=[d, se], outcome='better' if d > 2 * se else 'worse' if d < -2 * se else 'level')
    if any(v is None for v in levels.values()):
        verdict = 'inconclusive (rows missing)'
    else:
        outcomes = [v['outcome'] for v in levels.values()]
        verdict = ('reproduced' if all(o == 'better' for o in outcomes) else
                   'not reproduced' if 'worse' in outcomes or all(o == 'level' for o in outcomes) else 'inconclusive')
    return {'M1: MCEL generalises better than CE under label noise': dict(
        verdict=verdict, levels={f'{n} %': v for n, v in levels.items()})}


def table_verdicts(record: dict) -> dict:
    """The verdicts of the table a result file belongs to (FDT/TN Table 1, WC/GC Table 3, MCEL Figure 5)."""
    table = record.get('table')
    return (wcgc_verdicts(record) if table == 'wcgc/table3' else mcel_verdicts(record) if table == 'mcel/figure5'
            else verdicts(record))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('results', type=Path, help='a results-*.json written by scripts/reproduce.py')
    args = p.parse_args(argv)
    record = json.loads(args.results.read_text())
    if record.get('table') in ('wcgc/table3', 'mcel/figure5'):
        result = table_verdicts(record)
        out = args.results.with_name(args.results.stem.replace('results-', 'verdicts-') + '.json')
        out.write_text(json.dumps(result, indent=2))
        for claim, v in result.items():
            if claim != 'gate':
                print(f'{claim}: {v["verdict"]}')
        print(f'written: {out}')
        return 0
    result = verdicts(record)
    # not the stated rule: the same rules with the tighter per-image se of eq. 7, to show how much the
    # verdicts lean on the binomial bound
    image_se = image_se_from_reports(record, args.results.parent)
    if image_se:
        result['sensitivity: per-image se of eq. 7 (not the stated rule)'] = {
            k: v for k, v in verdicts(record, image_se=image_se).items() if k != 'gate'}
    if any(f'{SECOND_READING}@0.1:eq7' in row['ours'] for row in record['rows']):
        second = verdicts(record, attack=SECOND_READING)
        result[f'second reading: {SECOND_READING}'] = {k: v for k, v in second.items() if k != 'gate'}
    out = args.results.with_name(args.results.stem.replace('results-', 'verdicts-') + '.json')
    out.write_text(json.dumps(result, indent=2))
    for claim, v in result.items():
        if claim.startswith(('sensitivity', 'second reading')):
            print(f'{claim}: ' + '; '.join(f'{c.split(":")[0]} {w["verdict"]}' for c, w in v.items()))
        elif claim != 'gate':
            print(f'{claim}: {v["verdict"]}')
    print(f'written: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
