""" The report folder's door and its one way of writing.

``check_output``: an ``--output`` that cannot take the report (a file where the folder should be, a report
file that is a symlink or a folder, a folder that cannot be created or written) is found before any
attack runs, as one line naming it.

``write_files_atomic``: every file of a report is written to a hidden temporary next to it, flushed to
disk (fsync), and only when all of them are complete renamed over the old ones; a full disk (or any
write error) removes the temporaries and leaves the previous report as it was.
"""
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence, Tuple, Union

__all__ = ['ReportOutputError', 'check_output', 'write_files_atomic', 'write_text_atomic']


class ReportOutputError(ValueError):
    """The report folder cannot be used, or a report file could not be written (one line, naming it)."""


def _why(e: OSError) -> str:
    return e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def check_output(output: Union[str, Path], names: Sequence[str] = (), create: bool = True) -> Path:
    """Check that ``output`` can hold the files ``names`` (and folders ending in ``/``); return it.

    Without ``create`` nothing is made: an existing folder is probed for writing, a missing one is
    checked to be creatable (its nearest existing parent a writable folder). With ``create`` the
    folder is made and a temporary file written and removed in it.
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ReportOutputError(f'--output {out} is a file, not a folder')
    for name in names:
        entry = out / name.rstrip('/')
        if entry.is_symlink():  # the report would be written wherever it points
            raise ReportOutputError(f'{entry} is a symlink (to {os.readlink(entry)}); a report file must be a '
                                    'plain file inside --output: remove the link')
        if name.endswith('/') and entry.exists() and not entry.is_dir():
            raise ReportOutputError(f'{entry} is a file where the report keeps a folder')
        if not name.endswith('/') and entry.is_dir():
            raise ReportOutputError(f'{entry} is a folder where the report writes a file')
    if not create:
        parent = out
        while not parent.exists():
            if parent == parent.parent:
                break
            parent = parent.parent
        if not parent.is_dir():
            raise ReportOutputError(f'--output {out} cannot be created: {parent} is not a folder')
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReportOutputError(f'--output {out} is not writable ({parent}: permission denied)')
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportOutputError(f'--output {out} cannot be created ({_why(e)})') from None
    try:
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ReportOutputError(f'--output {out} is not writable ({_why(e)})') from None
    return out


def _temporary(path: Path) -> Path:
    # the suffix stays last: matplotlib picks the image format from it
    return path.with_name(f'.{path.stem}.tmp{path.suffix}')


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory fds: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_files_atomic(files: Iterable[Tuple[Union[str, Path], Callable[[Path], object]]]) -> None:
    """Write every ``(path, writer)``: ``writer(tmp)`` writes a temporary, which is fsynced; once all are
    complete they are renamed onto their paths. On an error nothing is renamed, the temporaries are
    removed, and ``ReportOutputError`` names the file."""
    done = []
    try:
        for path, writer in files:
            path = Path(path)
            tmp = _temporary(path)
            done.append((tmp, path))
            try:
                writer(tmp)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise ReportOutputError(f'could not write {path}: {_why(e)}; the previous file is unchanged') \
                    from None
        for tmp, path in done:
            os.replace(tmp, path)  # a symlink at ``path`` is replaced, never followed
        for folder in {path.parent for _, path in done}:
            _fsync_dir(folder)
    except BaseException:
        for tmp, _ in done:
            try:
                tmp.unlink()
            except OSError:
                pass
        raise


def write_text_atomic(path: Union[str, Path], text: str) -> None:
    def write(tmp: Path):
        with open(tmp, 'w', encoding='utf-8', newline='') as f:
            f.write(text)
    write_files_atomic([(path, write)])
