""" The run folder's one way of writing: to ``NAME.tmp`` (a state folder: ``NAME.partial``), fsync, rename over
``NAME`` (a symlink there is replaced, never followed), fsync of the folder.

A reader, a ``--resume`` after a kill or a power loss sees the old or the new ``NAME``, never half of one. A write
that fails (a full disk) removes its temporary and raises one line naming the file, the cause and the free space.
"""
import gc
import os
import shutil
from pathlib import Path
from typing import Callable, Type, Union

from safetensors import SafetensorError

from .errors import RunWriteError, TrainingError

__all__ = ['write_atomic', 'remove', 'fsync']


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flush a file, or a folder's entries (a rename in it), to the disk. Windows cannot open a folder: skipped."""
    if os.name == 'nt' and path.is_dir():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(error: BaseException, path: Path) -> str:
    """The cause in one line. torch.save reports a full disk without errno: the free space says what happened."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    folder = next(p for p in path.parents if p.exists())
    usage = shutil.disk_usage(folder)
    free = f'{usage.free / 2 ** 20:.1f} MiB free'
    if usage.free < min(64 * 2 ** 20, usage.total // 100):
        return f'no space left on the disk ({free}; {first})'
    return f'{first} ({free} on that disk)'


def write_atomic(path: Union[str, Path], content: Union[str, Callable[[Path], object]],
                 error: Type[TrainingError] = RunWriteError, hint: str = '', suffix: str = '.tmp',
                 commit: bool = True) -> None:
    """Write ``content`` (text, or a function writing the path it is given) to ``path`` atomically.

    ``commit=False``: only write the temporary (another process of the run renames it).
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    if commit:
        remove(tmp)
    try:
        content(tmp) if callable(content) else tmp.write_text(content)
        if commit:
            for written in sorted(tmp.rglob('*'), reverse=True) if tmp.is_dir() else ():
                fsync(written)  # a state folder's files and subfolders, deepest first
            fsync(tmp)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
            fsync(path.parent)
        return
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        message = f'could not write {tmp if tmp.is_dir() else path}: {_why(e, path)}{hint}'
        e.__traceback__ = None  # its frames hold the half-written file open: a deleted file's space stays in use
    gc.collect()
    remove(tmp)
    raise error(message)
