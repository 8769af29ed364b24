""" Fault injection for recipes/train.py (issue 12): runs that must never end with rc 0 and a wrong or lost
result, and data files that must never run code when read.

Real components only: training runs in subprocesses killed with a real SIGKILL at points chosen by watching
the run folder, payloads are real pickles that write a marker file when unpickled naively, the full disk is
a real (small) tmpfs. Everything is tiny (64 digits, 2 epochs) to stay fast on two CPU cores.
"""
import csv
import json
import math
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from timm_normplugins.training import ConfigError, NonFiniteError, StateError, parse_args

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'recipes' / 'train.py'
sys.path.insert(0, str(REPO / 'recipes'))
import train as train_recipe  # noqa: E402

# the main job's methods (TN net, FDT, sgd_wcgc) on 64 digits; the lr steps down after epoch 1
TINY = ['--model', 'cifar_resnet20_tn', '--max-train-samples', '64', '--max-val-samples', '20', '--batch-size', '16',
        '--workers', '0', '--epochs', '2', '--sched', 'step', '--decay-epochs', '1', '--eval-attack',
        '--log-interval', '1']
TIMEOUT = 600


# --- helpers: real subprocesses, real kill -9 ---------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(args, log: Path, processes: int = 1) -> subprocess.Popen:
    """recipes/train.py in its own session (1 process: plain python; 2: accelerate launch, CPU + gloo)."""
    if processes == 1:
        cmd = [sys.executable, str(TRAIN), *map(str, args)]
    else:
        cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(processes),
               '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
               '--main_process_port', str(_free_port()), str(TRAIN), *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    out = open(log, 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
    proc.log = log
    out.close()
    return proc


def finish(proc: subprocess.Popen):
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill9_tree(proc)
        raise
    return rc, proc.log.read_text()


def _descendants(pid: int):
    """Every process below ``pid``, from /proc/PID/task/TID/children (fast: no scan of all of /proc)."""
    out, todo = [], [pid]
    while todo:
        for children in Path(f'/proc/{todo.pop()}/task').glob('*/children'):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:  # the process or thread is gone
                continue
            out += kids
            todo += kids
    return out


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill9_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process it started (torchrun's workers run in sessions of their own).

    The tree is frozen with SIGSTOP first, so the kill lands on all processes at one moment, like a
    machine that loses power.
    """
    _signal_all([proc.pid, *_descendants(proc.pid)], signal.SIGSTOP)
    _signal_all([proc.pid, *_descendants(proc.pid)], signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f'the run ended (rc {proc.returncode}) before the kill point "{what}":\n'
                        + proc.log.read_text()[-3000:])
        if time.time() > deadline:
            kill9_tree(proc)
            pytest.fail(f'timed out waiting for "{what}"')
        time.sleep(0.001)


def _latest(run: Path):
    try:
        return (run / 'state' / 'LATEST').read_text().strip()
    except OSError:
        return None


def _rows(run: Path, drop=('epoch_time',)):
    with open(run / 'metrics.csv') as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def assert_same_run(ref: Path, run: Path) -> None:
    """Weights tensor by tensor and metrics.csv value by value (wall-clock epoch_time aside)."""
    for name in ('model.safetensors', 'model_best.safetensors'):
        a, b = safetensors.torch.load_file(str(ref / name)), safetensors.torch.load_file(str(run / name))
        assert a.keys() == b.keys(), name
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f'{name}: {len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}'
    assert _rows(run) == _rows(ref)


def run_inproc(tmp_path, *extra, experiment='run'):
    assert train_recipe.main([*TINY, '--output', str(tmp_path), '--experiment', experiment, *map(str, extra)]) == 0
    return tmp_path / experiment


# --- 1. kill -9 at any point, then --resume RUN alone: the uninterrupted run, exactly ---------------------

@pytest.mark.parametrize('processes', [1, 2])
def test_kill9_at_any_point_then_resume_alone_is_exact(tmp_path, processes):
    args = [*TINY, '--output', tmp_path]
    rc, log = finish(launch([*args, '--experiment', 'ref'], tmp_path / 'ref.log', processes))
    assert rc == 0, log[-3000:]
    ref, run = tmp_path / 'ref', tmp_path / 'killed'

    def in_epoch_2(proc):
        text = proc.log.read_text()
        return _latest(run) == 'epoch_1' and ('resumed from' in text or 'epoch   1' in text)

    points = [  # (what, condition on the current process, extra delay before the kill)
        ('epoch 1, nothing saved yet', lambda proc: (run / 'args.yaml').exists(), 0.5),
        ('state/epoch_1 being written', lambda proc: (run / 'state' / 'epoch_1.partial').exists()
         or _latest(run) is not None, 0.0),
        ('epoch 2 under way', in_epoch_2, 0.2),
    ]
    proc = launch([*args, '--experiment', 'killed'], tmp_path / 'run0.log', processes)
    for i, (what, condition, delay) in enumerate(points, 1):
        wait_for(proc, lambda: condition(proc), what)
        time.sleep(delay)
        kill9_tree(proc)
        assert proc.returncode == -signal.SIGKILL, what
        print(f'killed at "{what}": state/ holds {sorted(p.name for p in (run / "state").glob("*"))}')
        if processes == 2 and i == len(points):
            # the state was written by 2 processes: a 1-process resume is refused (the data order would change)
            rc, log = finish(launch(['--resume', run], tmp_path / 'one.log', 1))
            assert rc == 1 and 'written by 2 process(es), this launch has 1' in log.strip().splitlines()[-1], log
        proc = launch(['--resume', run], tmp_path / f'run{i}.log', processes)
    rc, log = finish(proc)
    assert rc == 0, log[-3000:]
    assert_same_run(ref, run)
    assert not list(run.glob('state/*.partial')) and _latest(run) == 'epoch_2'


# --- 2. --resume restores the run's settings -----------------------------------------------------------

def test_resume_restores_the_runs_settings(tmp_path):
    first = run_inproc(tmp_path, '--max-train-samples', '40', '--batch-size', '10', '--mixup', 'none', '--loss',
                       'ce', '--stop-after-epochs', '1')
    saved = (first / 'args.yaml').read_bytes()
    # contradicting flags are refused, all of them listed, before anything is touched
    with pytest.raises(ConfigError) as err:
        train_recipe.main(['--resume', str(first), '--batch-size', '20', '--mixup', 'fdt'])
    assert "batch_size=10" in str(err.value) and "mix_method='none'" in str(err.value) and '\n' not in str(err.value)
    assert (first / 'args.yaml').read_bytes() == saved
    # --resume alone: the saved data size, batch, mixing and loss (the defaults would train 1442 digits with FDT)
    assert train_recipe.main(['--resume', str(first)]) == 0
    summary = json.loads((first / 'summary.json').read_text())
    assert summary['status'] == 'finished' and summary['epochs_done'] == 2
    assert (summary['args']['max_train_samples'], summary['args']['batch_size'], summary['args']['mix_method'],
            summary['args']['loss']) == (40, 10, 'none', 'ce')
    # scripts/reproduce.py reruns its whole command plus --resume: flags equal to the saved ones are accepted,
    # and --epochs may extend the run
    again = [*TINY, '--max-train-samples', '40', '--batch-size', '10', '--mixup', 'none', '--loss', 'ce',
             '--output', str(tmp_path), '--experiment', 'run', '--epochs', '3', '--resume', str(first)]
    assert train_recipe.main(again) == 0
    assert [r['epoch'] for r in _rows(first)] == ['1', '2', '3']
    assert parse_args(['--config', str(first / 'args.yaml')]).epochs == 3


# --- 3. no code from data files ------------------------------------------------------------------------

class _WritesMarker:
    """Unpickled naively, this writes the marker file: the stand-in for any code a crafted file could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").write("code ran")',)


def _payload_runs_when_loaded_naively(path: Path, marker: Path, torch_format: bool) -> None:
    """Proves a planted file is a real payload (so a test that finds no marker means something)."""
    if torch_format:
        torch.load(path, weights_only=False)
    else:
        with open(path, 'rb') as f:
            pickle.load(f)
    assert marker.exists()
    marker.unlink()


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory):
    """A 2-epoch run stopped after epoch 1: its state/epoch_1 is what --resume reads."""
    return run_inproc(tmp_path_factory.mktemp('stopped'), '--stop-after-epochs', '1')


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_crafted_state_files_run_no_code(stopped_run, tmp_path):
    marker = tmp_path / 'marker'
    # (a) Accelerate would unpickle custom_checkpoint_*.pkl with weights_only=False; the recipe never reads them
    run = _copy(stopped_run, tmp_path / 'a')
    state = run / 'state' / 'epoch_1'
    for name in ('custom_checkpoint_0.pkl', 'custom_checkpoint_1.pkl', 'custom_checkpoint_2.pkl',
                 'random_states_0.pkl'):
        torch.save({'x': _WritesMarker(marker)}, state / name)
    _payload_runs_when_loaded_naively(state / 'custom_checkpoint_0.pkl', marker, torch_format=True)
    assert train_recipe.main(['--resume', str(run)]) == 0
    assert not marker.exists()
    # (b) Accelerate's own optimizer file: refused, named
    run = _copy(stopped_run, tmp_path / 'b')
    torch.save({'x': _WritesMarker(marker)}, run / 'state' / 'epoch_1' / 'optimizer.bin')
    with pytest.raises(StateError, match=r'optimizer\.bin cannot be read as a plain state file'):
        train_recipe.main(['--resume', str(run)])
    assert not marker.exists()
    # (c) a state in the layout written before training_state.json: refused, its pickles never opened
    run = _copy(stopped_run, tmp_path / 'c')
    (run / 'state' / 'epoch_1' / 'training_state.json').unlink()
    for name in ('custom_checkpoint_0.pkl', 'custom_checkpoint_1.pkl', 'custom_checkpoint_2.pkl'):
        torch.save({'x': _WritesMarker(marker)}, run / 'state' / 'epoch_1' / name)
    with pytest.raises(StateError, match=r'saved by an earlier timm-normplugins \(custom_checkpoint_\*\.pkl'):
        train_recipe.main(['--resume', str(run)])
    assert not marker.exists()
    # (d) args.yaml is YAML read with safe_load: a python tag is an error naming the file
    run = _copy(stopped_run, tmp_path / 'd')
    (run / 'args.yaml').write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match=r'args\.yaml: not a readable YAML config'):
        train_recipe.main(['--resume', str(run)])
    assert not marker.exists()


