""" Real faults at the run folder's edges (issue 23, item 3): start-up checks before the folder exists, SIGTERM and
SIGINT leave a resumable run that says so, symlinks planted in a run folder are refused, every committed file is
fsynced before its rename (observed with strace), and no process waits in a barrier for the closing attack. """
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_fault_injection import REPO, TINY, TRAIN, _latest, finish, kill9_tree, launch, run_inproc, wait_for

from timm_normplugins.loss import save_similarity, uniform_similarity
from timm_normplugins.training import ConfigError

ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def _train(*argv, timeout=300, prefix=()):
    return subprocess.run([*prefix, sys.executable, str(TRAIN), *map(str, argv)], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=timeout)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


# --- every start-up check before the run folder exists -------------------------------------------------------

@pytest.mark.parametrize('flags, named', [
    (['--seed', '-1'], '--seed'),
    (['--log-interval', '0'], '--log-interval'),
    (['--decay-epochs', '0'], '--decay-epochs'),
    (['--similarity', 'missing.safetensors', '--loss', 'mcel'], '--similarity missing.safetensors: no such file'),
    (['--similarity', '{corrupt}', '--loss', 'mcel'], '--similarity'),
    (['--similarity', '{k3}', '--loss', 'mcel'], 'a 3-class matrix for 10 classes'),
    (['--num-classes', '3'], '--num-classes 3: digits has 10 classes'),
    (['--num-classes', '1000'], '--num-classes 1000: digits has 10 classes'),
    (['--model-kwargs', 'bogus=1'], 'bogus'),
])
def test_bad_start_is_one_line_and_leaves_no_folder(tmp_path, flags, named):
    corrupt, k3 = tmp_path / 'corrupt.safetensors', tmp_path / 'k3.safetensors'
    corrupt.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": truncated')
    save_similarity(k3, uniform_similarity(3))
    flags = [f.format(corrupt=corrupt, k3=k3) for f in flags]
    out = tmp_path / 'runs'
    proc = _train(*TINY, '--output', out, *flags)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert named in _last_line(proc.stderr), proc.stderr[-2000:]
    assert not out.exists() or list(out.iterdir()) == []


# --- SIGTERM / SIGINT: summary.json says interrupted, --resume continues ----------------------------------------

@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_an_interrupted_resumable_run(tmp_path, sig):
    run = tmp_path / 'run'
    proc = launch([*TINY, '--epochs', '3', '--output', tmp_path, '--experiment', 'run'], tmp_path / 'run.log')
    wait_for(proc, lambda: _latest(run) == 'epoch_1', 'epoch 1 saved')
    os.kill(proc.pid, sig)
    rc, log = finish(proc)
    assert rc == 128 + sig, log[-3000:]
    assert re.search(rf'interrupted by {sig.name}; summary.json says so', log.strip().splitlines()[-1]), log[-2000:]
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'].startswith(f'interrupted ({sig.name}); continue with --resume'), summary['status']
    rc, log = finish(launch(['--resume', run], tmp_path / 'resume.log'))
    assert rc == 0, log[-3000:]
    assert json.loads((run / 'summary.json').read_text())['status'] == 'finished'


def test_stop_after_epochs_is_recorded_as_interrupted(tmp_path):
    run = run_inproc(tmp_path, '--stop-after-epochs', '1')
    assert json.loads((run / 'summary.json').read_text())['status'].startswith('interrupted (--stop-after-epochs)')


def test_malformed_history_rows_are_named_and_change_nothing(tmp_path):
    run = run_inproc(tmp_path, '--stop-after-epochs', '1')
    (run / 'state' / 'epoch_1' / 'training_state.json').write_text('{"processes": 1, "scheduler": {}, "format": 2, '
                                                                    '"progress": {"epoch": 1, "history": [{}]}}')
    with pytest.raises(Exception, match='progress record'):
        run_inproc(tmp_path, '--resume', str(run))
    status = json.loads((run / 'summary.json').read_text())['status']
    assert status.startswith('interrupted (--stop-after-epochs)')  # a refused resume changes nothing


# --- symlinks inside a run folder: refused, nothing written outside ------------------------------------------

