""" evaluate's report folder as real faults meet it: an unusable ``--output`` is found before any attack, a full
disk leaves the previous report whole, a kill -9 in the middle loses only the unfinished cell, and a rerun
with another model or other images never takes a cell of the earlier run. A model at chance fails the
report's sanity checks.

The CLI runs in subprocesses (a kill, a file-size limit); the identity checks run in-process on tiny models.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import timm_normplugins  # noqa: F401
from timm_normplugins import save_model
from timm_normplugins.models._paper_cfg import PAPER_MEAN, PAPER_STD
from timm_normplugins.robust import PGDSpec, RobustnessResult, evaluate_robustness

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(layers=(1, 1, 1, 1), channels=(8, 8, 16, 16), stem_width=8)
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(timm.create_model('resnet34_tn', num_classes=10, **TINY),
                      tmp_path_factory.mktemp('ckpt') / 'tn' / 'model.safetensors')


def _cli(*args, cwd, timeout=600, preexec=None):
    return subprocess.run([sys.executable, '-m', 'timm_normplugins', 'evaluate', '--dataset', 'digits',
                           '--no-progress', '--workers', '0', *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout, preexec_fn=preexec)


def _one_line_error(proc, match):
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('error:')]
    assert len(errors) == 1 and match in errors[0], proc.stderr[-3000:]
    return errors[0]


# ------------------------------------------------------------------------------- unusable --output

def _output_is_a_file(tmp):
    (tmp / 'out').write_text('not a folder')
    return tmp / 'out', 'is a file, not a folder'


def _report_is_a_symlink_outside(tmp):
    (tmp / 'precious.txt').write_text('keep me')
    (tmp / 'out').mkdir()
    (tmp / 'out' / 'report.md').symlink_to(tmp / 'precious.txt')
    return tmp / 'out', 'report.md is a symlink'


def _cells_is_a_symlink(tmp):
    (tmp / 'elsewhere').mkdir()
    (tmp / 'out').mkdir()
    (tmp / 'out' / 'cells').symlink_to(tmp / 'elsewhere')
    return tmp / 'out', 'cells is a symlink'


def _report_is_a_folder(tmp):
    (tmp / 'out' / 'report.json').mkdir(parents=True)
    return tmp / 'out', 'report.json is a folder'


def _below_a_file(tmp):
    (tmp / 'plain').write_text('x')
    return tmp / 'plain' / 'sub' / 'out', 'is not a folder'


def _not_creatable(tmp):
    return Path('/proc/self/reports'), 'is not writable'


@pytest.mark.parametrize('make', [_output_is_a_file, _report_is_a_symlink_outside, _cells_is_a_symlink,
                                  _report_is_a_folder, _below_a_file, _not_creatable])
def test_unusable_output_is_one_line_before_anything_runs(checkpoint, tmp_path, make):
    out, match = make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file() and not p.is_symlink()}
    proc = _cli('--checkpoint', checkpoint, '--attack', 'pgd', '--num-images', 10, '--output', out, cwd=tmp_path)
    line = _one_line_error(proc, match)
    assert str(out) in line
    assert 'images of' not in proc.stdout and 'running' not in proc.stdout  # before the data and the attack
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file() and not p.is_symlink()} == before


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_output_is_one_line(checkpoint, tmp_path):
    out = tmp_path / 'ro'
    out.mkdir()
    out.chmod(0o500)
    try:
        _one_line_error(_cli('--checkpoint', checkpoint, '--attack', '--output', out, cwd=tmp_path), 'not writable')
    finally:
        out.chmod(0o700)


def test_a_symlinked_results_file_is_refused(checkpoint, tmp_path):
    (tmp_path / 'precious.csv').write_text('keep me')
    (tmp_path / 'results.csv').symlink_to(tmp_path / 'precious.csv')
    proc = _cli('--checkpoint', checkpoint, '--attack', '--num-images', 10, '--output', tmp_path / 'r',
                '--results-file', tmp_path / 'results.csv', cwd=tmp_path)
    _one_line_error(proc, 'results.csv is a symlink')
    assert (tmp_path / 'precious.csv').read_text() == 'keep me' and not (tmp_path / 'r').exists()


# ----------------------------------------------------------------------------------- a full disk

def _limited(limit):
    def preexec():  # RLIMIT_FSIZE stands in for a full disk: a write past it fails with EFBIG
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_full_disk_leaves_the_previous_report_whole(checkpoint, tmp_path):
    out = tmp_path / 'r'
    args = ('--checkpoint', checkpoint, '--attack', 'pgd-paper', '--steps', 2, '--eps', 0.1, 0.01,
            '--num-images', 20, '--output', out)
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    old = {name: (out / name).read_bytes() for name in ('report.md', 'report.json', 'accuracy_vs_eps.png')}
    assert len(old['report.json']) > 4096  # the limit below cuts it
    proc = _cli(*args[:-2], '--seed', 1, '--output', out, cwd=tmp_path, preexec=_limited(4096))
    line = _one_line_error(proc, 'could not write')
    assert 'File too large' in line and 'previous file is unchanged' in line
    assert {name: (out / name).read_bytes() for name in old} == old  # none of them new, none cut
    assert not [p.name for p in out.iterdir() if '.tmp' in p.name]


# ------------------------------------------------------------------------------- kill -9 and resume

def _numbers(report):
    """Every number of a report (report.json or its models) except the time taken."""
    models = json.loads(report.read_text())['models'] if isinstance(report, Path) else json.loads(json.dumps(report))
    for entry in models.values():
        for rows in entry['attacks'].values():
            for row in rows:
                row.pop('seconds')
    return models


def test_killed_evaluation_resumes_its_finished_cells(checkpoint, tmp_path):
    out = tmp_path / 'r'
    args = ['--checkpoint', checkpoint, '--attack', 'pgd', '--steps', 4, '--eps', 0.01, 0.02, 0.03, 0.04,
            '--num-images', 60, '--output', out]
    cmd = [sys.executable, '-m', 'timm_normplugins', 'evaluate', '--dataset', 'digits', '--no-progress',
           '--workers', '0', *map(str, args)]
    proc = subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = out / 'cells'
    deadline = time.monotonic() + 600
    try:
        while not (cells.is_dir() and any(p.suffix == '.json' for p in cells.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, 'the evaluation ended before its first cell'
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-evaluation: the first cell done, the second running
        proc.wait()
    finished = {p.name: p.read_bytes() for p in cells.glob('*.json')}
    assert 1 <= len(finished) < 4 and not (out / 'report.json').exists()

    resumed = _cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'reused {len(finished)} finished cell(s)' in resumed.stderr
    assert {name: (cells / name).read_bytes() for name in finished} == finished  # taken, not recomputed
    fresh = _cli(*args[:-1], tmp_path / 'fresh', cwd=tmp_path)
    assert fresh.returncode == 0 and 'reused' not in fresh.stderr
    assert _numbers(out / 'report.json') == _numbers(tmp_path / 'fresh' / 'report.json')
    assert not [p.name for p in out.rglob('*') if '.tmp' in p.name]


# ------------------------------------------------------------------- identity: never two runs mixed

N_CLASSES = 10


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, N_CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=g))
        model[1].bias.copy_(torch.randn(model[1].bias.shape, generator=g))
    return model.eval()


def _loader(seed=1, n=12, shuffle=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g).float() / 255
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=5, shuffle=shuffle)


SPECS = (PGDSpec(eps=(0.1, 0.01), steps=3), PGDSpec(name='pgd-rs', eps=(0.05,), steps=2, random_start=True))


def _run(out, model=None, loader=None, specs=SPECS, **kwargs):
    return evaluate_robustness(model or _model(), loader or _loader(), specs, mean=PAPER_MEAN, std=PAPER_STD,
                               output=out, progress=False, **kwargs)


def _reused(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith('reused')]


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('change', ['weights', 'images', 'seed', 'steps', 'structure'])
def test_a_changed_run_recomputes_its_cells(tmp_path, caplog, change):
    caplog.set_level('INFO')
    _run(tmp_path / 'r')
    again = _run(tmp_path / 'r')
    assert _reused(caplog) == [f'reused 3 finished cell(s) from {tmp_path / "r" / "cells"}: Sequential / pgd-paper '
                               'ε=0.1, Sequential / pgd-paper ε=0.01, Sequential / pgd-rs ε=0.05']
    assert _numbers(again.models) == _numbers(_run(tmp_path / 'plain').models)
    caplog.clear()
    kwargs = dict(model=_model(), loader=_loader(), specs=SPECS)
    if change == 'weights':
        kwargs['model'] = _model(seed=5)
    elif change == 'images':
        kwargs['loader'] = _loader(seed=2)
    elif change == 'seed':
        kwargs['seed'] = 3
    elif change == 'steps':  # the other attack is unchanged: its cell may be taken
        kwargs['specs'] = (PGDSpec(eps=(0.1, 0.01), steps=4), SPECS[1])
    elif change == 'structure':  # the same weights computing another function (e.g. TN's grad=): not the same model
        kwargs['model'] = nn.Sequential(*_model(), nn.Softmax(dim=1))
    changed = _run(tmp_path / 'r', **kwargs)
    reused = _reused(caplog)
    fresh = _run(tmp_path / f'fresh-{change}', **kwargs)
    if change == 'steps':
        assert len(reused) == 1 and reused[0].startswith('reused 1 finished cell(s)') and 'pgd-rs' in reused[0]
    else:
        assert not reused
    assert _numbers(changed.models) == _numbers(fresh.models)
    assert any('recomputing' in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures('one_thread')
def test_a_shuffling_loader_is_refused(tmp_path):
    with pytest.raises(ValueError, match='loader gave other images'):
        _run(tmp_path / 'r', loader=_loader(shuffle=True, n=40))


# -------------------------------------------------------------------------------- model at chance

def _result(accuracy, n=1000, classes=10):
    return RobustnessResult({'task': 'classification', 'num_classes': {'m': classes}, 'attacks': []},
                            {'m': {'clean': {'accuracy': accuracy, 'n': n}, 'attacks': {}}})


@pytest.mark.parametrize('accuracy, n, ok', [(10.0, 1000, False), (11.5, 1000, False), (13.0, 1000, True),
                                             (20.0, 40, False), (90.0, 40, True)])
def test_clean_accuracy_at_chance_fails_the_sanity_check(accuracy, n, ok):
    check, = _result(accuracy, n).sanity_checks()
    assert check['check'] == 'clean accuracy above chance' and check['ok'] is ok
    assert ('at chance' in check['detail']) is not ok
    assert ('⚠ m / clean: clean accuracy above chance' in _result(accuracy, n).markdown()) is not ok


@pytest.mark.usefixtures('one_thread')
def test_a_model_that_ignores_its_input_is_reported_at_chance(tmp_path):
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.arange(N_CLASSES, dtype=torch.float32))

        def forward(self, x):
            return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]

    x = torch.rand(200, 3, 4, 4)
    y = torch.arange(200) % N_CLASSES  # balanced: a constant prediction is right for 10 %
    result = evaluate_robustness(Constant(), DataLoader(TensorDataset(x, y), batch_size=50), [SPECS[0]],
                                 mean=PAPER_MEAN, std=PAPER_STD, output=tmp_path, progress=False)
    failed = result.failed_checks()
    assert [c['check'] for c in failed] == ['clean accuracy above chance']
    saved = json.loads((tmp_path / 'report.json').read_text())
    assert [c['ok'] for c in saved['sanity_checks'] if c['attack'] == 'clean'] == [False]
    assert RobustnessResult.load(tmp_path).models == result.models