def test_states_of_an_earlier_version_are_refused_not_resumed_differently(stopped_run, tmp_path):
    """A state saved before the seedable sampler (format 1) would continue with another data order than the run
    began with: --resume refuses it in one line (exit 1 from the CLI), and the run folder is left as it was."""
    run = _copy(stopped_run, tmp_path / 'old')
    state_file = run / 'state' / 'epoch_1' / 'training_state.json'
    saved = json.loads(state_file.read_text())
    assert saved['format'] == 2
    state_file.write_text(json.dumps(dict(saved, format=1)))
    before = {p: p.read_bytes() for p in run.rglob('*') if p.is_file() and p.name != 'run.lock'}
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(REPO / 'recipes' / 'train.py'), '--resume', str(run)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert 'saved by an earlier timm-normplugins (format 1' in proc.stderr
    assert {p: p.read_bytes() for p in run.rglob('*') if p.is_file() and p.name != 'run.lock'} == before


def test_crafted_cifar_batch_runs_no_code(tmp_path):
    from _dataset_files import write_cifar

    from timm_normplugins.data import DataFileError, create_dataset
    write_cifar(tmp_path / 'data')
    marker = tmp_path / 'marker'
    batch = tmp_path / 'data' / 'cifar-10-batches-py' / 'data_batch_1'
    batch.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=2))
    _payload_runs_when_loaded_naively(batch, marker, torch_format=False)
    with pytest.raises(DataFileError, match=r'data_batch_1 is not a CIFAR batch .*exec is not allowed'):
        create_dataset('cifar10', tmp_path / 'data', 'train')
    assert not marker.exists()
    assert len(create_dataset('cifar10', tmp_path / 'data', 'test')) == 6  # genuine batches still read


