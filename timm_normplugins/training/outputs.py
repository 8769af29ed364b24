""" A run folder: checkpoints, args.yaml, metrics.csv, summary.json, curves.png and resumable state.

* One run per folder: ``run.lock`` (``lock.py``) is held for the run's lifetime. A new run refuses a folder
  that holds another run's results; a folder whose run saved nothing yet (only ``args.yaml``, e.g. killed
  in its first epoch) is taken over.
* State is saved atomically: Accelerate writes ``state/epoch_K.partial``, which is renamed to
  ``state/epoch_K`` once complete, and only then does ``state/LATEST`` (replaced atomically) point to it;
  older epochs are removed afterwards. A kill at any moment leaves ``LATEST`` naming a complete state, and
  every other file is written to ``NAME.tmp`` and renamed, so it is either the old or the new one.
* A write that fails (a full disk) removes its partial file and stops the run with a message naming the
  file; leftovers of a killed run (``*.partial``, ``*.tmp``) are removed when the folder is next claimed.
"""
import csv
import gc
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import yaml
from safetensors import SafetensorError

from ..checkpoint import _new_file_mode, save_model
from .config import ConfigError, args_to_yaml
from .errors import NonFiniteError, RunWriteError, StateError, TrainingError
from .lock import RunLock
from .resume import latest_state, saved_args
from .state import accelerate_view, read_state

__all__ = ['RunOutputs', 'plot_curves', 'write_atomic', 'run_folder']


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_experiment(args) -> str:
    extras = [f'{k}{v}' for k, v in (('', getattr(args, 'weight_reparam', 'none')),
                                      ('err_', getattr(args, 'error_norm', 'none'))) if v != 'none']
    return '-'.join([args.dataset, args.model, *extras, args.opt, args.mix_method, args.loss, f's{args.seed}'])


def run_folder(args) -> Path:
    """The run folder: ``--resume``'s (restore_args made it the run folder) or ``--output/--experiment``."""
    if args.resume:
        return Path(args.resume)
    return Path(args.output) / (args.experiment or _default_experiment(args))


def _why(error: BaseException, path: Path) -> str:
    """The cause of a failed write in one line. torch.save reports a full disk as an inline_container
    position mismatch, without errno: the free space says what happened."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    free = f'{usage.free / 2 ** 20:.1f} MiB free'
    if usage.free < min(64 * 2 ** 20, usage.total // 100):
        return f'no space left on the disk ({free}; {first})'
    return f'{first} ({free} on that disk)'


def _write(path: Path, write: Callable[[], Any], error_type=RunWriteError, hint: str = '') -> None:
    """Run ``write``; a failure (full disk, ...) becomes one ``error_type`` line naming ``path``.

    The new error is raised outside the ``except`` block and the failed writer's traceback is dropped:
    its frames hold the half-written file open, which would keep a deleted partial state's space in use
    for as long as the error object lives (e.g. in a caller that keeps it).
    """
    try:
        write()
        return
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        message = f'could not write {path}: {_why(e, path)}{hint}'
        e.__traceback__ = None
    gc.collect()  # frames in reference cycles too
    raise error_type(message)


_ERRORS = {c.__name__: c for c in (ConfigError, TrainingError, NonFiniteError, RunWriteError, StateError)}


def _on_main(accelerator, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the main process; its ConfigError/TrainingError is raised on every process, so none is
    left waiting for the others at the next barrier."""
    error = None
    if accelerator.is_main_process:
        try:
            fn()
        except (ConfigError, TrainingError) as e:
            error = e
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        shared = broadcast_object_list([None if error is None else (type(error).__name__, str(error))])[0]
        if shared is not None and error is None:
            error = _ERRORS.get(shared[0], TrainingError)(shared[1])
    if error is not None:
        raise error


def _unreadable_file(folder: Path) -> Optional[Path]:
    """The first file of an Accelerate state that torch's restricted loader or safetensors refuses."""
    import safetensors
    import torch
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == '.safetensors':
                with safetensors.safe_open(str(path), framework='pt'):
                    pass
            elif path.suffix in ('.bin', '.pkl', '.pt'):
                torch.load(path, map_location='cpu', weights_only=True)
        except Exception:  # noqa: BLE001 -- any refusal names the file
            return path
    return None


def _launch_hint(processes: int) -> str:
    if processes == 1:
        return 'python recipes/train.py or a plain accelerate launch'
    return f'accelerate launch --multi_gpu --num_processes {processes}'


