""" The resumable state ``RUN/state/epoch_K``, named by ``RUN/state/LATEST`` once complete.

``accelerator.save_state``/``load_state`` write and read it. Its ``automatic_checkpoint_naming`` does not fit: it
deletes the oldest checkpoint before writing the new one and loads the newest folder even if a kill left it
half-written. Nothing is registered with ``register_for_checkpointing``, whose pickles Accelerate loads with
``weights_only=False``: the save hook writes ``training_state.json`` and safetensors files instead.
"""
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import safetensors.torch
import torch

from ..core.files import new_file_mode
from .atomic import remove, write_atomic
from .errors import ConfigError, StateError, TrainingError

__all__ = ['TrainingState', 'read_state', 'latest_state', 'save_state', 'load_state', 'STATE_FILE', 'LOSS_FILE',
           'EMA_FILE']

STATE_FILE, LOSS_FILE, EMA_FILE = 'training_state.json', 'loss.safetensors', 'model_ema.safetensors'
# 2: the data order comes from Accelerate's seedable sampler; a state of an earlier format (or the
# custom_checkpoint_*.pkl layout before it) would continue with another order, so it is refused
STATE_FORMAT = 2


def latest_state(run: Path) -> Optional[Path]:
    """The complete state ``RUN/state/LATEST`` names (a bare ``epoch_K``, nothing else), or None before the first."""
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
        if accelerator.is_main_process:  # the mode the umask gives new files (safetensors writes 0600)
            mode = new_file_mode(tmp / '.mode')
            (tmp / '.mode').unlink()
            for path in tmp.rglob('*'):
                if path.is_file():
                    os.chmod(path, mode)

    main = accelerator.is_main_process
    write_atomic(root / f'epoch_{epoch}', write, StateError, hint, suffix='.partial', commit=main)
    if main:
        write_atomic(root / 'LATEST', f'epoch_{epoch}', StateError, hint)
        for old in root.glob('epoch_*'):
            if old.name != f'epoch_{epoch}':
                remove(old)
    accelerator.wait_for_everyone()


def _safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(path))
    except Exception as e:  # noqa: BLE001 -- safetensors' own error types
        raise StateError(f'{path} is not a safetensors file ({str(e).splitlines()[0][:200]})') from None


def read_state(folder: Path) -> Dict[str, Any]:
    """``training_state.json`` of a state: ``processes``, ``epochs``, ``progress``, ``scheduler`` and ``loss``
    (tensors or None), each checked before anything of it is used."""
    folder, old = Path(folder), None
    path = folder / STATE_FILE
    if not path.exists():
        if not (folder / 'custom_checkpoint_1.pkl').exists():
            raise StateError(f'{folder} holds no training state ({STATE_FILE})')
        old = 'custom_checkpoint_*.pkl'  # the layout before training_state.json: never unpickled
    else:
        try:
            state = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StateError(f'{path} is not valid JSON ({e})') from None
        if not isinstance(state, dict) or not isinstance(state.get('processes'), int) \
                or not isinstance(state.get('scheduler'), dict):
            raise StateError(f'{path}: expected processes, scheduler and progress entries')
        if state.get('format') != STATE_FORMAT:
            old = f"format {state.get('format')!r}"
    if old:
        raise StateError(f'{folder} was saved by an earlier timm-normplugins ({old}; this one writes format '
                         f'{STATE_FORMAT}), which ordered the data differently: resumed here the run would not '
                         'continue as it began. Finish it with the version that started it, or start it again')
    progress = state.get('progress')
    rows = progress.get('history') if isinstance(progress, dict) else None
    if not (isinstance(rows, list) and progress.get('epoch') == len(rows) and isinstance(progress.get('epoch'), int)
            and all(isinstance(r, dict) and r.get('epoch') == i + 1 and isinstance(r.get('train_loss'), (int, float))
                    for i, r in enumerate(rows)) and isinstance(progress.get('best'), (dict, type(None)))):
        raise StateError(f'{path}: the progress record (epoch, history rows, best) is malformed')
    loss = _safetensors(folder / LOSS_FILE) if (folder / LOSS_FILE).exists() else None
    return dict(processes=state['processes'], epochs=state.get('epochs'), scheduler=state['scheduler'],
                progress=progress, loss=loss)


def load_state(accelerator, folder: Path, training_state: 'TrainingState') -> None:
    """The recipe's ``TrainingState``, then ``accelerator.load_state``; a file not safely readable is named."""
    training_state.load(folder)
    files = [p for p in Path(folder).iterdir() if not re.fullmatch(r'custom_checkpoint_[0-9]+\.pkl', p.name)]
    try:  # Accelerate reads a view without planted custom_checkpoint_*.pkl (it would unpickle them)
        with tempfile.TemporaryDirectory(prefix='state-view-') as view:
            for path in files:
                os.symlink(path.resolve(), Path(view) / path.name)
            accelerator.load_state(view)
    except (ConfigError, TrainingError):
        raise
    except Exception as e:  # noqa: BLE001 -- torch's UnpicklingError, safetensors' errors, shape mismatches
        culprit = next((p for p in sorted(files) if not _plain(p)), None)
        where = f'{culprit} cannot be read as a plain state file' if culprit else f'cannot load the state {folder}'
        first = (str(e).strip().splitlines() or [''])[0][:200]
        raise StateError(f'{where} ({type(e).__name__}: {first}); nothing of it was loaded as code') from e


def _plain(path: Path) -> bool:
    """Whether safetensors or torch's restricted loader reads the file."""
    try:
        if path.suffix == '.safetensors':
            with safetensors.safe_open(str(path), framework='pt'):
                pass
        elif path.suffix in ('.bin', '.pkl', '.pt'):
            torch.load(path, map_location='cpu', weights_only=True)
        return True
    except Exception:  # noqa: BLE001 -- any refusal names the file
        return False


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
        state = dict(format=STATE_FORMAT, processes=self.accelerator.num_processes, epochs=self.epochs,
                     progress=self.progress.state_dict(), scheduler=self.scheduler.state_dict())
        (Path(output_dir) / STATE_FILE).write_text(json.dumps(state, indent=1))
        for module, name in ((self.loss_fn, LOSS_FILE), (self.ema and self.ema.module, EMA_FILE)):
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()} \
                if module is not None else {}
            if tensors:
                safetensors.torch.save_file(tensors, str(Path(output_dir) / name))

    def load(self, folder: Path) -> None:
        state = read_state(folder)
        if state['epochs'] in (None, self.epochs):
            self.scheduler.load_state_dict(state['scheduler'])
        self.progress.load_state_dict(state['progress'])
        if self.ema is not None and not (Path(folder) / EMA_FILE).exists():
            raise StateError(f'{folder} holds no {EMA_FILE} for --model-ema')
        try:
            self.loss_fn.load_state_dict(state['loss'] or {}, strict=True)
            if self.ema is not None:
                self.ema.module.load_state_dict(_safetensors(Path(folder) / EMA_FILE), strict=True)
        except RuntimeError as e:  # shape or key mismatches
            raise StateError(f'{folder}: the saved loss or EMA state does not fit this run '
                             f'({str(e).splitlines()[0][:200]})') from None
