""" The run folder: claimed before any work, then written after every epoch (metrics.csv, summary.json, curves.png,
the models; the state: ``state.py``), each file atomically (``atomic.py``).

One run per folder: ``filelock``'s OS lock on ``run.lock``, which the kernel drops when the process ends in any
way (``kill -9`` included), so ``--resume`` can take the folder straight away; the file keeps the holder's pid
and host for the refusal to quote. A new run refuses a folder holding another run's results; a folder whose run
saved nothing yet (only ``args.yaml``) is taken over. A run folder holding a symlink is refused: every write
stays inside the folder. A killed run's ``*.partial``/``*.tmp`` leftovers are removed when it is next claimed.
"""
import csv
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import filelock
import yaml

from ..checkpoint import save_model
from .atomic import write_atomic
from .config import args_from_yaml, args_to_yaml
from .errors import ConfigError, Interrupted, NonFiniteError, RunWriteError, StateError, TrainingError
from .state import latest_state, read_state, save_state

__all__ = ['RunOutputs', 'plot_curves', 'write_atomic', 'run_folder', 'LOCK_NAME']

LOCK_NAME = 'run.lock'
_ERRORS = {c.__name__: c for c in (ConfigError, TrainingError, NonFiniteError, RunWriteError, StateError)}


def run_folder(args) -> Path:
    """The run folder: ``--resume``'s (``restore_args`` made it the run folder) or ``--output/--experiment``."""
    if args.resume:
        return Path(args.resume)
    extras = [f'{k}{v}' for k, v in (('', args.weight_reparam), ('err_', args.error_norm)) if v != 'none']
    name = '-'.join([args.dataset, args.model, *extras, args.opt, args.mix_method, args.loss, f's{args.seed}'])
    return Path(args.output) / (args.experiment or name)


