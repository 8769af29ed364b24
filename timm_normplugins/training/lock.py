""" One run per folder: an exclusive lock on ``RUN/run.lock`` for as long as the run lives.

The lock is ``flock``, held on an open file: the kernel drops it when the process ends in any way,
``kill -9`` included, so a killed run never leaves a stale lock behind and ``--resume`` can take the
folder straight away. The file keeps the holder's pid and host, which the refusal quotes. (``flock``
works on local file systems; on NFS, Linux maps it to POSIX locks. Without ``fcntl`` -- Windows --
there is no lock.)
"""
import os
import socket
import time
from pathlib import Path

from .config import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

__all__ = ['RunLock', 'LOCK_NAME']

LOCK_NAME = 'run.lock'


class RunLock:
    """Take the lock of ``folder`` (which must exist) or raise ``ConfigError`` naming its holder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd = None
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by another live process
            holder = os.read(fd, 300).decode('utf-8', 'replace').strip() or 'holder unknown'
            os.close(fd)
            raise ConfigError(f'{folder} is in use by another run ({holder}; {self.path}): wait for it to end, '
                              'or choose another --experiment') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n'
                 .encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: deleting it could let two runs lock two different files)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
