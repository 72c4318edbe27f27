r"""The on-disk home of a :class:`~torch_geometric_sdt.index.ClusterIndex`.

An index is a directory::

    DIR/
      index.sqlite      ids, cluster ids, history, settings (SQLite)
      vectors.f32       the embeddings, float32 rows, append-only
      state/v<V>/       the arrays of committed version V (kNN lists, links,
                        model state), one .npy file each
      model.safetensors the SDT checkpoint (method 'sdt' only)
      lock              held (flock) by the one process writing

**Atomic updates.** An update appends its vectors past the committed row
count, writes the next version's arrays into a new folder and then commits
one SQLite transaction that records the new row count, the new version, the
faces, their cluster ids and the history. Until that commit the previous
version is what every reader sees; a process killed at any point leaves
either the old or the new state readable, and the next writer removes what
an interrupted update left behind (vectors past the committed count, state
folders of versions never committed).

**One writer.** Writers hold an exclusive :func:`fcntl.flock` on
:obj:`DIR/lock` for their lifetime; a second writer gets a
:class:`IndexLockedError` at once instead of waiting or corrupting. Readers
take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

#: The format name and version recorded in every index.
FORMAT = 'torch_geometric_sdt.ClusterIndex'
FORMAT_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE faces (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    cluster INTEGER,
    alive INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX faces_cluster ON faces (cluster);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL,
    time TEXT NOT NULL,
    op TEXT NOT NULL,
    event TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""


class IndexLockedError(ValueError):
    """Another process holds the index open for writing."""


class IndexStore:
    r"""Low-level storage of an index directory (see the module docstring).

    Open with :meth:`create` or :meth:`open`; :attr:`writable` stores hold
    the directory's lock until :meth:`close`.
    """

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = path
        self.writable = writable
        self._lock_fd: int | None = None
        if writable:
            self._lock_fd = _acquire_lock(path / 'lock')
        uri = f'file:{path / "index.sqlite"}' + ('' if writable else '?mode=ro')
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.OperationalError as e:
            self._release()
            raise ValueError(f'{path}: cannot open index.sqlite ({e})') from None
        self.db.execute('PRAGMA synchronous = FULL')

    # ------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], meta: dict[str, Any]) -> IndexStore:
        """Creates an index directory at :obj:`path`, which must not exist."""
        path = Path(path)
        path.mkdir()
        (path / 'state').mkdir()
        (path / 'vectors.f32').touch()
        store = cls(path, writable=True)
        store.db.executescript(_SCHEMA)
        with store.transaction():
            store.set_meta(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                version=0,
                num_rows=0,
                next_cluster=0,
                **meta,
            )
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], writable: bool) -> IndexStore:
        """Opens an existing index; checks its format and version."""
        path = Path(path)
        if not (path / 'index.sqlite').is_file():
            raise ValueError(f'{path} is not a cluster index (no index.sqlite)')
        store = cls(path, writable=writable)
        try:
            meta = store.meta()
            if meta.get('format') != FORMAT:
                raise ValueError(f'{path} is not a {FORMAT} index')
            version = int(meta['format_version'])
            if version > FORMAT_VERSION:
                raise ValueError(
                    f'{path} has index format version {version}, newer than '
                    f'this library reads ({FORMAT_VERSION}); upgrade '
                    'torch_geometric_sdt'
                )
            if writable:
                store.discard_uncommitted()
        except (ValueError, KeyError, sqlite3.DatabaseError) as e:
            store.close()
            if isinstance(e, ValueError):
                raise
            raise ValueError(f'{path}: damaged index ({e})') from None
        return store

    def close(self) -> None:
        self.db.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # Closing the descriptor drops the flock.
            self._lock_fd = None

    # ------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction: committed when the block exits normally,
        rolled back when it raises."""
        self.db.execute('BEGIN IMMEDIATE')
        try:
            yield
        except BaseException:
            self.db.execute('ROLLBACK')
            raise
        self.db.execute('COMMIT')

    def meta(self) -> dict[str, Any]:
        rows = self.db.execute('SELECT key, value FROM meta').fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_meta(self, **values: Any) -> None:
        self.db.executemany(
            'INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)',
            [(key, json.dumps(value)) for key, value in values.items()],
        )

    # ------------------------------------------------------------------
    # Vectors: float32 rows, append-only; the committed count is in meta.
    def read_vectors(self, num_rows: int, dim: int) -> np.ndarray:
        """The first :obj:`num_rows` committed vectors, memory-mapped."""
        if num_rows == 0:
            return np.empty((0, dim), dtype=np.float32)
        return np.memmap(
            self.path / 'vectors.f32', np.float32, 'r', shape=(num_rows, dim)
        )

    def append_vectors(self, x: np.ndarray, num_rows: int) -> None:
        """Writes :obj:`x` after the first :obj:`num_rows` rows (anything
        beyond them was never committed) and syncs it to disk."""
        data = np.ascontiguousarray(x, dtype=np.float32)
        with open(self.path / 'vectors.f32', 'r+b') as f:
            f.truncate(num_rows * data.shape[1] * 4)
            f.seek(0, os.SEEK_END)
            f.write(data.tobytes())
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------
    # Arrays of one version.
    def read_arrays(self, version: int) -> dict[str, np.ndarray]:
        folder = self.path / 'state' / f'v{version}'
        if version == 0:
            return {}
        if not folder.is_dir():
            raise ValueError(f'{self.path}: the state of version {version} is missing')
        return {p.stem: np.load(p) for p in sorted(folder.glob('*.npy'))}

    def write_arrays(self, version: int, arrays: dict[str, np.ndarray]) -> None:
        """Writes the arrays of an uncommitted :obj:`version` (a temporary
        folder renamed into place once every file is on disk)."""
        state = self.path / 'state'
        tmp = state / f'.v{version}.{os.getpid()}.tmp'
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, value in arrays.items():
            with open(tmp / f'{name}.npy', 'wb') as f:
                np.save(f, np.ascontiguousarray(value), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        final = state / f'v{version}'
        if final.exists():  # Left by an update killed before its commit.
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(state)

    def discard_uncommitted(self) -> list[str]:
        """Removes what interrupted updates left: state folders other than
        the committed version's. Returns their names."""
        version = int(self.meta()['version'])
        removed = []
        for entry in (self.path / 'state').iterdir():
            if entry.name != f'v{version}':
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed

    # ------------------------------------------------------------------
    def add_history(
        self, version: int, op: str, events: list[tuple[str, list, list, int]]
    ) -> None:
        stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        self.db.executemany(
            'INSERT INTO history (version, time, op, event, source, target, size) '
            'VALUES (?, ?, ?, ?, ?, ?, ?)',
            [
                (version, stamp, op, kind, json.dumps(src), json.dumps(dst), size)
                for kind, src, dst, size in events
            ],
        )

    def history(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            'SELECT version, time, op, event, source, target, size FROM history '
            'ORDER BY seq'
        ).fetchall()
        return [
            dict(
                version=v,
                time=t,
                op=op,
                event=ev,
                source=json.loads(src),
                target=json.loads(dst),
                size=size,
            )
            for v, t, op, ev, src, dst, size in rows
        ]


def _acquire_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexLockedError(
            f'{path.parent} is open for writing in another process; close it '
            'there first'
        ) from None
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ['FORMAT', 'FORMAT_VERSION', 'IndexLockedError', 'IndexStore']