def _on_main(accelerator, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the main process; its error is raised on every process, so none waits at a barrier."""
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


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode())


class RunOutputs:
    """Claims the run folder (before any work), then writes its files as the run goes."""

    def __init__(self, args, accelerator):
        self.args, self.accelerator = args, accelerator
        self.run_dir = run_folder(args)
        self._lock: Optional[filelock.FileLock] = None
        self._args_text = args_to_yaml(args)
        self.created = not self.run_dir.exists()  # a failed start removes a folder it created
        try:
            _on_main(accelerator, self._claim)
            # the state to continue from (checked on the main process by _claim); None: from epoch 0
            self.resume_from = latest_state(self.run_dir) if args.resume else None
        except BaseException:
            self.close()
            raise
        accelerator.wait_for_everyone()

    # --- claiming the folder ------------------------------------------------------------------------------
    def _claim(self) -> None:
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        for path in run.rglob('*'):  # rglob does not descend into linked folders
            if path.is_symlink():
                raise ConfigError(f'{path} is a symlink: a run folder holds only its own files (the run would '
                                  'write through it, outside the folder); remove it')
        self._lock = filelock.FileLock(run / LOCK_NAME, timeout=0, on_acquired=_write_holder,
                                       preserve_lock_file=True)  # deleting it could let two runs lock two files
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = (run / LOCK_NAME).read_text(errors='replace').strip() or 'holder unknown'
            self._lock = None
            raise ConfigError(f'{run} is in use by another run ({holder}; {run / LOCK_NAME}): wait for it to end, '
                              'or choose another --experiment') from None
        for leftover in [*run.glob('state/*.partial'), *run.glob('*.tmp'), *run.glob('state/*.tmp')]:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()  # a killed run's half-written files
        if self.args.resume:
            return self._check_resume()
        if (run / 'state' / 'LATEST').exists():
            raise ConfigError(f'{run} already holds a run; continue it with --resume {run} or choose another '
                              '--experiment')
        results = [p.name for p in (run / 'model.safetensors', run / 'model_best.safetensors', run / 'metrics.csv')
                   if p.exists()] + [f'state/{p.name}' for p in (run / 'state').glob('epoch_*')]
        if results:  # else empty, or a run that saved nothing yet (killed in its first epoch): take it over
            try:
                same = args_to_yaml(args_from_yaml(run / 'args.yaml')) == self._args_text
            except ConfigError:
                same = False
            if not same:
                raise ConfigError(f'{run} holds files of another run ({", ".join(results)}); choose another '
                                  '--experiment, or --resume it')
        write_atomic(run / 'args.yaml', self._args_text)

    def _check_resume(self) -> None:
        state = latest_state(self.run_dir)
        if state is None:
            return  # killed before its first epoch was saved: the run starts again from epoch 0
        info = read_state(state)
        saved, processes = info['processes'], self.accelerator.num_processes
        if saved != processes:
            launch = 'python recipes/train.py or a plain accelerate launch' if saved == 1 else \
                f'accelerate launch --multi_gpu --num_processes {saved}'
            raise ConfigError(
                f'{state} was written by {saved} process(es), this launch has {processes}: each process '
                'shuffles and batches its own shard, so the run would go on with another data order and batch '
                f'than it began with. Relaunch with {saved} ({launch}), or start a new run from '
                f'{self.run_dir}/model.safetensors')
        done = info['progress']['epoch']
        if self.args.epochs < done:
            raise ConfigError(f'--epochs {self.args.epochs}: {self.run_dir} already trained {done} epochs')

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- per epoch ----------------------------------------------------------------------------------------
    def save_epoch(self, model, progress, ema=None, label_names=None) -> None:
        acc, run = self.accelerator, self.run_dir
        if acc.is_main_process:
            if not (run / 'args.yaml').is_file() or (run / 'args.yaml').read_text() != self._args_text:
                write_atomic(run / 'args.yaml', self._args_text)  # a resume that changed --epochs records it now
            meta = {k: str(v) for k, v in progress.history[-1].items()}
            models = {'model.safetensors': acc.unwrap_model(model)}
            if progress.is_best:
                models['model_best.safetensors'] = models['model.safetensors']
            if ema is not None:  # --model-ema: the averaged weights, loadable like model.safetensors
                models['model_ema.safetensors'] = ema.module
            for name, net in models.items():
                write_atomic(run / name, lambda tmp: save_model(net, tmp, metadata=meta, label_names=label_names))
            rows, buf = progress.history, io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval='')
            writer.writeheader()  # the union of the rows' keys: a resumed older run may lack new columns
            writer.writerows(rows)
            write_atomic(run / 'metrics.csv', buf.getvalue())
            write_atomic(run / 'curves.png', lambda tmp: plot_curves(rows, tmp, title=run.name))
            self.write_summary(progress, 'running')
        save_state(acc, run, progress.epoch)

    def write_summary(self, progress, status: str, robust: Optional[Dict[str, Any]] = None,
                      nonfinite: Optional[Dict[str, Any]] = None) -> None:
        import timm
        import torch

        from ..version import __version__
        summary = dict(
            run_dir=str(self.run_dir), status=status, epochs_done=progress.epoch,
            last=progress.history[-1] if progress.history else None, best=progress.best, robustness=robust,
            nonfinite_loss=nonfinite, args=yaml.safe_load(self._args_text),
            versions=dict(timm_normplugins=__version__, torch=torch.__version__, timm=timm.__version__),
            processes=self.accelerator.num_processes)
        write_atomic(self.run_dir / 'summary.json', json.dumps(summary, indent=2))

    def fail(self, progress, error: BaseException, start_errors: tuple) -> None:
        """After a failure (main process): a failed start removes the folder it created and leaves a resumed run's
        files as they were; anything later is recorded in summary.json (best effort: it may be the disk itself)."""
        if not self.accelerator.is_main_process:
            return
        if isinstance(error, start_errors) and progress.epoch == progress.resumed_at:
            if self.created and not self.args.resume:
                self.close()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        status = f'interrupted ({error}); continue with --resume {self.run_dir}' if isinstance(error, Interrupted) \
            else f'stopped: {error}' if isinstance(error, TrainingError) else f'stopped: {type(error).__name__}: {error}'
        try:
            self.write_summary(progress, status.splitlines()[0])
        except Exception:  # noqa: BLE001 -- the original error is the one to report
            pass


def plot_curves(rows, path: Path, title: Optional[str] = None) -> None:
    """One panel per kind of number, markers on every epoch (a 1-epoch run shows too): the training objective
    (FDT's summed loss would flatten a cross-entropy on the same axis), the validation cross-entropy, the
    validation scores (%) and the learning rate (log scale). The title: ``title`` or the run folder's name."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = [r['epoch'] for r in rows]
    panels = [('train_loss', 'training objective (--loss)', None)]
    if 'val_loss' in rows[0]:
        panels.append(('val_loss', 'validation cross-entropy', None))
    panels += [('scores', 'validation scores', '%'), ('lr', 'learning rate', None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (key, label, unit) in zip(axes[0], panels):
        scores = [(s, n) for s, n in (('val_top1', 'top-1'), ('val_top5', 'top-5'), ('val_pixel_acc', 'pixel acc'),
                                      ('val_miou', 'mIoU')) if s in rows[0]] if key == 'scores' else [(key, None)]
        for score, name in scores:
            ax.plot(epochs, [r[score] for r in rows], label=name, marker='o', markersize=4)
        if key == 'scores':
            ax.legend(fontsize=8)
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
    fig.suptitle(title or Path(path).parent.name, fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format='png')  # format: the temporary's name does not end in .png
    finally:
        plt.close(fig)
