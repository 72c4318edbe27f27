"""Writing a file all at once or not at all.

The one home of the package's atomic writes: :mod:`torch_geometric_sdt.io`
re-exports them, and every writer of the package (labels, features, kNN
lists, checkpoints, training states) goes through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Union

PathLike = Union[str, 'os.PathLike[str]']


@contextmanager
def atomic_write(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    r"""Context manager for writing :obj:`path` all at once or not at all.

    Yields a temporary path in the same directory as :obj:`path` (hidden, with
    the same suffix, so that writers such as :func:`numpy.save` keep the name),
    named after the writing process:
    :obj:`.<stem>.<pid>.<random>.tmp<suffix>`.
    When the block exits normally the temporary file is flushed with
    :func:`os.fsync` and renamed onto :obj:`path` with :func:`os.replace`,
    which is atomic on POSIX and Windows; the directory entry is synced too.
    When the block raises, including :class:`KeyboardInterrupt`, the temporary
    file is removed and :obj:`path` is untouched. A process killed outright
    (``SIGKILL``) can leave the hidden temporary behind, but never a partial
    :obj:`path`; the next :func:`atomic_write` of the same :obj:`path`
    removes the temporaries of it whose process is gone (never those of a
    live process, nor any other file).

    .. code-block:: python

        with atomic_write('labels.npy') as tmp:
            np.save(tmp, labels)

    Args:
        path (str or os.PathLike): The final file.
        overwrite (bool, optional): Replace :obj:`path` if it exists. Checked
            before anything is written. (default: :obj:`False`)

    Raises:
        FileExistsError: If :obj:`path` exists and :obj:`overwrite` is
            :obj:`False`.
        FileNotFoundError: If the parent directory does not exist.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    check_writable(path, overwrite)
    fd, name = tempfile.mkstemp(
        prefix=f'.{path.stem}.{os.getpid()}.',
        suffix=f'.tmp{path.suffix}',
        dir=path.parent,
    )
    os.close(fd)
    tmp = Path(name)
    try:
        # mkstemp creates 0o600; give the result the usual permissions (those
        # of the replaced file, else 0o666 masked by the umask).
        if path.exists():
            mode = path.stat().st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(f'{path} appeared while it was being written')
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def check_writable(path: PathLike, overwrite: bool = False) -> None:
    """Raises before any work if :obj:`path` cannot be written: it exists
    (and :obj:`overwrite` is off), is a directory, or its directory is
    missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f'{path} exists (pass overwrite=True, or --overwrite on the command '
            'line, to replace it)'
        )
    if path.is_dir():
        raise IsADirectoryError(f'{path} is a directory')
    if not path.parent.is_dir():
        raise FileNotFoundError(f'directory {path.parent} does not exist')


def process_alive(pid: int) -> bool:
    r"""Whether process :obj:`pid` may still be running. Errs towards
    :obj:`True`: a process of another user counts as alive, and so does any
    process where this cannot be told (not POSIX), so that its files are
    kept.
    """
    if pid == os.getpid() or pid <= 0 or os.name != 'posix':
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # e.g. PermissionError: another user's
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    r"""Removes the temporaries of :obj:`path` that :func:`atomic_write` left
    in a process killed outright: files named
    :obj:`.<stem>.<pid>.<random>.tmp<suffix>` beside :obj:`path`, owned by
    this user, whose process is gone. Temporaries of live processes, of other
    targets and every other file are left alone.

    Returns:
        list: The removed paths.
    """
    path = Path(path)
    pattern = re.compile(
        rf'\.{re.escape(path.stem)}\.(\d+)\.[A-Za-z0-9_]+'
        rf'\.tmp{re.escape(path.suffix)}'
    )
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    uid = getattr(os, 'getuid', lambda: None)()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            os.remove(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Not supported (e.g. Windows); the rename itself is done.
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ['atomic_write', 'check_writable']
