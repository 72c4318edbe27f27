r"""Reading and writing embeddings, labels and kNN lists.

The field's file conventions (learn-to-cluster, used by the MS-Celeb-1M
clustering benchmark and its successors):

* **Features** ``.bin``: raw :obj:`float32`, row-major :math:`N \times D`, no
  header. :math:`D` is passed, or derived from the number of lines of the
  labels file ``.meta`` beside it (:math:`N` = number of lines).
* **Labels** ``.meta`` (or ``.txt``): one integer per line; :obj:`-1` marks an
  unlabeled item.
* **kNN lists** ``.npz``: key ``data`` holding a :obj:`[N, 2, k]` array whose
  ``[:, 0]`` are neighbour ids stored as floats and ``[:, 1]`` cosine
  distances :math:`1 - \cos` in ascending order, self first.

NumPy ``.npy`` / ``.npz`` files are read for features and labels as well. Large
files are memory-mapped (:class:`numpy.memmap` for ``.bin``, ``mmap_mode='r'``
for ``.npy``), so loading is cheap until the rows are touched.

Every writer goes through :func:`atomic_write`: the data lands in a temporary
file in the target directory, is flushed to disk and then renamed over the
target, so a crash or an interrupt never leaves a partial file behind and an
existing file is only replaced on :obj:`overwrite=True`.

Input validation: readers check what can be checked without touching every
row (so memory-mapping stays cheap) and raise :class:`ValueError` naming the
file and the problem: a missing or empty file, an unknown extension, a
``.bin`` whose size is not a multiple of :math:`4 D` (or of :math:`4 N` for
the :math:`N` labels beside it), arrays of the wrong rank or dtype, object
arrays (never unpickled), non-integer label lines, and kNN lists of the wrong
shape, :math:`N` or :math:`k`, with ids outside :math:`[0, N)` or
non-finite values. Values of the features themselves (NaN, Inf, zero rows)
are checked by :func:`~torch_geometric_sdt.nn.knn.knn`, the first step that
reads every row.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.atomic import PathLike, atomic_write, check_writable
from torch_geometric_sdt.utils.distributed import FeatureShards

if TYPE_CHECKING:
    from torch_geometric_sdt.nn.knn import KNN

ArrayLike = np.ndarray | Tensor

FEATURE_SUFFIXES = ('.bin', '.npy', '.npz')
LABEL_SUFFIXES = ('.meta', '.txt', '.npy', '.npz')
_FEATURE_KEYS = ('features', 'x', 'feats', 'embeddings', 'data')
_LABEL_KEYS = ('labels', 'y', 'label', 'data')
_CHUNK_ROWS = 1 << 16


# Helpers #####################################################################


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'no such file: {path}')
    if path.is_dir():
        raise IsADirectoryError(f'{path} is a directory, expected a file')
    if path.stat().st_size == 0:
        raise ValueError(f'{path} is empty')
    return path


def _suffix(path: Path, allowed: Sequence[str], what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise ValueError(
            f'unsupported {what} file extension {suffix!r} in {path} '
            f'(expected one of {", ".join(allowed)})'
        )
    return suffix


def _to_numpy(value: ArrayLike, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(
        f'{name} must be a numpy array or a torch tensor (got {type(value).__name__})'
    )


def _npz_array(
    path: Path, keys: Sequence[str], key: str | None, what: str
) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path} is not a valid .npz file (not a zip archive)')
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if key is None:
                if len(names) == 1:
                    key = names[0]
                else:
                    key = next((k for k in keys if k in names), None)
                    if key is None:
                        raise ValueError(
                            f'{path} has no {what} key: found {names}, expected '
                            f'one of {list(keys)} (or pass key=...)'
                        )
            elif key not in names:
                raise ValueError(f'{path} has no key {key!r} (found {names})')
            member = f'{key}.npy'
            if member not in archive.zip.namelist():
                member = key
            with archive.zip.open(member) as f:
                _refuse_objects(f, f'{path} (array {key!r})')
            return archive[key]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f'{path} is not a valid .npz file ({e})') from e


def _refuse_objects(f: IO[bytes], name: str) -> None:
    # Reads only the header of a .npy stream: an object array is a pickle,
    # which could run code when loaded, so it is refused before any loading.
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            dtype = np.lib.format.read_array_header_1_0(f)[2]
        elif version == (2, 0):
            dtype = np.lib.format.read_array_header_2_0(f)[2]
        else:
            return  # np.load (allow_pickle=False) still refuses objects.
    except ValueError:
        return  # A broken header is reported by np.load itself.
    if dtype.hasobject:
        raise ValueError(
            f'{name} holds Python objects (dtype {dtype}), i.e. a pickle, which '
            'is never loaded; store numeric arrays'
        )


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    with open(path, 'rb') as f:
        if f.read(6) != b'\x93NUMPY':
            raise ValueError(f'{path} is not a valid .npy file (bad magic string)')
        f.seek(0)
        _refuse_objects(f, str(path))
    try:
        return np.load(path, mmap_mode='r' if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f'{path} is not a valid .npy file ({e})') from e


def count_lines(path: PathLike) -> int:
    r"""Counts the lines of a text file in bounded memory (a last line without
    a trailing newline counts).

    Args:
        path (str or os.PathLike): The file.
    """
    path = _existing(path)
    count, last = 0, b'\n'
    with open(path, 'rb') as f:
        while block := f.read(1 << 24):
            count += block.count(b'\n')
            last = block[-1:]
    return count + (last != b'\n')


# Features ####################################################################


def load_features(
    path: PathLike,
    dim: int | None = None,
    mmap: bool = True,
    *,
    key: str | None = None,
) -> np.ndarray:
    r"""Loads an :math:`N \times D` embedding matrix, dispatching on the file
    extension.

    * ``.bin``: raw :obj:`float32` without header. :obj:`dim` is required
      unless a labels file with the same stem and suffix ``.meta`` lies beside
      it, in which case :math:`N` is its line count and :math:`D` follows from
      the file size.
    * ``.npy``: a 2-D floating point array.
    * ``.npz``: a 2-D floating point array stored under :obj:`key`, or under
      the only key, or under the first of ``features``, ``x``, ``feats``,
      ``embeddings``, ``data`` present.

    Args:
        path (str or os.PathLike): The features file.
        dim (int, optional): The embedding dimension :math:`D` of a ``.bin``
            file; checked against the file for the other formats.
            (default: :obj:`None`)
        mmap (bool, optional): Memory-map ``.bin`` and ``.npy`` files
            (read-only) instead of reading them into memory. ``.npz`` files are
            always read. (default: :obj:`True`)
        key (str, optional): The array name inside a ``.npz`` file.
            (default: :obj:`None`)

    Returns:
        numpy.ndarray: The :obj:`[N, D]` features, in the stored floating
        point type (:obj:`float32` for ``.bin``).

    Raises:
        FileNotFoundError: If :obj:`path` does not exist.
        ValueError: If the file is empty, truncated, of the wrong rank or
            type, or does not match :obj:`dim`.
    """
    path = _existing(path)
    suffix = _suffix(path, FEATURE_SUFFIXES, 'features')
    if dim is not None and (not isinstance(dim, (int, np.integer)) or dim <= 0):
        raise ValueError(f'dim must be a positive integer (got {dim!r})')

    if suffix == '.bin':
        return _load_bin(path, dim, mmap)
    if suffix == '.npy':
        x = _load_npy(path, mmap)
    else:
        x = _npz_array(path, _FEATURE_KEYS, key, 'features')
    if x.ndim != 2:
        raise ValueError(
            f'features in {path} must be 2-D [N, D] (got shape {tuple(x.shape)})'
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f'features in {path} must be floating point (got dtype {x.dtype})'
        )
    if x.dtype.itemsize > 8:
        raise ValueError(
            f'features in {path} have dtype {x.dtype}, which torch cannot hold '
            '(save them as float32 or float64)'
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f'features in {path} are empty (shape {tuple(x.shape)})')
    if not x.dtype.isnative:  # e.g. big-endian: torch reads native order only
        x = x.astype(x.dtype.newbyteorder('='))
    if dim is not None and x.shape[1] != dim:
        raise ValueError(
            f'features in {path} have dimension {x.shape[1]}, expected dim={dim}'
        )
    return x


def _load_bin(path: Path, dim: int | None, mmap: bool) -> np.ndarray:
    size = path.stat().st_size
    if dim is None:
        meta = path.with_suffix('.meta')
        if not meta.exists():
            raise ValueError(
                f'pass dim= to read {path}: its dimension cannot be derived '
                f'without a labels file {meta.name} beside it'
            )
        num = count_lines(meta)
        if size % (4 * num) != 0:
            raise ValueError(
                f'{path} holds {size} bytes, which is not N * D * 4 for the '
                f'N={num} lines of {meta} (truncated or mismatched file?)'
            )
        dim = size // (4 * num)
    elif size % (4 * dim) != 0:
        raise ValueError(
            f'{path} holds {size} bytes, which is not divisible by '
            f'4 * dim = {4 * dim} (truncated file or wrong dim?)'
        )
    num = size // (4 * dim)
    if mmap:
        return np.memmap(path, dtype='<f4', mode='r', shape=(num, dim))
    return np.fromfile(path, dtype='<f4').reshape(num, dim)


# Sharded features ############################################################

#: Part files :func:`feature_shards` reads from a folder.
SHARD_SUFFIXES = ('.npy', '.bin', '.parquet')
#: The embedding column of a Parquet part when none is named.
PARQUET_COLUMN = 'embedding'


@dataclass(frozen=True)
class FilePart:
    r"""Rows :math:`[r_0, r_1)` of one features file, read when called (a
    part of :class:`~torch_geometric_sdt.utils.distributed.FeatureShards`):
    ``.npy`` and ``.bin`` are memory-mapped, so a part reads its rows alone;
    a Parquet part reads its embedding column (a list of floats per row)."""

    path: str
    dim: int
    start: int
    stop: int
    column: str | None = None

    def __call__(self) -> np.ndarray:
        path = Path(self.path)
        if path.suffix == '.parquet':
            x = _read_parquet(path, self.column)
        else:
            x = load_features(path, dim=self.dim if path.suffix == '.bin' else None)
        return np.asarray(x[self.start : self.stop])


def _parquet_rows_dim(path: Path, column: str | None) -> tuple[int, int]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(
            f"reading {path} needs pyarrow: pip install 'torch_geometric_sdt[ray]'"
        ) from exc
    try:
        f = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types.
        raise ValueError(f'{path} is not a valid Parquet file ({exc})') from None
    name = column or PARQUET_COLUMN
    if name not in f.schema_arrow.names:
        raise ValueError(
            f'{path} has no column {name!r} (columns: {f.schema_arrow.names}); '
            'name the embedding column'
        )
    num = f.metadata.num_rows
    if num == 0:
        raise ValueError(f'{path} has no rows')
    first = f.read_row_group(0, columns=[name]).column(0)[0].as_py()
    if not isinstance(first, list) or not first:
        raise ValueError(f'column {name!r} of {path} must hold lists of floats')
    return num, len(first)


def _read_parquet(path: Path, column: str | None) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = column or PARQUET_COLUMN
    col = pq.read_table(path, columns=[name]).column(0).combine_chunks()
    if isinstance(col, pa.ChunkedArray):  # pragma: no cover (old pyarrow)
        col = col.chunk(0)
    lengths = col.value_lengths().to_numpy(zero_copy_only=False)
    if lengths.size and (lengths != lengths[0]).any():
        raise ValueError(f'column {name!r} of {path} holds lists of different lengths')
    values = col.flatten().to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f'column {name!r} of {path} must hold floats')
    return values.reshape(len(col), -1)


def _part_rows_dim(path: Path, dim: int | None, column: str | None) -> tuple[int, int]:
    if path.suffix == '.parquet':
        return _parquet_rows_dim(path, column)
    x = load_features(path, dim=dim)
    return int(x.shape[0]), int(x.shape[1])


def feature_shards(
    path: PathLike,
    *,
    dim: int | None = None,
    column: str | None = None,
    rows_per_part: int | None = None,
) -> FeatureShards:
    r"""Embeddings stored as row blocks for the Ray engine
    (:class:`~torch_geometric_sdt.utils.distributed.FeatureShards`), without
    reading them.

    * A **folder** of parts: every ``.npy``, ``.bin`` or ``.parquet`` file in
      it, in name order (name them ``part-00000.npy``, ...); the rows of the
      whole set are those of the parts one after the other.
    * A **single file** (``.npy``, ``.bin``, ``.parquet``): one part, or
      parts of :obj:`rows_per_part` rows of a memory-mapped ``.npy`` or
      ``.bin`` file, so that every task reads its own rows.

    Only the headers (``.npy``), sizes (``.bin``) and metadata (Parquet) are
    read here; each part is read by the task that needs it, so the files
    must be readable where the tasks run (a shared file system).

    Args:
        path (str or os.PathLike): A folder of parts or one features file.
        dim (int, optional): The dimension of ``.bin`` parts (else from a
            ``.meta`` labels file beside each). (default: :obj:`None`)
        column (str, optional): The embedding column of Parquet parts, a
            list of floats per row. (default: :obj:`'embedding'`)
        rows_per_part (int, optional): Rows per part of a single ``.npy`` or
            ``.bin`` file. (default: :obj:`None`: one part)

    Raises:
        ValueError: On a missing path, a folder without parts, parts of
            mixed kinds or dimensions, or an unreadable part.
    """
    path = Path(path)
    if not path.is_dir():
        path = _existing(path)
    else:
        files = sorted(
            p for p in path.iterdir() if p.suffix in SHARD_SUFFIXES and p.is_file()
        )
        if not files:
            raise ValueError(
                f'{path} holds no feature parts ({", ".join(SHARD_SUFFIXES)} files)'
            )
        if len({p.suffix for p in files}) > 1:
            raise ValueError(
                f'{path} mixes part formats ({sorted({p.suffix for p in files})}); '
                'keep one kind per folder'
            )
    if not path.is_dir():
        _suffix(path, SHARD_SUFFIXES, 'feature parts')
        files = [path]
    parts, sizes, names = [], [], []
    dims = set()
    for f in files:
        num, d = _part_rows_dim(f, dim, column)
        dims.add(d)
        step = num
        if rows_per_part is not None and len(files) == 1 and f.suffix != '.parquet':
            if rows_per_part <= 0:
                raise ValueError(
                    f'rows_per_part must be positive (got {rows_per_part})'
                )
            step = rows_per_part
        for lo in range(0, num, step):
            hi = min(lo + step, num)
            parts.append(FilePart(str(f), d, lo, hi, column))
            sizes.append(hi - lo)
            names.append(f.name if step == num else f'{f.name}[{lo}:{hi}]')
    if len(dims) > 1:
        raise ValueError(
            f'the parts in {path} have different dimensions {sorted(dims)}'
        )
    return FeatureShards(parts, sizes, dims.pop(), names)


def save_shard_labels(
    directory: PathLike,
    y: ArrayLike,
    shards: FeatureShards,
    suffix: str = '.meta',
    overwrite: bool = False,
) -> Path:
    r"""Writes one labels file per part of :obj:`shards` into
    :obj:`directory` (``<part file stem><suffix>``, in the format of
    :func:`save_labels`), atomically as a whole: the files are written into a
    temporary folder beside it that is then renamed into place, so a crash
    leaves no partial set. Parts of a single file are numbered
    (``<stem>-00000<suffix>``).
    """
    directory = Path(directory)
    y = _to_numpy(y, 'y')
    if y.shape != (shards.num_rows,):
        raise ValueError(f'y has shape {tuple(y.shape)}, expected ({shards.num_rows},)')
    _suffix(Path('labels' + suffix), ('.meta', '.txt', '.npy'), 'labels')
    if directory.exists() and not overwrite:
        raise ValueError(f'{directory} exists (pass overwrite=True to replace it)')
    stems = [Path(name.split('[')[0]).stem for name in shards.names]
    if len(set(stems)) < len(stems):
        stems = [f'{s}-{i:05d}' for i, s in enumerate(stems)]
    tmp = Path(tempfile.mkdtemp(prefix=f'.{directory.name}.', dir=directory.parent))
    try:
        for p, stem in enumerate(stems):
            lo, hi = int(shards.offsets[p]), int(shards.offsets[p + 1])
            save_labels(tmp / f'{stem}{suffix}', y[lo:hi])
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def save_features(
    path: PathLike,
    x: ArrayLike,
    overwrite: bool = False,
    *,
    key: str = 'features',
) -> Path:
    r"""Writes an :math:`N \times D` embedding matrix atomically, choosing the
    format from the extension (``.bin``: raw :obj:`float32`; ``.npy``;
    ``.npz`` under :obj:`key`). Rows are streamed in chunks, so memory-mapped
    input is never loaded whole.

    Args:
        path (str or os.PathLike): The output file.
        x (numpy.ndarray or torch.Tensor): The :obj:`[N, D]` features. ``.bin``
            files store :obj:`float32`; the other formats keep the type.
        overwrite (bool, optional): Replace an existing file.
            (default: :obj:`False`)
        key (str, optional): The array name in a ``.npz`` file.
            (default: :obj:`'features'`)

    Returns:
        pathlib.Path: The written path.
    """
    path = Path(path)
    suffix = _suffix(path, FEATURE_SUFFIXES, 'features')
    check_writable(path, overwrite)
    x = _to_numpy(x, 'x')
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f'x must be a 2-D floating point array '
            f'(got shape {tuple(x.shape)}, dtype {x.dtype})'
        )
    with atomic_write(path, overwrite) as tmp:
        if suffix == '.bin':
            with open(tmp, 'wb') as f:
                for start in range(0, x.shape[0], _CHUNK_ROWS):
                    chunk = x[start : start + _CHUNK_ROWS]
                    f.write(np.ascontiguousarray(chunk, dtype='<f4').tobytes())
        elif suffix == '.npy':
            out = np.lib.format.open_memmap(
                tmp, mode='w+', dtype=x.dtype, shape=x.shape
            )
            for start in range(0, x.shape[0], _CHUNK_ROWS):
                out[start : start + _CHUNK_ROWS] = x[start : start + _CHUNK_ROWS]
            out.flush()
            del out
        else:
            with open(tmp, 'wb') as f:
                np.savez(f, **{key: np.asarray(x)})
    return path


# Labels ######################################################################


def load_labels(
    path: PathLike,
    num_samples: int | None = None,
    *,
    key: str | None = None,
) -> np.ndarray:
    r"""Loads integer labels, dispatching on the file extension.

    * ``.meta`` / ``.txt``: one integer per line (any integers; :obj:`-1`
      conventionally marks an unlabeled item). A trailing newline is allowed,
      blank or non-integer lines are not.
    * ``.npy``: a 1-D integer array.
    * ``.npz``: a 1-D integer array under :obj:`key`, or the only key, or the
      first of ``labels``, ``y``, ``label``, ``data`` present.

    Args:
        path (str or os.PathLike): The labels file.
        num_samples (int, optional): The expected number of labels, e.g. the
            number of feature rows. (default: :obj:`None`)
        key (str, optional): The array name inside a ``.npz`` file.
            (default: :obj:`None`)

    Returns:
        numpy.ndarray: The :obj:`[N]` labels as :obj:`int64`.

    Raises:
        FileNotFoundError: If :obj:`path` does not exist.
        ValueError: If the file is empty, a line is not an integer, the array
            has the wrong rank or type, or the count is not
            :obj:`num_samples`.
    """
    path = _existing(path)
    suffix = _suffix(path, LABEL_SUFFIXES, 'labels')
    if suffix in ('.meta', '.txt'):
        y = _parse_int_lines(path)
    else:
        if suffix == '.npy':
            y = _load_npy(path, mmap=False)
        else:
            y = _npz_array(path, _LABEL_KEYS, key, 'labels')
        if y.ndim != 1:
            raise ValueError(
                f'labels in {path} must be 1-D [N] (got shape {tuple(y.shape)})'
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f'labels in {path} must be integers (got dtype {y.dtype})')
        if y.shape[0] == 0:
            raise ValueError(f'{path} holds no labels')
        y = y.astype(np.int64, copy=False)
    if num_samples is not None and y.shape[0] != num_samples:
        raise ValueError(
            f'{path} holds {y.shape[0]} labels, expected '
            f'{num_samples} (one per feature row)'
        )
    return y


def _parse_int_lines(path: Path) -> np.ndarray:
    lines = path.read_bytes().splitlines()
    if len(lines) == 0:
        raise ValueError(f'{path} holds no labels')
    try:
        return np.array(lines).astype(np.int64)
    except (ValueError, OverflowError):
        pass
    for num, line in enumerate(lines, start=1):  # Error path only.
        text = line[:50].decode(errors='replace')
        try:
            value = int(line)
        except (ValueError, OverflowError):
            raise ValueError(
                f'{path}, line {num}: expected one integer label, got {text!r}'
            ) from None
        if not -(2**63) <= value < 2**63:
            raise ValueError(
                f'{path}, line {num}: label {text!r} is outside the 64-bit '
                'integer range'
            )
    raise ValueError(f'{path} could not be parsed as integer labels')


def save_labels(
    path: PathLike,
    y: ArrayLike,
    overwrite: bool = False,
) -> Path:
    r"""Writes integer labels atomically, choosing the format from the
    extension: ``.meta`` / ``.txt`` (one integer per line) or ``.npy``
    (:obj:`int64`).

    Args:
        path (str or os.PathLike): The output file.
        y (numpy.ndarray or torch.Tensor): The :obj:`[N]` integer labels.
        overwrite (bool, optional): Replace an existing file.
            (default: :obj:`False`)

    Returns:
        pathlib.Path: The written path.
    """
    path = Path(path)
    suffix = _suffix(path, ('.meta', '.txt', '.npy'), 'labels')
    check_writable(path, overwrite)
    y = _to_numpy(y, 'y')
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f'y must be a 1-D integer array '
            f'(got shape {tuple(y.shape)}, dtype {y.dtype})'
        )
    with atomic_write(path, overwrite) as tmp:
        with open(tmp, 'wb') as f:
            if suffix == '.npy':
                np.save(f, y.astype(np.int64, copy=False))
            else:
                for start in range(0, y.shape[0], 1 << 20):
                    chunk = y[start : start + (1 << 20)].tolist()
                    f.write(('\n'.join(map(str, chunk)) + '\n').encode())
    return path


# Ids and id-labelled clusters ################################################


def load_ids(path: PathLike, num_ids: int | None = None) -> list[str]:
    r"""Reads item ids, one per line (UTF-8; surrounding whitespace is
    stripped; blank lines are refused).

    Args:
        path (str or os.PathLike): The ids file.
        num_ids (int, optional): The expected count. (default: :obj:`None`)
    """
    path = _existing(path)
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not UTF-8 text ({e.reason})') from None
    ids = [line.strip() for line in lines]
    for num, value in enumerate(ids, start=1):
        if not value:
            raise ValueError(f'{path}, line {num}: empty id')
    if not ids:
        raise ValueError(f'{path} holds no ids')
    if num_ids is not None and len(ids) != num_ids:
        raise ValueError(f'{path} holds {len(ids)} ids, expected {num_ids}')
    return ids


def save_id_labels(
    path: PathLike, ids: Sequence[str], labels: ArrayLike, overwrite: bool = False
) -> Path:
    r"""Writes :obj:`id,cluster` rows with a header line, atomically (a
    ``.csv`` file; ids quoted where CSV needs it)."""
    path = Path(path)
    _suffix(path, ('.csv',), 'labels')
    check_writable(path, overwrite)
    y = _to_numpy(labels, 'labels')
    if y.ndim != 1 or y.shape[0] != len(ids):
        raise ValueError(f'got {len(ids)} ids and labels of shape {tuple(y.shape)}')
    with atomic_write(path, overwrite) as tmp:
        with open(tmp, 'w', encoding='utf-8', newline='') as f:
            writer = csv.writer(f, lineterminator='\n')
            writer.writerow(['id', 'cluster'])
            writer.writerows(zip(ids, y.tolist()))
    return path


# kNN lists ###################################################################


def read_knn(
    path: PathLike,
    *,
    num_nodes: int | None = None,
    k: int | None = None,
    similarity: bool = False,
    with_self: bool = True,
    key: str = 'data',
) -> KNN:
    r"""Reads a learn-to-cluster kNN file into a :class:`KNN`.

    The file is an ``.npz`` archive with an :obj:`[N, 2, k]` array under
    ``data``: ``[:, 0]`` the neighbour ids (stored as floats), ``[:, 1]`` the
    cosine distance :math:`d = 1 - \cos` in ascending order, self first.
    The returned similarities are :math:`\cos = 1 - d`.

    Args:
        path (str or os.PathLike): The ``.npz`` file.
        num_nodes (int, optional): The expected :math:`N`. (default:
            :obj:`None`)
        k (int, optional): The expected list length of the *returned*
            :class:`KNN` (self included). (default: :obj:`None`)
        similarity (bool, optional): The file stores cosine similarities
            (descending) instead of distances. (default: :obj:`False`)
        with_self (bool, optional): The lists start with the node itself. If
            :obj:`False`, self is inserted at rank 0 with similarity 1
            (distance 0), so the result has one more column than the file.
            (default: :obj:`True`)
        key (str, optional): The array name. (default: :obj:`'data'`)

    Returns:
        KNN: :obj:`index` as :obj:`LongTensor[N, k]` and :obj:`sim` as
        :obj:`float32` :obj:`Tensor[N, k]`.

    Raises:
        ValueError: On a wrong key, rank or shape, a mismatch with
            :obj:`num_nodes` or :obj:`k`, or neighbour ids that are not
            integers in :math:`[0, N)`.
    """
    path = _existing(path)
    _suffix(path, ('.npz',), 'kNN')
    data = _npz_array(path, (key,), key, 'kNN')
    if data.ndim != 3 or data.shape[1] != 2:
        raise ValueError(
            f'kNN array in {path} must have shape [N, 2, k] (got {tuple(data.shape)})'
        )
    if not (
        np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)
    ):
        raise ValueError(
            f'kNN array in {path} must be numeric (got dtype {data.dtype})'
        )
    n, _, width = data.shape
    if n == 0 or width == 0:
        raise ValueError(f'kNN array in {path} is empty (shape {data.shape})')
    if num_nodes is not None and n != num_nodes:
        raise ValueError(f'{path} lists {n} nodes, expected num_nodes={num_nodes}')
    out_k = width if with_self else width + 1
    if k is not None and out_k != k:
        extra = '' if with_self else f' ({width} stored + self)'
        raise ValueError(f'{path} gives lists of length {out_k}{extra}, expected k={k}')

    ids = data[:, 0]
    if not np.isfinite(ids).all() or not (np.floor(ids) == ids).all():
        raise ValueError(f'neighbour ids in {path} must be finite integers')
    lo, hi = ids.min(), ids.max()
    if lo < 0 or hi >= n:
        raise ValueError(
            f'neighbour ids in {path} must lie in [0, {n}) '
            f'(found range [{int(lo)}, {int(hi)}])'
        )
    ids = ids.astype(np.int64)
    values = data[:, 1].astype(np.float32)
    if not np.isfinite(values).all():
        what = 'similarities' if similarity else 'distances'
        raise ValueError(f'{what} in {path} must be finite (found NaN or Inf)')
    sim = values if similarity else 1.0 - values
    ids, sim = _sorted_lists(path, ids, sim, with_self)
    index, sim = torch.from_numpy(ids), torch.from_numpy(sim)
    from torch_geometric_sdt.nn.knn import KNN  # Keeps `io` light to import.

    if not with_self:
        index = torch.cat([torch.arange(n).view(-1, 1), index], dim=1)
        sim = torch.cat([torch.ones(n, 1), sim], dim=1)
    return KNN(index, sim)


def _sorted_lists(
    path: Path, ids: np.ndarray, sim: np.ndarray, with_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    # kNN lists in the order the pipeline expects: decreasing similarity
    # (rows stored out of order are sorted, stably), and with self at rank 0
    # (a duplicate point listed before self at the same similarity swaps with
    # it; a row that does not list itself first is refused).
    n = ids.shape[0]
    for lo in range(0, n, _CHUNK_ROWS):
        rows = slice(lo, lo + _CHUNK_ROWS)
        if (np.diff(sim[rows], axis=1) > 0).any():
            order = np.argsort(-sim[rows], axis=1, kind='stable')
            ids[rows] = np.take_along_axis(ids[rows], order, axis=1)
            sim[rows] = np.take_along_axis(sim[rows], order, axis=1)
        if not with_self:
            continue
        node = np.arange(lo, lo + ids[rows].shape[0])
        bad = np.flatnonzero(ids[rows, 0] != node)
        if bad.size == 0:
            continue
        is_self = ids[rows][bad] == node[bad, None]
        pos = is_self.argmax(axis=1)
        tied = sim[rows][bad, pos] == sim[rows][bad, 0]
        ok = is_self.any(axis=1) & tied
        if not ok.all():
            row = int(lo + bad[np.flatnonzero(~ok)[0]])
            raise ValueError(
                f'{path}: row {row} does not list node {row} first; lists without '
                'self need with_self=False'
            )
        r = lo + bad
        first = ids[r, 0].copy()
        ids[r, pos], ids[r, 0] = first, node[bad]
    return ids, sim


def write_knn(
    path: PathLike,
    knn: KNN,
    overwrite: bool = False,
    *,
    similarity: bool = False,
    with_self: bool = True,
    compress: bool = False,
) -> Path:
    r"""Writes a :class:`KNN` as a learn-to-cluster ``.npz`` file atomically.

    Stores ``data`` of shape :obj:`[N, 2, k]`: ids as floats (:obj:`float32`
    while :math:`N \le 2^{24}`, where they are exact, else :obj:`float64`) and
    distances :math:`1 - \text{sim}`. The format assumes cosine similarities.

    Args:
        path (str or os.PathLike): The output ``.npz`` file.
        knn (KNN): The lists, self at rank 0.
        overwrite (bool, optional): Replace an existing file.
            (default: :obj:`False`)
        similarity (bool, optional): Store similarities instead of distances.
            (default: :obj:`False`)
        with_self (bool, optional): Keep self at rank 0; if :obj:`False` the
            first column is dropped (it must be self). (default: :obj:`True`)
        compress (bool, optional): Use :func:`numpy.savez_compressed`.
            (default: :obj:`False`)

    Returns:
        pathlib.Path: The written path.
    """
    path = Path(path)
    _suffix(path, ('.npz',), 'kNN')
    check_writable(path, overwrite)
    index, sim = knn.index, knn.sim
    if index.dim() != 2 or sim.shape != index.shape:
        raise ValueError(
            f'knn.index and knn.sim must both be [N, k] '
            f'(got {tuple(index.shape)} and {tuple(sim.shape)})'
        )
    n = index.size(0)
    if not with_self:
        if index.size(1) < 2:
            raise ValueError('with_self=False needs lists of length >= 2')
        if not torch.equal(index[:, 0].cpu(), torch.arange(n)):
            raise ValueError(
                'with_self=False drops column 0, which must be each node itself'
            )
        index, sim = index[:, 1:], sim[:, 1:]
    dtype = np.float32 if n <= (1 << 24) else np.float64
    data = np.empty((n, 2, index.size(1)), dtype=dtype)
    data[:, 0] = index.cpu().numpy()
    values = sim.detach().cpu().numpy()
    data[:, 1] = values if similarity else 1.0 - values
    with atomic_write(path, overwrite) as tmp:
        with open(tmp, 'wb') as f:
            (np.savez_compressed if compress else np.savez)(f, data=data)
    return path


__all__ = [
    'atomic_write',
    'check_writable',
    'count_lines',
    'load_features',
    'save_features',
    'load_labels',
    'save_labels',
    'load_ids',
    'save_id_labels',
    'read_knn',
    'write_knn',
    'FilePart',
    'SHARD_SUFFIXES',
    'feature_shards',
    'save_shard_labels',
]
