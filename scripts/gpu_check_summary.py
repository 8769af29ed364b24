#!/usr/bin/env python
""" Collect the JSON files scripts/gpu_check.sh wrote into one summary with the issue's goals.

    python scripts/gpu_check_summary.py OUT_DIR        # writes OUT_DIR/gpu_check.json and prints it

A missing file (a step that failed or ran out of time) leaves its entries null ("unmeasured").
"""
import json
import sys
from pathlib import Path


def load(folder: Path, name: str):
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def tn_rows(rows):
    if not rows:
        return None
    return {f'{r["tn_kernel"]} {r["dtype"]} {r["mode"]}': {
        'time_ratio': r['time_ratio'], 'peak_ratio': r.get('peak_ratio'), 'saved_ratio': r['saved_ratio'],
        'ms_tn': r['ms_tn'], 'ms_twin': r['ms_twin']} for r in rows}


def main(folder: str) -> int:
    out = Path(folder)
    env = (out / 'env.log').read_text().strip() if (out / 'env.log').exists() else None
    tn = {**(tn_rows(load(out, 'bench_tn_eager.json')) or {}), **(tn_rows(load(out, 'bench_tn_compiled.json')) or {})}
    optim = load(out, 'bench_optim.json')
    mix = load(out, 'bench_mix.json')
    train = load(out, 'bench_train.json')
    epoch = load(out, 'bench_epoch.json')
    summary = {
        'environment': env,
        'tn_step_vs_relu_twin': tn or None,
        'wcgc_vs_base_step': {r['base']: r['ratio_median'] for r in optim} if optim else None,
        'fdtmixup_ms': {f'C={r["classes"]} {r["method"]}': r['ms'] for r in mix} if mix else None,
        'full_stack_over_plain': train,
        'cifar10_epoch': epoch,
    }
    goals = {}
    for mode in ('eager', 'compiled'):
        row = tn.get(f'triton bf16 {mode}')
        goals[f'TN bf16 {mode} step <= 1.03x twin'] = None if row is None else row['time_ratio'] <= 1.03
        goals[f'TN bf16 {mode} peak <= 1.02x twin'] = None if row is None or row['peak_ratio'] is None \
            else row['peak_ratio'] <= 1.02
    sgd = (summary['wcgc_vs_base_step'] or {}).get('sgd', {}).get('wcgc')
    goals['sgd_wcgc step <= 1.1x sgd'] = None if sgd is None else sgd <= 1.1
    goals['full stack <= 1.10x plain'] = None if not train else train['full_over_plain'] <= 1.10
    goals['CIFAR-10 epoch <= 1.5 s'] = None if not epoch else epoch['steady_epoch_s'] <= 1.5
    summary['goals_met'] = {k: ('unmeasured' if v is None else v) for k, v in goals.items()}
    (out / 'gpu_check.json').write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else 'gpu_check'))
