""" scripts/verdicts.py: the fixed rules turn result numbers into verdicts (synthetic result records). """
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
import verdicts  # noqa: E402

C1, C2, C3 = (k for k in ('C1: FDT >= 2x baseline at eps 0.1', 'C2: OV between baseline and FDT at eps 0.1',
                          'C3: TN hurts neither clean accuracy nor robustness'))


def _stat(*values):
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return dict(mean=mean, std=std, values=list(values))


def _record(clean, eps1, eps01=None, num_images=1000):
    eps01 = eps01 or {k: 80.0 for k in clean}
    rows = [dict(row=verdicts.ROWS[name], ours={'top1': _stat(clean[name], clean[name]),
                                                'pgd-paper@0.1:eq7': _stat(*eps1[name]),
                                                'pgd-paper@0.01:eq7': _stat(eps01[name], eps01[name])})
            for name in clean]
    return dict(rows=rows, num_images=num_images, max_val_samples=None)


CLEAN = dict(baseline=93.0, ov=92.5, fdt=93.0, tn=93.2, tn_fdt=93.1)


def test_the_papers_pattern_reproduces():
    eps1 = dict(baseline=(7, 8), ov=(33, 35), fdt=(36, 37), tn=(9, 10), tn_fdt=(38, 40))
    out = verdicts.verdicts(_record(CLEAN, eps1))
    assert out[C1]['verdict'] == 'reproduced'
    assert out[C2]['verdict'] == 'reproduced'
    assert out[C3]['verdict'] == 'reproduced'


def test_no_gain_is_not_reproduced_and_a_small_gain_is_inconclusive_or_short_of_2x():
    same = dict(baseline=(20, 21), ov=(20, 21), fdt=(20, 21), tn=(20, 21), tn_fdt=(20, 21))
    assert verdicts.verdicts(_record(CLEAN, same))[C1]['verdict'] == 'not reproduced'
    small = dict(baseline=(20, 21), ov=(21, 22), fdt=(24, 25), tn=(20, 21), tn_fdt=(24, 25))
    # a real gain, but clearly short of 2x: not reproduced
    assert verdicts.verdicts(_record(CLEAN, small))[C1]['verdict'] == 'not reproduced'
    # few images: the same means are within noise of both outcomes
    tiny = dict(baseline=(4, 5), ov=(5, 6), fdt=(7, 8), tn=(4, 5), tn_fdt=(7, 8))
    assert verdicts.verdicts(_record(CLEAN, tiny, num_images=50))[C1]['verdict'] == 'inconclusive'


def test_tn_that_hurts_is_caught():
    eps1 = dict(baseline=(7, 8), ov=(33, 35), fdt=(36, 37), tn=(7, 8), tn_fdt=(36, 37))
    clean = dict(CLEAN, tn=88.0)
    out = verdicts.verdicts(_record(clean, eps1))
    assert out[C3]['verdict'] == 'not reproduced'
    assert out[C3]['differences']['tn-baseline:top1'][0] == pytest.approx(-5.0)


def test_short_runs_and_missing_rows_give_no_verdict():
    eps1 = dict(baseline=(7, 8), ov=(33, 35), fdt=(36, 37), tn=(9, 10), tn_fdt=(38, 40))
    short = verdicts.verdicts(_record(dict(CLEAN, baseline=90.0), eps1))
    assert all(short[c]['verdict'].startswith('inconclusive (too short') for c in (C1, C2, C3))
    partial = _record(CLEAN, eps1)
    partial['rows'] = [r for r in partial['rows'] if r['row'] in ('fmnist_baseline', 'fmnist_fdt')]
    out = verdicts.verdicts(partial)
    assert out[C1]['verdict'] == 'reproduced' and out[C2]['verdict'] == 'inconclusive (rows missing)'


def test_a_row_with_one_seed_decides_nothing_yet():
    # OV far above FDT would read "not reproduced" for C2, but with one seed of OV it is not decided yet
    eps1 = dict(baseline=(7, 8), ov=(60,), fdt=(36, 37), tn=(9, 10), tn_fdt=(38, 40))
    out = verdicts.verdicts(_record(CLEAN, eps1))
    assert out[C2]['verdict'] == 'inconclusive (rows missing)' and out[C1]['verdict'] == 'reproduced'
    eps1['ov'] = (60, 61)
    assert verdicts.verdicts(_record(CLEAN, eps1))[C2]['verdict'] == 'not reproduced'


def test_standard_error_combines_seeds_and_images():
    record = _record(CLEAN, dict(baseline=(10, 20), ov=(1, 1), fdt=(1, 1), tn=(1, 1), tn_fdt=(1, 1)))
    mean, se = verdicts.row_stat(record, 'fmnist_baseline', 'pgd-paper@0.1:eq7')
    seeds_var = 50.0 / 2  # std² / n over the two seeds (std² = 50)
    binomial_var = 1e4 * 0.15 * 0.85 / (1000 * 2)
    assert mean == 15 and se == pytest.approx(math.sqrt(seeds_var + binomial_var))


