""" The run folder's one way of writing: to ``NAME.tmp`` (a state folder: ``NAME.partial``), then a rename.

A reader (or a ``--resume`` after a kill) sees the old or the new ``NAME``, never half of one. A write that
fails (a full disk) removes its temporary and raises one line naming the file, the cause and the free space.
"""
import gc
import os
import shutil
from pathlib import Path
from typing import Callable, Type, Union

from safetensors import SafetensorError

from .errors import RunWriteError, TrainingError

__all__ = ['write_atomic', 'remove']


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _why(error: BaseException, path: Path) -> str:
    """The cause in one line. torch.save reports a full disk as an inline_container position mismatch,
    without errno: the free space says what happened."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
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
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
        return
    except (OSError, RuntimeError, SafetensorError) as e:  # torch.save reports a full disk as RuntimeError
        shown = tmp if tmp.is_dir() else path
        message = f'could not write {shown}: {_why(e, path)}{hint}'
        # the writer's frames hold the half-written file open: drop them, or a deleted file's space stays in use
        e.__traceback__ = None
    gc.collect()
    remove(tmp)
    raise error(message)