class RunOutputs:
    """Claims the run folder (before any work), then writes its files as the run goes."""

    def __init__(self, args, accelerator):
        self.args, self.accelerator = args, accelerator
        self.run_dir = run_folder(args)
        self._lock: Optional[RunLock] = None
        self._args_text = args_to_yaml(args)
        self.created = not self.run_dir.exists()  # a failed start removes a folder it created (discard_new)
        try:
            _on_main(accelerator, self._claim)
            # the state folder to continue from (validated on the main process by _claim); None: epoch 0
            self.resume_from = latest_state(self.run_dir) if args.resume else None
        except BaseException:
            self.close()
            raise
        accelerator.wait_for_everyone()

    # --- claiming the folder ------------------------------------------------------------------------------
    def _claim(self) -> None:
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock(run)
        self._remove_leftovers()
        if self.args.resume:
            self._check_resume()
            return
        self._check_fresh()
        write_atomic(run / 'args.yaml', self._args_text)

    def _remove_leftovers(self) -> None:
        """Half-written files of a run killed while writing (safe to delete: we hold the lock)."""
        for partial in (self.run_dir / 'state').glob('*.partial'):
            shutil.rmtree(partial, ignore_errors=True)
        for tmp in [*self.run_dir.glob('*.tmp'), *self.run_dir.glob('*.tmp.png'), *self.run_dir.glob('state/*.tmp')]:
            tmp.unlink(missing_ok=True)

    def _check_fresh(self) -> None:
        run = self.run_dir
        if (run / 'state' / 'LATEST').exists():
            raise ConfigError(f'{run} already holds a run; continue it with --resume {run} or choose another '
                              '--experiment')
        results = [p.name for p in (run / 'model.safetensors', run / 'model_best.safetensors', run / 'metrics.csv')
                   if p.exists()] + [f'state/{p.name}' for p in (run / 'state').glob('epoch_*')]
        if not results:
            return  # empty, or a run that saved nothing yet (killed in its first epoch): take it over
        same = False
        if (run / 'args.yaml').is_file():
            try:
                same = args_to_yaml(saved_args(run)) == self._args_text
            except ConfigError:
                same = False
        if not same:
            raise ConfigError(f'{run} holds files of another run ({", ".join(results)}); choose another '
                              '--experiment, or --resume it')

    def _check_resume(self) -> None:
        state = latest_state(self.run_dir)
        if state is None:
            return  # killed before its first epoch was saved: the run starts again from epoch 0
        info = read_state(state)
        processes = self.accelerator.num_processes
        if info['processes'] != processes:
            raise ConfigError(
                f'{state} was written by {info["processes"]} process(es), this launch has {processes}: each process '
                'shuffles and batches its own shard, so the run would go on with another data order and batch '
                f'than it began with. Relaunch with {info["processes"]} ({_launch_hint(info["processes"])}), or start a '
                f'new run from {self.run_dir}/model.safetensors')
        done = info['progress']['epoch']
        if self.args.epochs < done:
            raise ConfigError(f'--epochs {self.args.epochs}: {self.run_dir} already trained {done} epochs')

    def load_state(self, folder: Path, training_state) -> None:
        """The recipe's ``TrainingState``, then ``accelerator.load_state``; a file not safely readable is named."""
        training_state.load(folder)
        try:
            with accelerate_view(folder) as view:
                self.accelerator.load_state(str(view))
        except (ConfigError, TrainingError):
            raise
        except Exception as e:  # torch's UnpicklingError, safetensors' errors, shape mismatches
            culprit = _unreadable_file(Path(folder))
            where = f'{culprit} cannot be read as a plain state file' if culprit else f'cannot load the state {folder}'
            first = (str(e).strip().splitlines() or [''])[0][:200]
            raise StateError(f'{where} ({type(e).__name__}: {first}); nothing of it was loaded as code') from e

    def discard_new(self, progress) -> None:
        """After a failed start (a config, data or checkpoint error before any epoch was saved): remove the run
        folder this run created, so no empty run is left behind."""
        if self.created and not self.args.resume and progress.epoch == 0 and self.accelerator.is_main_process:
            self.close()
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- per epoch ----------------------------------------------------------------------------------------
    def save_epoch(self, model, progress, ema=None) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            # a resume that changed --epochs records it with the first state trained under it
            args_file = self.run_dir / 'args.yaml'
            if not args_file.is_file() or args_file.read_text() != self._args_text:
                _write(args_file, lambda: write_atomic(args_file, self._args_text))
            unwrapped = acc.unwrap_model(model)
            meta = {k: str(v) for k, v in progress.history[-1].items()}
            for name in ('model.safetensors', 'model_best.safetensors') if progress.is_best else ('model.safetensors',):
                _write(self.run_dir / name, lambda: save_model(unwrapped, self.run_dir / name, metadata=meta))
            if ema is not None:  # --model-ema: the averaged weights, loadable like model.safetensors
                path = self.run_dir / 'model_ema.safetensors'
                _write(path, lambda: save_model(ema.module, path, metadata=meta))
            self._write_metrics(progress)
        self._save_state(progress.epoch)

    def _save_state(self, epoch: int) -> None:
        acc = self.accelerator
        state_root = self.run_dir / 'state'
        partial = state_root / f'epoch_{epoch}.partial'
        if acc.is_main_process and partial.exists():
            shutil.rmtree(partial)
        acc.wait_for_everyone()
        previous = (state_root / 'LATEST').read_text().strip() if (state_root / 'LATEST').exists() else None
        hint = (f'; the last complete state, state/{previous}, is intact' if previous else '') + \
            f': free space and continue with --resume {self.run_dir}'
        try:
            _write(partial, lambda: acc.save_state(str(partial)), StateError, hint)
        except StateError:
            shutil.rmtree(partial, ignore_errors=True)  # a partial state would only fill the disk further
            raise
        acc.wait_for_everyone()
        if acc.is_main_process:
            _umask_modes(partial)
            final = state_root / f'epoch_{epoch}'
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            _write(state_root / 'LATEST', lambda: write_atomic(state_root / 'LATEST', final.name), StateError, hint)
            for old in state_root.glob('epoch_*'):
                if old.name != final.name:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _write_metrics(self, progress) -> None:
        rows = progress.history
        fields = list(dict.fromkeys(k for row in rows for k in row))  # a resumed older run may lack new columns
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(rows)
        _write(self.run_dir / 'metrics.csv', lambda: write_atomic(self.run_dir / 'metrics.csv', buf.getvalue()))
        self._write_summary(progress, 'running')
        _write(self.run_dir / 'curves.png', lambda: plot_curves(rows, self.run_dir / 'curves.png'))

    def _write_summary(self, progress, status: str, robust: Optional[Dict[str, Any]] = None,
                       nonfinite: Optional[Dict[str, Any]] = None) -> None:
        import timm
        import torch

        from ..version import __version__
        summary = dict(
            run_dir=str(self.run_dir), status=status, epochs_done=progress.epoch,
            last=progress.history[-1] if progress.history else None, best=progress.best,
            robustness=robust, nonfinite_loss=nonfinite, args=yaml.safe_load(self._args_text),
            versions=dict(timm_normplugins=__version__, torch=torch.__version__, timm=timm.__version__),
            processes=self.accelerator.num_processes)
        _write(self.run_dir / 'summary.json',
               lambda: write_atomic(self.run_dir / 'summary.json', json.dumps(summary, indent=2)))

    def finish(self, progress, robust: Optional[Dict[str, Any]], nonfinite: Optional[Dict[str, Any]] = None) -> None:
        if self.accelerator.is_main_process:
            self._write_summary(progress, 'finished', robust, nonfinite)
        self.accelerator.wait_for_everyone()

    def record_failure(self, progress, error: BaseException) -> None:
        """summary.json says why the run stopped (best effort: the failure may be the disk itself)."""
        if not self.accelerator.is_main_process:
            return
        try:
            self._write_summary(progress, f'stopped: {error}')
        except Exception:  # noqa: BLE001 -- the original error is the one to report
            pass