def test_per_image_standard_errors_from_the_run_reports_tighten_the_test(tmp_path):
    """The binomial bound keeps 'FDT doubles the baseline' open; the reports' tighter per-image se of
    eq. 7 can reject it. The stated verdict stays the binomial one; the sensitivity is reported beside it."""
    import json
    eps1 = dict(baseline=(8.3, 7.4), fdt=(12.8, 13.2))
    record = _record({k: CLEAN[k] for k in eps1}, eps1)
    record.update(epochs=20, variant='resnet20')
    for name, se in (('baseline', 0.2), ('fdt', 0.38)):
        for seed in (0, 1):
            run = tmp_path / verdicts.ROWS[name] / f'e20-s{seed}-resnet20' / 'eval'
            run.mkdir(parents=True)
            cells = [dict(eps=0.1, stderr_eq7=se), dict(eps=0.01, stderr_eq7=1.0)]
            (run / 'report.json').write_text(json.dumps(
                {'models': {verdicts.ROWS[name]: {'attacks': {'pgd-paper': cells}}}}))
    image_se = verdicts.image_se_from_reports(record, tmp_path)
    assert image_se[('fmnist_fdt', 'pgd-paper@0.1:eq7')] == [0.38, 0.38]
    assert verdicts.verdicts(record)[C1]['verdict'] == 'reproduced'
    tight = verdicts.verdicts(record, image_se=image_se)[C1]
    assert tight['verdict'] == 'not reproduced'
    double, double_se = tight['fdt_minus_2x_baseline']
    seeds_var = lambda a, b: (a - b) ** 2 / 2 / 2  # std² / n_seeds for two values
    expected = math.sqrt(seeds_var(12.8, 13.2) + 2 * 0.38 ** 2 / 4 + 4 * (seeds_var(8.3, 7.4) + 2 * 0.2 ** 2 / 4))
    assert double == pytest.approx(13.0 - 2 * 7.85) and double_se == pytest.approx(expected)


def test_second_reading_decides_c1_and_c2_from_its_own_numbers():
    """The same record read under pgd-foolbox: C1 flips when only the Foolbox numbers double, C3 is not re-decided."""
    eq6 = dict(baseline=(7, 8), ov=(20, 21), fdt=(9, 10), tn=(7, 8), tn_fdt=(9, 10))
    foolbox = dict(baseline=(2, 2), ov=(20, 21), fdt=(10, 11), tn=(2, 2), tn_fdt=(9, 10))
    record = _record(CLEAN, eq6)
    for row, name in zip(record['rows'], CLEAN):
        row['ours']['pgd-foolbox@0.1:eq7'] = _stat(*foolbox[name])
        row['ours']['pgd-foolbox@0.01:eq7'] = _stat(80.0, 80.0)
    first, second = verdicts.verdicts(record), verdicts.verdicts(record, attack='pgd-foolbox')
    assert first[C1]['verdict'] == 'not reproduced' and second[C1]['verdict'] == 'reproduced'
    assert first[C2]['verdict'] == second[C2]['verdict'] == 'not reproduced'  # OV above FDT in both
    assert C3 in first and C3 not in second
    assert second[C1]['fdt_minus_baseline'][0] == pytest.approx(8.5)


def _top1_record(values: dict):
    return dict(rows=[dict(row=row, ours={'top1': _stat(*v)}) for row, v in values.items()], max_val_samples=None)


def test_wcgc_rules_follow_the_paper_pattern_and_catch_its_absence():
    paper = {'t3_c10_a_baseline': (81.8, 82.0), 't3_c10_a_wc': (84.9, 85.1), 't3_c10_a_wn': (71.6, 71.9),
             't3_c10_a_ws': (72.9, 73.1), 't3_c10_a_wc_gc_fully': (87.0, 87.1), 't3_c10_c_baseline': (84.0, 84.2),
             't3_c10_c_wc_gc': (87.4, 87.5)}
    out = verdicts.wcgc_verdicts(_top1_record(paper))
    assert [v['verdict'] for k, v in out.items() if k != 'gate'] == ['reproduced'] * 4
    flat = dict(paper, t3_c10_a_wc_gc_fully=(81.9, 82.1), t3_c10_a_ws=(82.0, 82.2))
    out = verdicts.wcgc_verdicts(_top1_record(flat))
    w1, w3 = (out[k]['verdict'] for k in out if k.startswith(('W1', 'W3')))
    assert (w1, w3) == ('not reproduced', 'not reproduced')
    short = dict(paper, t3_c10_a_baseline=(70.0, 70.2))
    assert all(v['verdict'].startswith('inconclusive (too short')
               for k, v in verdicts.wcgc_verdicts(_top1_record(short)).items() if k != 'gate')
    one_seed = dict(paper, t3_c10_a_wc=(85.0,))
    assert verdicts.wcgc_verdicts(_top1_record(one_seed))['W2: WC beats the baseline (model a, no BN)'][
        'verdict'] == 'inconclusive (rows missing)'


def test_mcel_rule_needs_a_gain_at_both_noise_levels():
    def record(gain20, gain40):
        return _top1_record({'c10_resnet32_noise20': (80.0, 80.2), 'c10_resnet32_mcel_noise20': (80 + gain20, 80.2 + gain20),
                             'c10_resnet32_noise40': (60.0, 60.2), 'c10_resnet32_mcel_noise40': (60 + gain40, 60.2 + gain40)})
    m1 = 'M1: MCEL generalises better than CE under label noise'
    assert verdicts.mcel_verdicts(record(3.0, 5.0))[m1]['verdict'] == 'reproduced'
    assert verdicts.mcel_verdicts(record(3.0, -3.0))[m1]['verdict'] == 'not reproduced'
    assert verdicts.mcel_verdicts(record(0.0, 0.1))[m1]['verdict'] == 'not reproduced'
    assert verdicts.mcel_verdicts(record(3.0, 0.1))[m1]['verdict'] == 'inconclusive'
    assert verdicts.mcel_verdicts(record(3.0, 5.0))[m1]['levels']['40 %']['outcome'] == 'better'