def test_checkpoint_metadata_cannot_make_timm_open_another_file(tmp_path):
    import timm

    from timm_normplugins import CheckpointError, load_model, save_model
    marker = tmp_path / 'marker'
    torch.save({'state_dict': _WritesMarker(marker)}, tmp_path / 'payload.pth')
    path = save_model(timm.create_model('cifar_resnet20', num_classes=10), tmp_path / 'model.safetensors')
    with safetensors.safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
    tensors = safetensors.torch.load_file(str(path))
    for model_args in ({'num_classes': 10, 'checkpoint_path': str(tmp_path / 'payload.pth')},
                       {'num_classes': 10, 'pretrained_cfg_overlay': {'file': str(tmp_path / 'payload.pth')}}):
        meta['timm_normplugins.model_args'] = json.dumps(model_args)
        safetensors.torch.save_file(tensors, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match='would read another file'):
            load_model(path)
        assert not marker.exists()


# --- 4. non-finite losses ------------------------------------------------------------------------------

def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in safetensors.torch.load_file(str(path)).values()
               if t.is_floating_point())


def test_nan_loss_stops_the_run_and_never_becomes_best(tmp_path):
    # epoch 1 warms up at lr 1e-3 (finite), epoch 2 trains at 1e4 and diverges
    cmd = [sys.executable, str(TRAIN), *TINY, '--warmup-epochs', '1', '--warmup-lr', '0.001', '--lr', '1e4',
           '--output', str(tmp_path), '--experiment', 'nan']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1'))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]  # the loss or, first, the validation metrics turn non-finite
    assert re.fullmatch(r'train\.py: error: (non-finite training loss at epoch 2|epoch 2: non-finite validation).*',
                        last)
    assert 'Traceback' not in proc.stderr
    run = tmp_path / 'nan'
    assert _all_finite(run / 'model_best.safetensors') and _all_finite(run / 'model.safetensors')
    assert [r['epoch'] for r in _rows(run)] == ['1'] and math.isfinite(float(_rows(run)[0]['train_loss']))
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['status'] == 'stopped: ' + last[len('train.py: error: '):]
    assert _latest(run) == 'epoch_1'  # the last good state, resumable


