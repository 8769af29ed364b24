""" The training state beyond Accelerate's own files, in formats that run no code when read.

Accelerate saves the objects given to ``register_for_checkpointing`` as ``custom_checkpoint_N.pkl`` and
loads them with ``torch.load(weights_only=False)``: a crafted state folder would run code on ``--resume``.
The recipe registers nothing there. Accelerate's save hook writes instead, into the same folder

* ``training_state.json``: epoch, metric history, best epoch, the scheduler's state (plain numbers),
  the process count and the epoch count the run was set to;
* ``loss.safetensors``: the loss module's tensors (MCEL's similarity, SG-MCEL's learnable ε), if any.

``TrainingState.load`` reads them back. Accelerate reads its own files (model: safetensors; optimizer and
RNG states: ``weights_only=True``, torch's restricted unpickler) through ``accelerate_view``, the folder
without any ``custom_checkpoint_*.pkl``: Accelerate refuses a folder holding more of those than objects
registered, and a planted one is never Accelerate's to read. States written before this format
(``custom_checkpoint_{0,1,2}.pkl``: scheduler, progress, loss) are read with ``weights_only=True``.
"""
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator

import safetensors.torch
import torch

from .errors import StateError

__all__ = ['TrainingState', 'read_state', 'accelerate_view', 'STATE_FILE', 'LOSS_FILE', 'EMA_FILE']

STATE_FILE = 'training_state.json'
LOSS_FILE = 'loss.safetensors'
EMA_FILE = 'model_ema.safetensors'
_LEGACY = ('custom_checkpoint_0.pkl', 'custom_checkpoint_1.pkl', 'custom_checkpoint_2.pkl')  # scheduler, progress, loss


def _check_progress(progress: Any, path: Path) -> Dict[str, Any]:
    ok = (isinstance(progress, dict) and isinstance(progress.get('epoch'), int) and progress['epoch'] >= 0
          and isinstance(progress.get('history'), list) and all(isinstance(r, dict) for r in progress['history'])
          and len(progress['history']) == progress['epoch'] and isinstance(progress.get('best'), (dict, type(None))))
    if not ok:
        raise StateError(f'{path}: the progress record (epoch, history, best) is malformed')
    return progress


def _plain_torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # an UnpicklingError for anything but tensors and plain containers
        raise StateError(f'{path}: not a plain state file, refusing to load it ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""})') from None


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
        loss = None
        if (folder / LOSS_FILE).exists():
            try:
                loss = safetensors.torch.load_file(str(folder / LOSS_FILE))
            except Exception as e:  # safetensors' own error types
                raise StateError(f'{folder / LOSS_FILE} is not a safetensors file ({e})') from None
        return dict(processes=state['processes'], epochs=state.get('epochs'), scheduler=state['scheduler'],
                    progress=_check_progress(state.get('progress'), path), loss=loss)
    if (folder / _LEGACY[1]).exists():  # written by the recipe before training_state.json
        scheduler, progress, loss = (_plain_torch_load(folder / name) for name in _LEGACY)
        if not isinstance(scheduler, dict) or not isinstance(loss, dict):
            raise StateError(f'{folder}: {_LEGACY[0]} / {_LEGACY[2]} do not hold state dicts')
        # Accelerate writes one random_states_<rank>.pkl per process
        processes = len(list(folder.glob('random_states_*.pkl')))
        return dict(processes=processes, epochs=None, scheduler=scheduler, loss=loss,
                    progress=_check_progress(progress, folder / _LEGACY[1]))
    raise StateError(f'{folder} holds no training state ({STATE_FILE})')


@contextmanager
def accelerate_view(folder: Path) -> Iterator[Path]:
    """``folder`` as ``accelerator.load_state`` may read it: without ``custom_checkpoint_*.pkl`` (symlinks)."""
    folder = Path(folder)
    keep = [p for p in folder.iterdir() if not re.fullmatch(r'custom_checkpoint_[0-9]+\.pkl', p.name)]
    if len(keep) == len(list(folder.iterdir())):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix='state-view-') as view:
        for path in keep:
            os.symlink(path.resolve(), Path(view) / path.name)
        yield Path(view)


class TrainingState:
    """Saves (through Accelerate's save hook) and loads scheduler, progress and loss state.

    ``epochs``: the run's current ``--epochs``. A state saved with another epoch count (a resume that
    extends the run) keeps the scheduler built for the new count, as timm's train.py rebuilds it.
    """

    def __init__(self, accelerator, scheduler, progress, loss_fn: torch.nn.Module, epochs: int, ema=None):
        self.accelerator, self.scheduler, self.progress, self.loss_fn = accelerator, scheduler, progress, loss_fn
        self.epochs, self.ema = epochs, ema  # ema: timm's ModelEmaV3 (--model-ema), saved as model_ema.safetensors
        accelerator.register_save_state_pre_hook(self._save)

    def _save(self, models, weights, output_dir) -> None:
        if not self.accelerator.is_main_process:
            return
        folder = Path(output_dir)
        state = dict(format=1, processes=self.accelerator.num_processes, epochs=self.epochs,
                     progress=self.progress.state_dict(), scheduler=self.scheduler.state_dict())
        (folder / STATE_FILE).write_text(json.dumps(state, indent=1))
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.loss_fn.state_dict().items()}
        if tensors:
            safetensors.torch.save_file(tensors, str(folder / LOSS_FILE))
        if self.ema is not None:
            ema = {k: v.detach().cpu().contiguous().clone() for k, v in self.ema.module.state_dict().items()}
            safetensors.torch.save_file(ema, str(folder / EMA_FILE))

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
            path = folder / EMA_FILE
            if not path.exists():
                raise StateError(f'{folder} holds no {EMA_FILE} for --model-ema')
            try:
                self.ema.module.load_state_dict(safetensors.torch.load_file(str(path)), strict=True)
            except Exception as e:  # safetensors' own errors, shape mismatches
                raise StateError(f'{path} cannot be loaded ({str(e).splitlines()[0][:200]})') from None