def plot_curves(rows, path: Path, title: Optional[str] = None) -> None:
    """Training curves a person reads at a glance; markers on every epoch, so a 1-epoch run shows too.

    One panel per kind of number: the training objective (whatever ``--loss`` is, on mixed batches: FDT's
    summed loss is ~12 and would flatten a cross-entropy drawn on the same axis), the validation
    cross-entropy, the validation scores (%) and the learning rate as logged per epoch (log scale).
    The title is ``title`` or the run folder's name (dataset, model, optimizer, mixing, loss, seed).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = [r['epoch'] for r in rows]
    line = dict(marker='o', markersize=4)
    panels = [('train_loss', 'training objective (--loss)', None)]
    if 'val_loss' in rows[0]:
        panels.append(('val_loss', 'validation cross-entropy', None))
    panels += [('scores', 'validation scores', '%'), ('lr', 'learning rate', None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (key, label, unit) in zip(axes[0], panels):
        if key == 'scores':
            for score, name in (('val_top1', 'top-1'), ('val_top5', 'top-5'), ('val_pixel_acc', 'pixel acc'),
                                ('val_miou', 'mIoU')):
                if score in rows[0]:
                    ax.plot(epochs, [r[score] for r in rows], label=name, **line)
            ax.legend(fontsize=8)
        else:
            ax.plot(epochs, [r[key] for r in rows], **line)
        if key == 'lr':
            ax.set_yscale('log')
        ax.set_title(label, fontsize=10)
        ax.set_xlabel('epoch')
        if unit:
            ax.set_ylabel(unit)
        if len(epochs) <= 12:
            ax.set_xticks(epochs)  # whole epochs, also for a single one
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or path.parent.name, fontsize=11)
    fig.tight_layout()
    tmp = path.with_name(path.name + '.tmp.png')
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def _umask_modes(folder: Path) -> None:
    """Give the files of a state folder the mode the umask gives new files (safetensors writes 0600)."""
    probe = folder / '.mode'
    mode = _new_file_mode(probe)
    probe.unlink()
    for path in folder.rglob('*'):
        if path.is_file():
            os.chmod(path, mode)
