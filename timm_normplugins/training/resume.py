""" ``--resume RUN``: the run's own settings, and the state folder ``state/LATEST`` names.

A resumed run is the run it continues: its flags come from ``RUN/args.yaml``. A flag given again is
accepted when it equals the saved value (``scripts/reproduce.py`` reruns its whole command plus
``--resume``) and refused, with the list, when it contradicts it -- except for ``RESUME_MAY_CHANGE``,
which do not change what the saved epochs computed: ``--epochs`` (extend or shorten the run), where
the data and outputs live, the progress display and trackers, and the attacks run after training.
"""
import argparse
import re
from pathlib import Path
from typing import Iterable, Optional

from .config import ConfigError, args_from_yaml

__all__ = ['RESUME_MAY_CHANGE', 'find_run', 'latest_state', 'restore_args', 'saved_args']

RESUME_MAY_CHANGE = frozenset({
    'epochs', 'stop_after_epochs', 'resume', 'output', 'experiment', 'data_dir', 'download', 'log_interval',
    'eval_attack', 'eval_num_images', 'log_with', 'log_wandb',
})
_STATE_NAME = re.compile(r'epoch_[0-9]+')


def find_run(path) -> Path:
    """The run folder (holding ``args.yaml``) of ``path``: the folder itself, its ``state/`` or a state in it."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / 'args.yaml').is_file():
            return candidate
    raise ConfigError(f'--resume {path}: no run there (expected {path / "args.yaml"})')


def latest_state(run: Path) -> Optional[Path]:
    """The complete state ``RUN/state/LATEST`` names, or None before the first epoch was saved.

    LATEST holds a bare ``epoch_K`` name: anything else (binary content, a path leaving the run folder)
    is refused rather than followed.
    """
    latest = run / 'state' / 'LATEST'
    if not latest.exists():
        return None
    raw = latest.read_bytes()
    try:
        name = raw.decode('ascii').strip()
    except UnicodeDecodeError:
        raise ConfigError(f'{latest} is not a state name (binary content); it should hold e.g. "epoch_3"') from None
    if not _STATE_NAME.fullmatch(name):
        raise ConfigError(f'{latest} names {name[:80]!r}, not a state folder epoch_K of {run / "state"}')
    folder = run / 'state' / name
    if not folder.is_dir():
        raise ConfigError(f'{latest} names {name}, but {folder} does not exist')
    return folder


def saved_args(run: Path) -> argparse.Namespace:
    """The settings ``RUN/args.yaml`` records, checked and completed with today's defaults for newer flags."""
    return args_from_yaml(run / 'args.yaml')


def _shown(value) -> str:
    return ' '.join(map(str, value)) if isinstance(value, list) else str(value)


def restore_args(args: argparse.Namespace, given: Iterable[str]) -> argparse.Namespace:
    """The saved settings of the run ``args.resume`` names, with the given flags that may change applied.

    ``given``: dests set on the command line or by ``--config`` (whatever their value).
    """
    run = find_run(args.resume)
    saved = saved_args(run)
    given = set(given)
    conflicts = [f'--{k.replace("_", "-")} {_shown(getattr(args, k))} (the run has {k}={getattr(saved, k)!r})'
                 for k in sorted(given - RESUME_MAY_CHANGE) if getattr(args, k) != getattr(saved, k)]
    if conflicts:
        allowed = ', '.join('--' + k.replace('_', '-') for k in sorted(RESUME_MAY_CHANGE - {'resume'}))
        raise ConfigError(f'--resume {run}: {"; ".join(conflicts)} contradict the run\'s settings '
                          f'({run / "args.yaml"}). --resume alone restores them; only {allowed} may change')
    if {'output', 'experiment'} & given:
        asked = Path(args.output if 'output' in given else run.parent) / (
            args.experiment if 'experiment' in given else run.name)
        if asked.resolve() != run.resolve():
            raise ConfigError(f'--resume {run} with --output/--experiment naming another folder ({asked})')
    for key in given & RESUME_MAY_CHANGE:
        setattr(saved, key, getattr(args, key))
    saved.resume = str(run)
    return saved
