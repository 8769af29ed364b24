""" scripts/reproduce.py on generated CIFAR-10 files: one row, one short run, the table's files. """
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
import reproduce  # noqa: E402


def lr_per_epoch(flags, epochs, lr=0.1):
    """The learning rate of each epoch index as recipes/train.py builds the schedule from ``flags``."""
    from timm_normplugins.training.config import parse_args
    from timm_normplugins.training.build import build_scheduler
    args = parse_args(['--epochs', str(epochs), '--lr', str(lr), *flags])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler, _ = build_scheduler(args, optimizer)
    return [scheduler._get_lr(t)[0] for t in range(epochs)]


def test_schedule_is_scaled_in_proportion():
    table1 = dict(epochs=150, sched='step', **{'decay-epochs': 30, 'decay-rate': 0.1})
    assert lr_per_epoch(reproduce.scaled_schedule(table1, 5), 5) == pytest.approx([0.1, 1e-2, 1e-3, 1e-4, 1e-5])
    lrs = lr_per_epoch(reproduce.scaled_schedule(table1, 15), 15)
    assert [t for t in range(1, 15) if lrs[t] < lrs[t - 1]] == [3, 6, 9, 12]
    lrs = lr_per_epoch(reproduce.scaled_schedule(table1, 150), 150)
    assert [t for t in range(1, 150) if lrs[t] < lrs[t - 1]] == [30, 60, 90, 120]  # the paper's epochs
    mcel = dict(epochs=500, sched='step', **{'decay-epochs': 1, 'decay-rate': 0.99})
    flags = reproduce.scaled_schedule(mcel, 10)
    assert flags[:4] == ['--sched', 'step', '--decay-epochs', '1']
    assert float(flags[-1]) ** 10 == pytest.approx(0.99 ** 500, rel=1e-4)  # same total decay


def test_one_row_end_to_end(tmp_path):
    from _dataset_files import write_cifar
    write_cifar(tmp_path / 'data', per_batch=8)
    argv = ['--table', 'fdt_tn/table1', '--rows', 'c10_fdt', '--dataset', 'cifar10', '--data-dir',
            str(tmp_path / 'data'), '--epochs', '1', '--seeds', '1', '--max-train-samples', '20',
            '--batch-size', '10', '--num-images', '4', '--attack', 'pgd-paper', '--pgd-steps', '2',
            '--eps', '0.1', '0.01',
            '--train-args', '--workers 0', '--output', str(tmp_path / 'out')]
    assert reproduce.main(argv) == 0
    table = tmp_path / 'out' / 'fdt_tn' / 'table1'
    record = json.loads((table / 'results-cifar10-e1.json').read_text())
    (row,) = record['rows']
    assert row['row'] == 'c10_fdt' and row['paper']['eps_1e-1'] == 13.81 and row['model'] == 'resnet34_cifar'
    assert {'top1', 'top5', 'pgd-paper@0.1', 'pgd-paper@0.1:eq7', 'pgd-paper@0.01'} <= set(row['ours'])
    assert not any('@0.001' in metric for metric in row['ours'])  # --eps replaced the paper's four budgets
    md = (table / 'results-cifar10-e1.md').read_text()
    assert 'ResNet-34 & FDT' in md and 'ε=0.1 eq.7' in md
    assert (table / 'accuracy_vs_eps-cifar10-e1.png').stat().st_size > 1000
    # a rerun finds everything done: no training, no evaluation
    mtime = (table / 'c10_fdt' / 'e1-s0' / 'eval' / 'report.json').stat().st_mtime
    assert reproduce.main(argv) == 0
    assert (table / 'c10_fdt' / 'e1-s0' / 'eval' / 'report.json').stat().st_mtime == mtime
    # a second schedule length, then the comparison across lengths
    longer = list(argv)
    longer[longer.index('--epochs') + 1] = '2'
    assert reproduce.main(longer) == 0
    assert reproduce.main(['--table', 'fdt_tn/table1', '--dataset', 'cifar10', '--compare-lengths',
                           '--output', str(tmp_path / 'out')]) == 0
    assert 'clean top-1, 2 ep.' in (table / 'schedule_lengths-cifar10.md').read_text()
    assert (table / 'schedule_lengths-cifar10.png').exists()


def test_the_plot_takes_the_papers_curve_from_its_budgets():
    paper = {'clean': 93.13, 'clean_std': 0.19, 'eps_1e-1': 13.81, 'eps_1e-2': 66.48, 'eps_1e-4': None}
    assert reproduce._paper_eps_curve(paper) == [(0.01, 66.48), (0.1, 13.81)]


def test_metric_labels_name_whole_grey_levels():
    assert reproduce._metric_label('autoattack@0.0313725') == 'autoattack ε=8/255'
    assert reproduce._metric_label('pgd@0.1') == 'pgd ε=0.1'


def test_control_rows_run_the_literal_count_and_say_they_are_not_in_the_paper(capsys):
    argv = ['--table', 'fdt_tn/controls', '--dataset', 'fashion_mnist', '--epochs', '20', '--seeds', '1',
            '--dry-run', '--output', 'unused']
    assert reproduce.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'fmnist_resnet34_ov_all.yaml' in printed and 'fmnist_resnet34_fdt_all.yaml' in printed
    cfg = reproduce.yaml.safe_load((reproduce.CONFIGS / 'fdt_tn' / 'fmnist_resnet34_ov_all.yaml').read_text())
    assert cfg['fdt-min-images'] == 10 and cfg['mix-method'] == 'ov'
    from timm_normplugins.training import build_mixer, parse_args
    mixer = build_mixer(parse_args(['--config', str(reproduce.CONFIGS / 'fdt_tn' / 'fmnist_resnet34_fdt_all.yaml')]), 10)
    assert (mixer.label, mixer.min_images, mixer.n_max) == ('soft', 10, 10)
    row = dict(label='ResNet-34 & OV, all 10 classes superimposed', paper={}, ours={'top1': dict(mean=90.0, std=0.5, values=[89.5, 90.5])})
    assert reproduce.markdown('t', 's', [row]).splitlines()[-1].endswith('| not in the paper |')
