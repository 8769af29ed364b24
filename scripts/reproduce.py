#!/usr/bin/env python
""" Reproduce a table of the papers: train its rows with recipes/train.py, evaluate, tabulate.

    python scripts/reproduce.py --table fdt_tn/table1 --dataset cifar10 --data-dir ../shared/datasets/cifar10 \\
        --dataset-as imagefolder --epochs 15 --seeds 2 --attack pgd-paper autoattack --num-images 1000

* Rows come from ``recipes/configs/<paper>/tables.yaml`` (filter with --rows / --dataset); each runs its
  config with the paper's schedule scaled to --epochs (same proportions: Table 1's x0.1 every 30 of 150
  epochs becomes x0.1 at 20/40/60/80% of the run), for every seed.
* Every checkpoint is evaluated on --num-images test images with --attack (the FDT/TN paper's PGD
  protocol, AutoAttack, ...); clean top-1/top-5 come from the training run's validation.
* Writes ``<output>/<paper>/<table>/results-[<dataset>-]e<epochs>[-<variant>].{json,md}`` (mean ± std
  over seeds, the paper's numbers beside ours) and ``accuracy_vs_eps-....png``. Resumable: a rerun skips finished runs
  and evaluations and continues interrupted trainings (--resume).
"""
import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'recipes' / 'configs'
TRAIN = REPO / 'recipes' / 'train.py'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--table', required=True, help='<paper>/<table>, e.g. fdt_tn/table1, wcgc/table3, mcel/table1')
    p.add_argument('--rows', nargs='*', default=None, help='row ids (default: all runnable rows)')
    p.add_argument('--dataset', default=None, help='keep the rows of this dataset')
    p.add_argument('--data-dir', default=None)
    p.add_argument('--dataset-as', default=None, help="read the data as this dataset type instead, e.g. "
                                                      "'imagefolder' for the JPEG tar copy of CIFAR-10")
    p.add_argument('--epochs', type=int, default=None, help='length of every run; the schedule is scaled to it')
    p.add_argument('--seeds', type=int, default=1, help='seeds 0..N-1')
    p.add_argument('--max-train-samples', type=int, default=None, help='class-balanced training subset')
    p.add_argument('--max-val-samples', type=int, default=None, help='class-balanced validation subset')
    p.add_argument('--batch-size', type=int, default=None, help="override the config's batch size")
    p.add_argument('--attack', nargs='*', default=['pgd-paper'], help='attacks for the evaluation (none: skip)')
    p.add_argument('--num-images', type=int, default=100, help='test images attacked per checkpoint')
    p.add_argument('--autoattack-images', type=int, default=None,
                   help='test images for AutoAttack (default: --num-images); the first ones of the same subset')
    p.add_argument('--device', default='cpu', help='where the evaluations run (training follows --train-args)')
    p.add_argument('--eval-batch-size', type=int, default=100, help='images per attack call')
    p.add_argument('--eval-tag', default='', help='suffix of the evaluation folders (eval-TAG, ...), e.g. for '
                   'another --num-images; tabulated on their own, in results-...-TAG.{json,md}')
    p.add_argument('--pgd-steps', type=int, default=None, help='override PGD steps (smoke tests only)')
    p.add_argument('--eps', type=float, nargs='+', default=None,
                   help="PGD budgets, the paper's normalised units (default: the attack's, 1e-1..1e-4)")
    p.add_argument('--train-args', default='', help='extra recipes/train.py flags, e.g. "--mixed-precision bf16"')
    p.add_argument('--stand-in', nargs='*', default=[], metavar='CONFIG_MODEL=MODEL',
                   help='train MODEL wherever a row\'s config names CONFIG_MODEL (a smaller stand-in for the '
                        'paper\'s network, e.g. resnet34_cifar=cifar_resnet20); give --variant to keep the runs apart')
    p.add_argument('--variant', default='', help='name for runs that change a row with --train-args '
                                                 '(e.g. "eps0.2" with --train-args "--mcel-eps 0.2"): kept apart')
    p.add_argument('--launcher', default=sys.executable, help='how to start train.py, e.g. "accelerate launch"')
    p.add_argument('--output', default='reproduction')
    p.add_argument('--max-minutes', type=float, default=None, help='start no new run after this many minutes')
    p.add_argument('--dry-run', action='store_true', help='print the commands only')
    p.add_argument('--compare-lengths', action='store_true',
                   help='train nothing: tabulate and plot how clean and robust accuracy move with the schedule '
                        'length, from the results-*-e<N>.json already in the table folder')
    args = p.parse_args(argv)
    if args.epochs is None and not args.compare_lengths:
        p.error('--epochs is required (except with --compare-lengths)')
    try:
        args.stand_in = dict(item.split('=', 1) for item in args.stand_in)
    except ValueError:
        p.error(f'--stand-in takes CONFIG_MODEL=MODEL pairs, got {args.stand_in}')
    if args.stand_in and not args.variant:
        p.error('--stand-in changes the rows: name the runs with --variant (e.g. --variant resnet20)')
    return args


