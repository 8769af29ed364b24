""" File helpers shared by checkpoint writing and the training run folder. """
import os
import stat
from pathlib import Path

__all__ = ['new_file_mode']


def new_file_mode(path: Path) -> int:
    """Create ``path`` empty and return its mode: what the process umask gives new files (0644 under 022).
    Files written through ``mkstemp`` (0600) are given this mode so they look like any other new file."""
    with open(path, 'wb'):
        pass
    return stat.S_IMODE(os.stat(path).st_mode)