def test_skip_policy_never_ends_with_status_0(tmp_path):
    """--nonfinite-loss skip drops the bad steps; the run then stops (no update left, non-finite metrics) or
    finishes with exit status 3, and what it saved is finite either way."""
    argv = [*TINY, '--lr', '1e4', '--nonfinite-loss', 'skip', '--output', str(tmp_path), '--experiment', 'run']
    try:
        status = train_recipe.main(argv)
    except NonFiniteError:
        status = None
    run = tmp_path / 'run'
    if status is not None:
        assert status == 3
        summary = json.loads((run / 'summary.json').read_text())
        assert summary['nonfinite_loss']['skipped_steps'] > 0
        assert sum(int(r['skipped_steps']) for r in _rows(run)) == summary['nonfinite_loss']['skipped_steps']
    for name in ('model.safetensors', 'model_best.safetensors'):
        assert not (run / name).exists() or _all_finite(run / name)


def test_a_nan_pixel_is_skipped_not_spread():
    """One NaN pixel: FDT spreads it to every mixed sample and one _wcgc step to every weight; skip drops it."""
    import copy

    import timm
    from accelerate import Accelerator
    from timm.optim import create_optimizer_v2

    from timm_normplugins.data import FDTMixup
    from timm_normplugins.loss import create_loss
    from timm_normplugins.training import NonFiniteGuard
    torch.manual_seed(0)
    model = timm.create_model('cifar_resnet20_tn', num_classes=10).train()
    optimizer = create_optimizer_v2(model, opt='sgd_wcgc', lr=0.1, momentum=0.9)
    loss_fn = create_loss('fdt')
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    x[3, 0, 5, 5] = float('nan')
    mixed, target = FDTMixup(num_classes=10)(x, y)
    assert not torch.isfinite(mixed.flatten(1)).all(1).any()  # every mixed sample holds a NaN
    before = copy.deepcopy(model.state_dict())
    guard = NonFiniteGuard('skip', Accelerator(cpu=True))
    guard.start_epoch()
    snapshot = guard.snapshot(model)
    loss = loss_fn(model(mixed), target)
    assert not guard.loss_ok(loss, mixed, 0, 0, model, snapshot)  # skipped ...
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # ... BN statistics included
    with pytest.raises(NonFiniteError, match='epoch 1 made no optimizer step'):
        guard.end_epoch(0, model)
    with pytest.raises(NonFiniteError, match='non-finite input values'):
        NonFiniteGuard('stop', Accelerator(cpu=True)).loss_ok(loss, mixed, 0, 0, model, None)
    loss_fn(model(mixed), target).backward()  # what the guard prevents: one step spreads the NaN to every weight
    optimizer.step()
    assert not any(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_stop_reads_the_loss_flag_only_at_checks():
    """stop: no host read per step; a bad loss is reported at the next check (every N steps, epoch end)."""
    from accelerate import Accelerator

    from timm_normplugins.training import NonFiniteGuard
    model, x = torch.nn.Linear(2, 2), torch.ones(1, 2)
    good, bad = torch.tensor(1.0), torch.tensor(float('nan'))
    guard = NonFiniteGuard('stop', Accelerator(cpu=True), check_every=4)
    for step, loss in enumerate([good, bad, good]):
        assert guard.loss_ok(loss, x, 0, step, model, None)  # steps 1-3 are not checks: nothing raised yet
    with pytest.raises(NonFiniteError, match=r'epoch 1, step 2 \(the inputs are finite'):
        guard.loss_ok(good, x, 0, 4, model, None)  # the check at step 4 names the first bad step
    guard.start_epoch()
    guard.loss_ok(bad, x * float('inf'), 1, 1, model, None)
    with pytest.raises(NonFiniteError, match=r'epoch 2, step 2 \(this batch holds non-finite input values'):
        guard.end_epoch(1, model)  # the epoch's end is always a check


def test_two_processes_with_a_shard_smaller_than_the_batch(tmp_path):
    # 20 samples, batch 16, 2 processes: Accelerate shards whole batches, so drop_last left no step at all
    rc, log = finish(launch([*TINY, '--max-train-samples', '20', '--epochs', '1', '--output', tmp_path,
                             '--experiment', 'small'], tmp_path / 'small.log', processes=2))
    assert rc == 0, log[-3000:]
    (row,) = _rows(tmp_path / 'small')
    assert math.isfinite(float(row['train_loss']))


# --- 5. one run per folder -----------------------------------------------------------------------------

def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    run = tmp_path / 'shared'
    first = launch([*TINY, '--max-train-samples', '1000', '--epochs', '5', '--output', tmp_path, '--experiment',
                    'shared'], tmp_path / 'first.log')
    try:
        wait_for(first, lambda: (run / 'args.yaml').exists(), 'first run started')
        with pytest.raises(ConfigError, match=rf'in use by another run \(pid {first.pid} on '):
            run_inproc(tmp_path, '--seed', '7', experiment='shared')
        assert _latest(run) is None  # refused before the first run saved anything: not the old LATEST check
    finally:
        kill9_tree(first)


def test_a_folder_with_results_of_another_run_is_refused(tmp_path):
    run = run_inproc(tmp_path, '--epochs', '1')
    with pytest.raises(ConfigError, match='already holds a run'):
        run_inproc(tmp_path, '--epochs', '1', '--seed', '7')
    shutil.rmtree(run / 'state')  # as if killed after writing model.safetensors, before its state
    with pytest.raises(ConfigError, match='holds files of another run'):
        run_inproc(tmp_path, '--epochs', '1', '--seed', '7')
    run_inproc(tmp_path, '--epochs', '1')  # the same run, restarted: allowed


# --- 6. what would fail only after training now fails before it ----------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--eval-attack', 'pgd-papr'], "unknown attack 'pgd-papr'"),
    (['--max-val-samples', '0'], 'validation set of digits is empty'),
    (['--max-train-samples', '0'], 'training set of digits is empty'),
])
def test_late_failures_fail_first(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        run_inproc(tmp_path, *argv)
    assert not (tmp_path / 'run' / 'metrics.csv').exists()


def test_validation_images_of_mixed_sizes(tmp_path):
    from PIL import Image
    for split, sizes in (('train', [(12, 12)] * 4), ('val', [(12, 12), (16, 20), (12, 12), (20, 16)])):
        for cls in ('a', 'b'):
            (tmp_path / 'data' / split / cls).mkdir(parents=True)
            for i, size in enumerate(sizes):
                Image.new('RGB', size, (40 * i, 100 if cls == 'a' else 200, 0)).save(
                    tmp_path / 'data' / split / cls / f'{i}.png')
    argv = ['--dataset', 'imagefolder', '--data-dir', str(tmp_path / 'data'), '--val-split', 'val', '--img-size', '12',
            '--max-train-samples', '8', '--batch-size', '4', '--epochs', '1', '--mixup', 'none', '--loss', 'ce']
    with pytest.raises(ConfigError, match='differ in size'):
        run_inproc(tmp_path, *argv, '--val-batch-size', '4', experiment='batched')
    assert not (tmp_path / 'batched' / 'metrics.csv').exists()
    run = run_inproc(tmp_path, *argv, '--eval-attack', 'pgd-paper', '--eval-num-images', '2', experiment='one')
    assert int(_rows(run)[0]['val_count']) == 8
    assert json.loads((run / 'summary.json').read_text())['robustness'] is not None


# --- 7. YAML values are checked like command-line values -----------------------------------------------

@pytest.mark.parametrize('text, message', [
    ('mixup: [fdt]', 'mixup takes one value'),
    ('lr: [1, 2]', 'lr takes one value'),
    ('batch_size: 2.5', 'not a whole number'),
    ('lr: nan', 'not a finite number'),
    ('lr: .inf', 'not a finite number'),
    ('channels_last: 1', 'is a switch'),
    ('dataset: yes', 'is not a string'),
    ('epochs: true', 'is not a number'),
    ('batch_size: null', 'null is not a value'),
    ('decay_milestones: [2, 2.5]', 'not a whole number'),
])
def test_yaml_values_are_checked(tmp_path, text, message):
    path = tmp_path / 'bad.yaml'
    path.write_text(text + '\n')
    with pytest.raises(ConfigError, match=message):
        parse_args(['--config', str(path)])


def test_non_finite_numbers_on_the_command_line():
    with pytest.raises(SystemExit):
        parse_args(['--lr', 'nan'])
    with pytest.raises(SystemExit):
        parse_args(['--weight-decay', 'inf'])


# --- 8. the logged lr is the one the epoch trained at --------------------------------------------------

def test_logged_lr_is_the_epochs_own(tmp_path):
    run = run_inproc(tmp_path, '--lr', '0.1', '--warmup-epochs', '1', '--warmup-lr', '0.001', '--epochs', '3')
    assert [float(r['lr']) for r in _rows(run)] == pytest.approx([0.001, 0.01, 0.001])


# --- 9. every error names its file ---------------------------------------------------------------------

def test_bad_image_files_are_named(tmp_path):
    import io

    from PIL import Image

    from timm_normplugins.data import DataFileError, create_dataset
    good = io.BytesIO()
    Image.new('RGB', (16, 16), (10, 20, 30)).save(good, format='JPEG')
    cases = {'empty.jpg': b'', 'fake.jpg': b'this is no image', 'truncated.jpg': good.getvalue()[:200]}
    for name, data in cases.items():
        folder = tmp_path / name / 'cls'
        folder.mkdir(parents=True)
        (folder / 'ok.jpg').write_bytes(good.getvalue())
        (folder / name).write_bytes(data)
        with pytest.raises(DataFileError) as err:
            create_dataset('imagefolder', tmp_path / name, 'train')
        assert str(folder / name) in str(err.value) and '\n' not in str(err.value) and 'BytesIO' not in str(err.value)


def test_truncated_cifar_batch_is_named(tmp_path):
    from _dataset_files import write_cifar

    from timm_normplugins.data import DataFileError, create_dataset
    write_cifar(tmp_path)
    batch = tmp_path / 'cifar-10-batches-py' / 'test_batch'
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataFileError, match=r'test_batch is not a CIFAR batch'):
        create_dataset('cifar10', tmp_path, 'test')