def load_table(name: str):
    paper, _, table = name.partition('/')
    path = CONFIGS / paper / 'tables.yaml'
    if not path.exists():
        raise SystemExit(f'unknown paper {paper!r}; papers: {sorted(p.name for p in CONFIGS.iterdir() if p.is_dir())}')
    tables = yaml.safe_load(path.read_text())
    if table not in tables:
        raise SystemExit(f'{paper} has tables {sorted(tables)}, not {table!r}')
    return paper, table, tables[table]


def scaled_schedule(cfg: dict, epochs: int) -> list:
    """Flags that keep the config's step schedule proportional on ``epochs`` epochs."""
    paper_epochs, every, rate = cfg['epochs'], cfg.get('decay-epochs'), cfg.get('decay-rate', 0.1)
    if cfg.get('sched') != 'step' or not every:
        return []
    if every * epochs < paper_epochs:  # more decays than epochs (exponential-like): same total decay
        per_epoch = rate ** (paper_epochs / (every * epochs))
        return ['--sched', 'step', '--decay-epochs', '1', '--decay-rate', f'{per_epoch:.6g}']
    decays = math.ceil(paper_epochs / every) - 1
    # the k-th decay starts epoch index round(k * every * epochs / paper_epochs); timm's multistep
    # scheduler applies milestone m from epoch index m - 1 (its historical convention), hence the + 1
    milestones = sorted({max(1, round(epochs * k * every / paper_epochs)) + 1 for k in range(1, decays + 1)})
    return ['--sched', 'multistep', '--decay-rate', str(rate), '--decay-milestones', *map(str, milestones)]


def trained_model(run_dir: Path) -> str:
    """The model a finished run trained (a stand-in may replace the paper's), from its args.yaml."""
    return yaml.safe_load((run_dir / 'args.yaml').read_text())['model']


def train_command(args, paper, row, seed, run_dir):
    cfg_path = CONFIGS / paper / row['config']
    cfg = yaml.safe_load(cfg_path.read_text())
    cmd = [*shlex.split(args.launcher), str(TRAIN), '--config', str(cfg_path), '--epochs', str(args.epochs),
           *scaled_schedule(cfg, args.epochs), '--seed', str(seed), '--output', str(run_dir.parent),
           '--experiment', run_dir.name, '--eval-attack']
    if args.dataset_as:
        cmd += ['--dataset', args.dataset_as]
    if cfg['model'] in args.stand_in:
        cmd += ['--model', args.stand_in[cfg['model']]]
    for flag in ('data_dir', 'max_train_samples', 'max_val_samples', 'batch_size'):
        if getattr(args, flag) is not None:
            cmd += [f'--{flag.replace("_", "-")}', str(getattr(args, flag))]
    cmd += shlex.split(args.train_args)
    if (run_dir / 'state' / 'LATEST').exists():
        cmd += ['--resume', str(run_dir)]
    return cmd


def run_name(args, seed: int) -> str:
    return f'e{args.epochs}-s{seed}' + (f'-{args.variant}' if args.variant else '')


def finished(run_dir: Path, epochs: int) -> bool:
    summary = run_dir / 'summary.json'
    return summary.exists() and json.loads(summary.read_text())['epochs_done'] >= epochs


EVAL_FOLDERS = ('eval', 'eval_foolbox', 'eval_aa')


def eval_folder(attack: str) -> str:
    """Where a run's report for ``attack`` lands: AutoAttack and the Foolbox reading of the PGD protocol each
    have their own folder, so adding one to finished runs attacks only what is missing."""
    if attack.startswith('autoattack'):
        return 'eval_aa'
    return 'eval_foolbox' if attack == 'pgd-foolbox' else 'eval'