@pytest.mark.parametrize('link', ['run.lock', 'robustness/report.md', 'summary.json', 'state/epoch_1/optimizer.bin'])
def test_symlink_in_a_run_folder_is_refused(tmp_path, link):
    run = run_inproc(tmp_path, '--stop-after-epochs', '1')
    outside = tmp_path / 'outside.txt'
    outside.write_text('precious\n')
    (run / link).parent.mkdir(parents=True, exist_ok=True)
    (run / link).unlink(missing_ok=True)
    (run / link).symlink_to(outside)
    with pytest.raises(ConfigError, match=rf'{re.escape(str(run / link))} is a symlink'):
        run_inproc(tmp_path, '--resume', str(run))
    assert outside.read_text() == 'precious\n'


# --- fsync where docs/RECIPES.md promises durability ----------------------------------------------------------

def test_every_committed_file_is_fsynced_before_and_after_its_rename(tmp_path):
    if shutil.which('strace') is None:
        pytest.skip('strace is not installed')
    trace = tmp_path / 'trace'
    out = tmp_path / 'out'
    proc = _train(*TINY, '--epochs', '1', '--output', out, '--experiment', 'run', timeout=600,
                  prefix=['strace', '-f', '-qq', '-e', 'trace=openat,fsync,rename', '-o', str(trace)])
    if 'ptrace' in proc.stderr and proc.returncode != 0:
        pytest.skip(f'strace cannot trace here: {proc.stderr.strip()[:200]}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    open_fds, synced, renamed = {}, [], []  # (pid, fd) -> path; paths in the order they were fsynced / renamed
    for line in trace.read_text().splitlines():
        m = re.match(r'(\d+) +openat\(AT_FDCWD, "([^"]+)".*\) = (\d+)$', line)
        if m:
            open_fds[m[1], m[3]] = m[2]
        m = re.match(r'(\d+) +fsync\((\d+)\) += 0', line)
        if m:
            synced.append(open_fds.get((m[1], m[2])))
        m = re.match(r'(\d+) +rename\("([^"]+)", "([^"]+)"\) = 0', line)
        if m and m[3].startswith(str(out)) and not re.search(r'\.(tmp|partial)(/|$)', m[3]):
            renamed.append((m[2], m[3], len(synced)))
    names = {Path(dst).name for _, dst, _ in renamed}
    assert {'model.safetensors', 'metrics.csv', 'summary.json', 'args.yaml', 'LATEST', 'epoch_1'} <= names
    for tmp, dst, at in renamed:
        assert tmp in synced[:at], f'{tmp} renamed to {dst} without an fsync'
        assert str(Path(dst).parent) in synced[at:], f'the folder of {dst} not fsynced after the rename'


# --- no barrier waits for the end-of-training attack ---------------------------------------------------------

def test_other_processes_do_not_wait_for_the_attack(tmp_path):
    """Two processes: while the main process attacks, the other has already ended (it sits in no barrier)."""
    run = tmp_path / 'run'
    proc = launch([*TINY, '--epochs', '1', '--eval-attack', 'pgd-paper', '--eval-num-images', '100', '--output',
                   tmp_path, '--experiment', 'run'], tmp_path / 'run.log', processes=2)
    try:
        wait_for(proc, lambda: _latest(run) == 'epoch_1', 'epoch 1 saved')
        workers = lambda: [p for p in _python_children(proc.pid) if 'train.py' in _cmdline(p)]  # noqa: E731
        wait_for(proc, lambda: len(workers()) == 1, 'one worker left while the attack runs', timeout=120)
        # the old barrier let the second process go only after summary.json said finished
        assert json.loads((run / 'summary.json').read_text())['status'] == 'running'
    except BaseException:
        kill9_tree(proc)
        raise
    rc, log = finish(proc)
    assert rc == 0, log[-3000:]
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['robustness'] is not None and summary['processes'] == 2


def _python_children(pid):
    from test_fault_injection import _descendants
    return _descendants(pid)


def _cmdline(pid) -> str:
    try:
        return Path(f'/proc/{pid}/cmdline').read_bytes().replace(b'\0', b' ').decode()
    except OSError:
        return ''
