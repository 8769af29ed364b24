""" One run per folder: ``filelock`` on ``RUN/run.lock`` for as long as the run lives.

An OS lock (``flock``; Windows: ``msvcrt``) held on an open file: the kernel drops it when the process ends in
any way, ``kill -9`` included, so ``--resume`` can take the folder straight away. The file keeps the holder's
pid and host, which the refusal quotes; it stays after release, as deleting it could let two runs lock two
different files.
"""
import os
import socket
import time
from pathlib import Path

import filelock

from .errors import ConfigError

__all__ = ['RunLock', 'LOCK_NAME']

LOCK_NAME = 'run.lock'


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, f'pid {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode())


class RunLock:
    """Take the lock of ``folder`` (which must exist) or raise ``ConfigError`` naming its holder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._lock = filelock.FileLock(self.path, timeout=0, on_acquired=_write_holder, preserve_lock_file=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = self.path.read_text(errors='replace').strip() or 'holder unknown'
            raise ConfigError(f'{folder} is in use by another run ({holder}; {self.path}): wait for it to end, '
                              'or choose another --experiment') from None

    def release(self) -> None:
        self._lock.release()