def evaluate(args, run_dir: Path, row: dict):
    """Attack the run's last checkpoint; reports land in run_dir/eval (PGD), run_dir/eval_foolbox
    (``pgd-foolbox``) and run_dir/eval_aa (AutoAttack); a folder with a report is not redone."""
    if not (run_dir / 'model.safetensors').exists():  # weights of some finished runs are not committed
        missing = [f for f in EVAL_FOLDERS if any(eval_folder(a) == f for a in args.attack)
                   and not (run_dir / (f'{f}-{args.eval_tag}' if args.eval_tag else f) / 'report.json').exists()]
        if missing:
            print(f'cannot evaluate {run_dir} ({", ".join(missing)}): its model.safetensors is not there', flush=True)
        return
    for folder in EVAL_FOLDERS:
        attacks = [a for a in args.attack if eval_folder(a) == folder]
        n = args.autoattack_images or args.num_images if folder == 'eval_aa' else args.num_images
        out = run_dir / (f'{folder}-{args.eval_tag}' if args.eval_tag else folder)
        if attacks and not (out / 'report.json').exists():
            _attack(args, run_dir, row, attacks, n, out)


def _attack(args, run_dir: Path, row: dict, names, num_images: int, out: Path):
    import torch

    import timm_normplugins  # noqa: F401
    from timm_normplugins import load_model
    from timm_normplugins.data import create_dataset, create_transform
    from timm_normplugins.robust import evaluate_robustness, pixel_transform, resolve_attacks

    dataset = args.dataset_as or row['dataset']
    test = create_dataset(dataset, args.data_dir, 'test', max_samples=num_images)
    test.transform = pixel_transform(create_transform(test, train=False))
    # AutoAttack keeps its own budget (8/255); --eps and --pgd-steps concern the PGD specs
    pgd_overrides = dict(steps=args.pgd_steps, eps=tuple(args.eps) if args.eps else None)
    attacks = [spec for name in names
               for spec in resolve_attacks(name, **({} if name.startswith('autoattack') else pgd_overrides))]
    model = load_model(run_dir / 'model.safetensors', device=args.device).eval()
    loader = torch.utils.data.DataLoader(test, batch_size=args.eval_batch_size, shuffle=False)
    evaluate_robustness({row['row']: model}, loader, attacks, seed=0, output=out, progress=False,
                        info=dict(dataset=dataset, checkpoint=str(run_dir / 'model.safetensors')))


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                values=values)


def collect(row: dict, run_dirs, tag: str = '') -> dict:
    """Per-seed numbers of one row -> mean/std per metric."""
    per_metric = {}
    for run_dir in run_dirs:
        summary = json.loads((run_dir / 'summary.json').read_text())
        last = summary['last']
        found = {'top1': last.get('val_top1'), 'top5': last.get('val_top5'),
                 'pixel_acc': last.get('val_pixel_acc'), 'miou': last.get('val_miou')}
        for report in (run_dir / (f'{folder}-{tag}' if tag else folder) / 'report.json' for folder in EVAL_FOLDERS):
            if not report.exists():
                continue
            model = next(iter(json.loads(report.read_text())['models'].values()))
            found[f'attack_clean:{report.parent.name}'] = model['clean']['accuracy']
            for attack, entries in model['attacks'].items():
                for e in entries:
                    key = f'{attack}@{e["eps"]:g}'
                    found[key] = e['accuracy']
                    if 'accuracy_eq7' in e:
                        found[key + ':eq7'] = e['accuracy_eq7']
        for k, v in found.items():
            per_metric.setdefault(k, []).append(v)
    return {k: s for k, s in ((k, _mean_std(v)) for k, v in per_metric.items()) if s is not None}


def _fmt(stat, digits=2):
    if stat is None:
        return '–'
    return f'{stat["mean"]:.{digits}f} ± {stat["std"]:.{digits}f}' if len(stat['values']) > 1 else \
        f'{stat["mean"]:.{digits}f}'


def _metric_label(key: str) -> str:
    """'autoattack@0.0313725' -> 'autoattack ε=8/255' (budgets that are whole grey levels read as k/255)."""
    name, eps = key.split('@')
    grey_levels = float(eps) * 255
    eps = f'{round(grey_levels)}/255' if abs(grey_levels - round(grey_levels)) < 1e-3 else eps
    return f'{name} ε={eps}'


