""" Deprecated alias: ``--resume`` settings are in ``config.py``, the state naming in ``state.py`` (kept for
one release; see docs/CHANGELOG.md). """
from pathlib import Path

from .config import RESUME_MAY_CHANGE, args_from_yaml, find_run, restore_args  # noqa: F401
from .state import latest_state  # noqa: F401

__all__ = ['RESUME_MAY_CHANGE', 'find_run', 'latest_state', 'restore_args', 'saved_args']


def saved_args(run: Path):
    return args_from_yaml(Path(run) / 'args.yaml')
