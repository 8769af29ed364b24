""" The resumable state ``RUN/state/epoch_K``, named by ``RUN/state/LATEST`` once complete.

Accelerate's ``automatic_checkpoint_naming`` is not used: it deletes the old checkpoint before writing the
new one and loads the newest folder even if a kill left it half-written. Nothing is registered with
``register_for_checkpointing`` either, whose ``custom_checkpoint_N.pkl`` Accelerate unpickles with
``weights_only=False``: the save hook writes ``training_state.json`` and safetensors files instead, and
Accelerate reads its own files through ``accelerate_view`` (without any planted ``custom_checkpoint_*.pkl``).
States written before ``training_state.json`` (``custom_checkpoint_{0,1,2}.pkl``) are read with
``weights_only=True``.
"""
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import safetensors.torch
import torch

from ..core.files import new_file_mode
from .atomic import remove, write_atomic
from .errors import ConfigError, StateError, TrainingError

__all__ = ['TrainingState', 'read_state', 'accelerate_view', 'latest_state', 'save_state', 'load_state',
           'STATE_FILE', 'LOSS_FILE', 'EMA_FILE']

STATE_FILE = 'training_state.json'
LOSS_FILE = 'loss.safetensors'
EMA_FILE = 'model_ema.safetensors'
# 2: the data order comes from Accelerate's seedable sampler. States of earlier versions (format 1, or the
# custom_checkpoint_*.pkl layout before it) shuffled differently: resumed here, a run would not continue as it
# began, so they are refused rather than read.
STATE_FORMAT = 2


def latest_state(run: Path) -> Optional[Path]:
    """The complete state ``RUN/state/LATEST`` names, or None before the first epoch was saved.

    LATEST holds a bare ``epoch_K`` name: anything else (binary content, a path leaving the run folder)
    is refused rather than followed.
    """
    latest = Path(run) / 'state' / 'LATEST'
    if not latest.exists():
        return None
    try:
        name = latest.read_bytes().decode('ascii').strip()
    except UnicodeDecodeError:
        raise ConfigError(f'{latest} is not a state name (binary content); it should hold e.g. "epoch_3"') from None
    if not re.fullmatch(r'epoch_[0-9]+', name):
        raise ConfigError(f'{latest} names {name[:80]!r}, not a state folder epoch_K of {latest.parent}')
    if not (latest.parent / name).is_dir():
        raise ConfigError(f'{latest} names {name}, but {latest.parent / name} does not exist')
    return latest.parent / name


def save_state(accelerator, run: Path, epoch: int) -> None:
    """``accelerator.save_state`` into ``state/epoch_K`` atomically, then LATEST; older states removed."""
    root = Path(run) / 'state'
    previous = (root / 'LATEST').read_text().strip() if (root / 'LATEST').exists() else None
    hint = (f'; the last complete state, state/{previous}, is intact' if previous else '') + \
        f': free space and continue with --resume {run}'

    def write(tmp: Path) -> None:
        accelerator.wait_for_everyone()  # the main process removed a stale partial
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _umask_modes(tmp)

    main = accelerator.is_main_process
    write_atomic(root / f'epoch_{epoch}', write, StateError, hint, suffix='.partial', commit=main)
    if main:
        write_atomic(root / 'LATEST', f'epoch_{epoch}', StateError, hint)
        for old in root.glob('epoch_*'):
            if old.name != f'epoch_{epoch}':
                remove(old)
    accelerator.wait_for_everyone()


def _umask_modes(folder: Path) -> None:
    """Give a state's files the mode the umask gives new files (safetensors writes 0600)."""
    probe = folder / '.mode'
    mode = new_file_mode(probe)
    probe.unlink()
    for path in folder.rglob('*'):
        if path.is_file():
            os.chmod(path, mode)


def _check_progress(progress: Any, path: Path) -> Dict[str, Any]:
    ok = (isinstance(progress, dict) and isinstance(progress.get('epoch'), int) and progress['epoch'] >= 0
          and isinstance(progress.get('history'), list) and all(isinstance(r, dict) for r in progress['history'])
          and len(progress['history']) == progress['epoch'] and isinstance(progress.get('best'), (dict, type(None))))
    if not ok:
        raise StateError(f'{path}: the progress record (epoch, history, best) is malformed')
    return progress


def _load_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as e:  # safetensors' own error types
        raise StateError(f'{path} is not a safetensors file ({str(e).splitlines()[0][:200]})') from None