def markdown(title, settings, rows) -> str:
    # PGD attacks with eq. 7 numbers get an eq. 7 and a final-iterate column per ε; pgd-paper's are unprefixed
    with_eq7 = sorted({k.split('@')[0] for r in rows for k in r['ours'] if k.endswith(':eq7')},
                      key=lambda a: (a != 'pgd-paper', a))
    eps_keys = [k for attack in with_eq7 for k in sorted(
        {k for r in rows for k in r['ours'] if k.startswith(attack + '@') and not k.endswith(':eq7')},
        key=lambda k: -float(k.split('@')[1]))]
    other = sorted({k for r in rows for k in r['ours'] if '@' in k and k.split('@')[0] not in with_eq7
                    and not k.endswith(':eq7')})
    clean = [k for k in ('top1', 'top5', 'pixel_acc', 'miou') if any(k in r['ours'] for r in rows)]
    head = ['row'] + [f'{k} (ours)' for k in clean]
    for k in eps_keys:
        attack, eps = k.split('@')
        prefix = '' if attack == 'pgd-paper' else f'{attack} '
        head += [f'{prefix}ε={eps} eq.7', f'{prefix}ε={eps} final']
    head += [_metric_label(k) for k in other] + ['paper']
    lines = [f'### {title}', '', settings, '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['label']] + [_fmt(r['ours'].get(k)) for k in clean]
        for k in eps_keys:
            cells += [_fmt(r['ours'].get(k + ':eq7')), _fmt(r['ours'].get(k))]
        cells += [_fmt(r['ours'].get(k)) for k in other]
        cells.append(', '.join(f'{k} {v}' for k, v in r['paper'].items() if v is not None) or 'not in the paper')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _paper_eps_curve(paper: dict):
    """The paper's eq. 7 accuracies as (ε, %) points, from its 'eps_1e-1'-style keys."""
    return sorted((float(k[len('eps_'):]), v) for k, v in paper.items() if k.startswith('eps_') and v is not None)


def plot(rows, path: Path, title: str):
    """PGD eq. 7 accuracy against ε: ours (error bars: std over seeds) solid, the paper's row dashed in the
    same colour, so that a reader sees the size of an effect against the paper's and not only its sign."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for r in rows:
        pts = sorted((float(k.split('@')[1].split(':')[0]), v) for k, v in r['ours'].items()
                     if k.startswith('pgd-paper@') and k.endswith(':eq7'))
        if not pts:
            continue
        seeds = max(len(v.get('values', [])) for _, v in pts)
        line = ax.errorbar([e for e, _ in pts], [v['mean'] for _, v in pts],
                           yerr=[v['std'] for _, v in pts] if seeds > 1 else None, marker='o', capsize=3,
                           label=f'{r["label"]} (ours: {r.get("model", "?")}, {seeds} seed{"s" if seeds > 1 else ""})')
        paper = [(e, v) for e, v in _paper_eps_curve(r.get('paper') or {})
                 if min(e for e, _ in pts) / 1.01 <= e <= max(e for e, _ in pts) * 1.01]
        if paper:
            ax.plot([e for e, _ in paper], [v for _, v in paper], linestyle='--', marker='x', alpha=0.7,
                    color=line[0].get_color(), label=f'{r["label"]} (paper)')
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale('log')
    ax.set_xlabel('ε (normalised units)')
    ax.set_ylabel('PGD-40 accuracy, eq. 7 (%)')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_lengths(out: Path, dataset: str = None):
    """Clean and PGD (eq. 7) accuracy of every row against the schedule length, from the result files."""
    prefix = f'results-{dataset}-e' if dataset else 'results-e'
    records = sorted((json.loads(p.read_text()) for p in out.glob(f'{prefix}*.json') if '-e' in p.stem
                      and not json.loads(p.read_text()).get('variant')), key=lambda r: r['epochs'])
    if len(records) < 2:
        raise SystemExit(f'need results for two schedule lengths in {out}, found {len(records)}')
    metrics = [('top1', 'clean top-1'), ('pgd-paper@0.01:eq7', 'ε=0.01 eq.7'), ('pgd-paper@0.01', 'ε=0.01 final'),
               ('pgd-paper@0.1:eq7', 'ε=0.1 eq.7')]
    lengths = [r['epochs'] for r in records]
    head = ['row'] + [f'{label}, {e} ep.' for _, label in metrics for e in lengths]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    series = {}
    for row in records[0]['rows']:
        cells = [row['label']]
        for key, _ in metrics:
            for rec in records:
                match = next((r for r in rec['rows'] if r['row'] == row['row']), None)
                stat = match['ours'].get(key) if match else None
                cells.append(_fmt(stat))
                series.setdefault((row['label'], key), []).append(stat['mean'] if stat else None)
        lines.append('| ' + ' | '.join(cells) + ' |')
    name = f'schedule_lengths-{dataset}' if dataset else 'schedule_lengths'
    (out / f'{name}.md').write_text('\n'.join(lines) + '\n')
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (metrics[0], metrics[1])):
        for (row_label, k), ys in series.items():
            if k == key:
                ax.plot(lengths, ys, marker='o', label=row_label)
        ax.set_xlabel('epochs')
        ax.set_ylabel(f'{label} (%)')
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f'{name}.png', dpi=110)
    plt.close(fig)
    print('\n'.join(lines))


def main(argv=None):
    args = parse_args(argv)
    paper, table_name, table = load_table(args.table)
    if args.compare_lengths:
        compare_lengths(Path(args.output) / paper / table_name, args.dataset)
        return 0
    rows = [r for r in table['rows'] if 'config' in r and (args.rows is None or r['row'] in args.rows)
            and (args.dataset is None or r.get('dataset') == args.dataset)]
    if not rows:
        raise SystemExit('no runnable row matches --rows/--dataset')
    out = Path(args.output) / paper / table_name
    start = time.time()
    for row in rows:
        for seed in range(args.seeds):
            run_dir = out / row['row'] / run_name(args, seed)
            if not finished(run_dir, args.epochs):
                if args.max_minutes is not None and (time.time() - start) / 60 > args.max_minutes:
                    print(f'time budget used: stopping before {run_dir} (rerun to continue)')
                    break
                cmd = train_command(args, paper, row, seed, run_dir)
                print('+', shlex.join(cmd), flush=True)
                if args.dry_run:
                    continue
                subprocess.run(cmd, check=True, cwd=REPO)
            if not args.dry_run:
                evaluate(args, run_dir, row)
    if args.dry_run:
        return 0
    # tabulate every row with finished runs of this length/variant, also those an earlier --rows call ran
    results = []
    for row in [r for r in table['rows'] if args.dataset is None or r.get('dataset') == args.dataset]:
        runs = [out / row['row'] / run_name(args, s) for s in range(args.seeds)]
        runs = [r for r in runs if finished(r, args.epochs)]
        if runs:
            results.append(dict(row=row['row'], label=row['label'], paper=row.get('paper') or {}, seeds=len(runs),
                                model=trained_model(runs[0]), ours=collect(row, runs, args.eval_tag)))
    has_aa = any(a.startswith('autoattack') for a in args.attack)
    aa = f' (AutoAttack on the first {args.autoattack_images})' if args.autoattack_images and has_aa else ''
    attacks = f'attacks {args.attack} on {args.num_images} test images{aa}' if args.attack else 'no attacks'
    stand_in = ''.join(f', {a} trained as {b}' for a, b in args.stand_in.items())
    settings = (f'{args.epochs} epochs (paper schedule scaled){stand_in}, {args.seeds} seed(s), train subset '
                f'{args.max_train_samples or "all"}, validation subset {args.max_val_samples or "all"}, '
                f'{attacks}; mean ± std over seeds.')
    record = dict(table=args.table, title=table['title'], epochs=args.epochs, seeds=args.seeds, settings=settings,
                  num_images=args.num_images, autoattack_images=args.autoattack_images or args.num_images,
                  max_val_samples=args.max_val_samples,
                  command=shlex.join([sys.executable, 'scripts/reproduce.py', *(argv or sys.argv[1:])]),
                  rows=results)
    stem = f'e{args.epochs}' + (f'-{args.variant}' if args.variant else '') + (f'-{args.eval_tag}' if args.eval_tag else '')
    if args.dataset:
        stem = f'{args.dataset}-{stem}'
    record['variant'] = args.variant
    (out / f'results-{stem}.json').write_text(json.dumps(record, indent=2))
    title = f'{table["title"]}, {args.epochs} epochs' + (f', {args.variant}' if args.variant else '')
    md = markdown(title, settings, results)
    (out / f'results-{stem}.md').write_text(md)
    plot(results, out / f'accuracy_vs_eps-{stem}.png', title)
    print(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
