""" The run folder: claimed before any work, then written after every epoch.

One run per folder: ``run.lock`` (``lock.py``) is held for the run's lifetime. A new run refuses a folder
holding another run's results; a folder whose run saved nothing yet (only ``args.yaml``, e.g. killed in its
first epoch) is taken over. Every file is written atomically (``atomic.py``, the state: ``state.py``);
a killed run's leftovers (``*.partial``, ``*.tmp``) are removed when the folder is next claimed.
"""
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import yaml

from ..checkpoint import save_model
from .atomic import write_atomic
from .config import args_to_yaml, args_from_yaml
from .errors import ConfigError, NonFiniteError, RunWriteError, StateError, TrainingError
from .lock import RunLock
from .records import plot_curves, write_metrics, write_summary
from .state import latest_state, load_state, read_state, save_state

__all__ = ['RunOutputs', 'plot_curves', 'write_atomic', 'run_folder']


def _default_experiment(args) -> str:
    extras = [f'{k}{v}' for k, v in (('', args.weight_reparam), ('err_', args.error_norm)) if v != 'none']
    return '-'.join([args.dataset, args.model, *extras, args.opt, args.mix_method, args.loss, f's{args.seed}'])


def run_folder(args) -> Path:
    """The run folder: ``--resume``'s (``restore_args`` made it the run folder) or ``--output/--experiment``."""
    if args.resume:
        return Path(args.resume)
    return Path(args.output) / (args.experiment or _default_experiment(args))


_ERRORS = {c.__name__: c for c in (ConfigError, TrainingError, NonFiniteError, RunWriteError, StateError)}


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
        self._lock = RunLock(run)
        for leftover in [*run.glob('state/*.partial'), *run.glob('*.tmp'), *run.glob('state/*.tmp')]:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()  # a killed run's half-written files
        if self.args.resume:
            return self._check_resume()
        self._check_fresh()
        write_atomic(run / 'args.yaml', self._args_text)

    def _check_fresh(self) -> None:
        run = self.run_dir
        if (run / 'state' / 'LATEST').exists():
            raise ConfigError(f'{run} already holds a run; continue it with --resume {run} or choose another '
                              '--experiment')
        results = [p.name for p in (run / 'model.safetensors', run / 'model_best.safetensors', run / 'metrics.csv')
                   if p.exists()] + [f'state/{p.name}' for p in (run / 'state').glob('epoch_*')]
        if not results:
            return  # empty, or a run that saved nothing yet (killed in its first epoch): take it over
        try:
            same = args_to_yaml(args_from_yaml(run / 'args.yaml')) == self._args_text
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

    def load_state(self, folder: Path, training_state) -> None:
        load_state(self.accelerator, folder, training_state)

    def discard_new(self, progress) -> None:
        """After a failed start (before any epoch was saved): remove the run folder this run created."""
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
            args_file = self.run_dir / 'args.yaml'  # a resume that changed --epochs records it now
            if not args_file.is_file() or args_file.read_text() != self._args_text:
                write_atomic(args_file, self._args_text)
            meta = {k: str(v) for k, v in progress.history[-1].items()}
            models = {'model.safetensors': acc.unwrap_model(model)}
            if progress.is_best:
                models['model_best.safetensors'] = models['model.safetensors']
            if ema is not None:  # --model-ema: the averaged weights, loadable like model.safetensors
                models['model_ema.safetensors'] = ema.module
            for name, net in models.items():
                write_atomic(self.run_dir / name, lambda tmp: save_model(net, tmp, metadata=meta))
            write_metrics(self.run_dir, progress.history)
            self._summary(progress, 'running')
        save_state(acc, self.run_dir, progress.epoch)

    def _summary(self, progress, status: str, robust=None, nonfinite=None) -> None:
        write_summary(self.run_dir, status, progress, yaml.safe_load(self._args_text), self.accelerator.num_processes,
                      robust, nonfinite)

    def finish(self, progress, robust: Optional[Dict[str, Any]], nonfinite: Optional[Dict[str, Any]] = None) -> None:
        if self.accelerator.is_main_process:
            self._summary(progress, 'finished', robust, nonfinite)
        self.accelerator.wait_for_everyone()

    def record_failure(self, progress, error: BaseException) -> None:
        """summary.json says why the run stopped (best effort: the failure may be the disk itself)."""
        if self.accelerator.is_main_process:
            try:
                self._summary(progress, f'stopped: {error}')
            except Exception:  # noqa: BLE001 -- the original error is the one to report
                pass