def read_state(folder: Path) -> Dict[str, Any]:
    """The training state in ``folder``: ``processes``, ``epochs`` (None if not recorded), ``progress``,
    ``scheduler`` and ``loss`` (a dict of tensors, or None)."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StateError(f'{path} is not valid JSON ({e})') from None
        if not isinstance(state, dict) or not isinstance(state.get('processes'), int) \
                or not isinstance(state.get('scheduler'), dict):
            raise StateError(f'{path}: expected processes, scheduler and progress entries')
        if state.get('format') != STATE_FORMAT:
            raise StateError(_older_version(folder, f"format {state.get('format')!r}"))
        loss = _load_safetensors(folder / LOSS_FILE) if (folder / LOSS_FILE).exists() else None
        return dict(processes=state['processes'], epochs=state.get('epochs'), scheduler=state['scheduler'],
                    progress=_check_progress(state.get('progress'), path), loss=loss)
    if (folder / 'custom_checkpoint_1.pkl').exists():  # the layout before training_state.json: never unpickled
        raise StateError(_older_version(folder, 'custom_checkpoint_*.pkl'))
    raise StateError(f'{folder} holds no training state ({STATE_FILE})')


def _older_version(folder: Path, what: str) -> str:
    return (f'{folder} was saved by an earlier timm-normplugins ({what}; this one writes format {STATE_FORMAT}), '
            'which ordered the data differently: resumed here the run would not continue as it began. Finish it '
            'with the version that started it, or start it again')


@contextmanager
def accelerate_view(folder: Path) -> Iterator[Path]:
    """``folder`` as ``accelerator.load_state`` may read it: without ``custom_checkpoint_*.pkl`` (symlinks)."""
    folder = Path(folder)
    files = list(folder.iterdir())
    keep = [p for p in files if not re.fullmatch(r'custom_checkpoint_[0-9]+\.pkl', p.name)]
    if len(keep) == len(files):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix='state-view-') as view:
        for path in keep:
            os.symlink(path.resolve(), Path(view) / path.name)
        yield Path(view)


def _unreadable_file(folder: Path) -> Optional[Path]:
    """The first file of an Accelerate state that torch's restricted loader or safetensors refuses."""
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


def load_state(accelerator, folder: Path, training_state: 'TrainingState') -> None:
    """The recipe's ``TrainingState``, then ``accelerator.load_state``; a file not safely readable is named."""
    training_state.load(folder)
    try:
        with accelerate_view(folder) as view:
            accelerator.load_state(str(view))
    except (ConfigError, TrainingError):
        raise
    except Exception as e:  # torch's UnpicklingError, safetensors' errors, shape mismatches
        culprit = _unreadable_file(Path(folder))
        where = f'{culprit} cannot be read as a plain state file' if culprit else f'cannot load the state {folder}'
        first = (str(e).strip().splitlines() or [''])[0][:200]
        raise StateError(f'{where} ({type(e).__name__}: {first}); nothing of it was loaded as code') from e


class TrainingState:
    """Saves (through Accelerate's save hook) and loads scheduler, progress, loss and EMA state.

    ``epochs``: the run's current ``--epochs``. A state saved with another epoch count (a resume that
    extends the run) keeps the scheduler built for the new count, as timm's train.py rebuilds it.
    """

    def __init__(self, accelerator, scheduler, progress, loss_fn: torch.nn.Module, epochs: int, ema=None):
        self.accelerator, self.scheduler, self.progress, self.loss_fn = accelerator, scheduler, progress, loss_fn
        self.epochs, self.ema = epochs, ema  # ema: timm's ModelEmaV3 (--model-ema)
        accelerator.register_save_state_pre_hook(self._save)

    def _save(self, models, weights, output_dir) -> None:
        if not self.accelerator.is_main_process:
            return
        folder = Path(output_dir)
        state = dict(format=STATE_FORMAT, processes=self.accelerator.num_processes, epochs=self.epochs,
                     progress=self.progress.state_dict(), scheduler=self.scheduler.state_dict())
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
        for module, name in ((self.loss_fn, LOSS_FILE), (self.ema and self.ema.module, EMA_FILE)):
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()} \
                if module is not None else {}
            if tensors:
                safetensors.torch.save_file(tensors, str(folder / name))

    def load(self, folder: Path) -> None:
        folder = Path(folder)
        state = read_state(folder)
        if state['epochs'] in (None, self.epochs):
            self.scheduler.load_state_dict(state['scheduler'])
        self.progress.load_state_dict(state['progress'])
        try:
            self.loss_fn.load_state_dict(state['loss'] or {}, strict=True)
        except RuntimeError as e:
            raise StateError(f'{folder}: the loss state does not fit --loss {type(self.loss_fn).__name__} '
                             f'({str(e).splitlines()[0]})') from None
        if self.ema is not None:
            if not (folder / EMA_FILE).exists():
                raise StateError(f'{folder} holds no {EMA_FILE} for --model-ema')
            try:
                self.ema.module.load_state_dict(_load_safetensors(folder / EMA_FILE), strict=True)
            except RuntimeError as e:  # shape mismatches
                raise StateError(f'{folder / EMA_FILE} cannot be loaded ({str(e).splitlines()[0][:200]})') from None