@pytest.mark.parametrize('content, message', [
    (b'\xff\xfe\x00binary', r'LATEST is not a state name \(binary content\)'),
    (b'../../../etc', r'LATEST names .*, not a state folder epoch_K'),
    (b'epoch_7', r'LATEST names epoch_7, but .* does not exist'),
])
def test_bad_latest_is_named(stopped_run, tmp_path, content, message):
    run = _copy(stopped_run, tmp_path / 'run')
    (run / 'state' / 'LATEST').write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        train_recipe.main(['--resume', str(run)])


def test_malformed_checkpoint_metadata_is_named(tmp_path):
    import timm

    from timm_normplugins import CheckpointError, load_model, save_model
    path = save_model(timm.create_model('cifar_resnet20', num_classes=10), tmp_path / 'model.safetensors')
    with safetensors.safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
    meta['timm_normplugins.model_args'] = '{"num_classes": 10,'
    safetensors.torch.save_file(safetensors.torch.load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError,
                       match=r'model\.safetensors: metadata timm_normplugins\.model_args is not valid JSON'):
        load_model(path)


def _state_bytes() -> int:
    """About one state of the TINY model: weights + momentum buffers + small files."""
    import timm
    model = timm.create_model('cifar_resnet20_tn', num_classes=10)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + params + 64 * 1024


def test_full_disk_during_the_state_write(tmp_path):
    """A real ENOSPC: state/ is a tmpfs that holds one state but not two (needs root for mount)."""
    run = tmp_path / 'run'
    (run / 'state').mkdir(parents=True)
    size = int(1.5 * _state_bytes())
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(run / 'state')],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f'cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}')
    try:
        with pytest.raises(StateError) as err:
            run_inproc(tmp_path)
        message = str(err.value)
        assert message.startswith(f'could not write {run / "state" / "epoch_2.partial"}') and '\n' not in message
        assert 'the last complete state, state/epoch_1, is intact' in message and f'--resume {run}' in message
        assert sorted(p.name for p in (run / 'state').iterdir()) == ['LATEST', 'epoch_1']  # no partial left
        assert json.loads((run / 'summary.json').read_text())['status'].startswith('stopped: could not write')
        subprocess.run(['mount', '-o', 'remount,size=64m', str(run / 'state')], check=True)
        assert train_recipe.main(['--resume', str(run)]) == 0
        assert _latest(run) == 'epoch_2'
    finally:
        subprocess.run(['umount', str(run / 'state')], check=True)  # busy if a failed write left a file open
