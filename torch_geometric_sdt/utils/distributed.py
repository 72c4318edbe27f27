r"""The plumbing of the Ray engine: connecting to a cluster, embeddings held
as row shards, arrays shared through the object store, and map stages over
blocks of rows.

Ray is optional (``pip install torch_geometric_sdt[ray]``); this module
imports it only when a Ray engine runs. The stages of the pipeline
(:func:`~torch_geometric_sdt.nn.knn.knn`,
:meth:`~torch_geometric_sdt.nn.models.SDTClusterer.cluster`,
:func:`~torch_geometric_sdt.baselines.cluster_knn`) build on four pieces:

* :func:`connect` joins the Ray cluster at an address, or starts a local one
  when Ray is not initialised (as Ray Data does), and leaves it running for
  the next call;
* :class:`FeatureShards`: embeddings as a list of row blocks, each read by
  the task that needs it (memory-mapped files, Parquet, or arrays), so that
  no process has to hold all of them;
* :func:`share` puts a dict of arrays into the object store once, as NumPy
  arrays, which every worker on a node then reads without a copy
  (:func:`shared_tensors`);
* :func:`map_stage` runs one task per block and returns the results in
  block order, with a progress bar; a task whose worker dies is run again by
  Ray's own retries (:obj:`TASK_RETRIES`), and a stop request cancels the
  stage's unfinished tasks.

Tasks run with one thread per CPU Ray gave them (:func:`limit_threads`), so
that two workers on two cores do not oversubscribe them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from torch_geometric_sdt.utils.validation import check_choice

#: The engines of the pipeline's stages.
ENGINES = ('local', 'ray')
#: How often Ray runs a task again when its worker process dies (Ray's
#: ``max_retries``); an exception raised by our own code is not retried.
TASK_RETRIES = 3
#: Nodes per task of the map stages: a multiple of every chunk size the
#: local stages use (Top-K batches of 256, encoder chunks of 8192), so that
#: a task computes exactly the chunks the local engine computes.
DEFAULT_BLOCK_ROWS = 1 << 16

#: With the block size left to the engine, map stages aim at this many
#: tasks per CPU of the cluster, so that the last round of tasks is short
#: (four blocks on two CPUs take two rounds; seven take four, the last
#: nearly empty).
TASKS_PER_CPU = 4
#: The smallest block the engine picks on its own (per-task overhead:
#: reading the model and the shared arrays, about 10 ms).
MIN_BLOCK_ROWS = 8192

_INSTALL = "engine='ray' needs Ray: pip install 'torch_geometric_sdt[ray]'"


def check_engine(engine: Any) -> str:
    r"""Checks an engine name (one of :obj:`ENGINES`)."""
    check_choice('engine', engine, ENGINES)
    return engine


def import_ray() -> Any:
    r"""Imports Ray, or raises an :class:`ImportError` that names the extra
    to install."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover (Ray is in the test extra)
        raise ImportError(_INSTALL) from exc
    return ray


def connect(address: str | None = None) -> Any:
    r"""Joins the Ray cluster at :obj:`address` (*e.g.* ``'auto'``,
    ``'ray://head:10001'``, or ``'local'`` for a new local cluster), or,
    without one, what :func:`ray.init` picks: the cluster of
    ``RAY_ADDRESS``, else one started on this machine by ``ray start``, else a
    new local cluster of all its CPUs. When Ray is already initialised in
    this process, that session is used as it is and :obj:`address` must be
    :obj:`None`. The session stays up for later calls (end it with
    :func:`ray.shutdown`).

    Returns:
        The :mod:`ray` module.
    """
    ray = import_ray()
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                f'Ray is already initialised in this process; address={address!r} '
                'cannot change the cluster (call ray.shutdown() first, or pass no '
                'address)'
            )
        return ray
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except ConnectionError as exc:
        raise ValueError(f'cannot reach a Ray cluster at {address!r}: {exc}') from exc
    return ray


def limit_threads() -> int:
    r"""In a Ray task: lets PyTorch and numba use as many threads as the CPUs
    Ray assigned to the task (at least one). Returns that number."""
    ray = import_ray()
    cpus = ray.get_runtime_context().get_assigned_resources().get('CPU', 1.0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return threads


# ----------------------------------------------------------------------
# Embeddings held as row shards
# ----------------------------------------------------------------------
@dataclass(frozen=True)
class ArrayPart:
    r"""A shard held in memory: calling it returns the array."""

    array: np.ndarray

    def __call__(self) -> np.ndarray:
        return self.array


class FeatureShards:
    r"""Embeddings :math:`[N, D]` stored as consecutive row blocks (parts),
    each read on its own: part :math:`p` holds rows
    :math:`[o_p, o_p + n_p)` of the whole set.

    A part is a picklable callable returning its :obj:`[n_p, D]` float array
    (a memory-mapped file, a Parquet column, an array); it is called by the
    task that needs it, so the files must be readable where the tasks run
    (a shared file system or object store, as for Ray Data). Build shards of
    files with :func:`torch_geometric_sdt.io.feature_shards` and of an array
    with :meth:`from_array`.

    Args:
        parts (list of callables): The parts, in row order.
        sizes (list of int): Rows per part, :math:`n_p > 0`.
        dim (int): The embedding dimension :math:`D`.
        names (list of str, optional): A name per part (*e.g.* its file),
            for messages and per-part outputs. (default: :obj:`None`)
    """

    def __init__(
        self,
        parts: Sequence[Callable[[], np.ndarray]],
        sizes: Sequence[int],
        dim: int,
        names: Sequence[str] | None = None,
    ) -> None:
        if len(parts) == 0:
            raise ValueError('feature shards need at least one part')
        if len(sizes) != len(parts):
            raise ValueError(f'{len(parts)} parts but {len(sizes)} sizes')
        if any(int(s) <= 0 for s in sizes):
            raise ValueError(f'every part needs at least one row (sizes {list(sizes)})')
        if int(dim) <= 0:
            raise ValueError(f'dim must be positive (got {dim})')
        self.parts = list(parts)
        self.sizes = [int(s) for s in sizes]
        self.dim = int(dim)
        self.names = (
            [f'part {p}' for p in range(len(parts))] if names is None else list(names)
        )
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @classmethod
    def from_array(
        cls, x: Tensor | np.ndarray, rows_per_part: int = DEFAULT_BLOCK_ROWS
    ) -> FeatureShards:
        r"""Shards of an in-memory :obj:`[N, D]` array, :obj:`rows_per_part`
        rows each (the last one shorter)."""
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(
                'x must be a 2-D array [N, D] '
                f'(got {type(x).__name__} of shape {getattr(x, "shape", None)})'
            )
        if x.shape[0] == 0:
            raise ValueError('x has no rows (N = 0): there are no points to search')
        if rows_per_part <= 0:
            raise ValueError(f'rows_per_part must be positive (got {rows_per_part})')
        starts = range(0, x.shape[0], rows_per_part)
        parts = [ArrayPart(x[s : s + rows_per_part]) for s in starts]
        return cls(parts, [p.array.shape[0] for p in parts], x.shape[1])

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_rows, self.dim

    def __len__(self) -> int:
        return len(self.parts)

    def read(self, part: int) -> np.ndarray:
        r"""Reads one part and checks its shape."""
        x = np.asarray(self.parts[part]())
        if x.shape != (self.sizes[part], self.dim):
            raise ValueError(
                f'{self.names[part]} has shape {tuple(x.shape)}, expected '
                f'({self.sizes[part]}, {self.dim})'
            )
        return x

    def take(self, rows: np.ndarray) -> np.ndarray:
        r"""The rows :obj:`rows` (sorted global ids), read part by part."""
        rows = np.asarray(rows, dtype=np.int64)
        part = np.searchsorted(self.offsets, rows, side='right') - 1
        blocks = []
        for p in np.unique(part):
            local = rows[part == p] - self.offsets[p]
            blocks.append(np.asarray(self.read(int(p))[local]))
        return np.concatenate(blocks) if blocks else np.empty((0, self.dim))

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}({self.num_rows} rows, dim={self.dim}, '
            f'{len(self)} parts)'
        )


# ----------------------------------------------------------------------
# The object store and map stages
# ----------------------------------------------------------------------
def share(**arrays: Tensor | np.ndarray | None) -> Any:
    r"""Puts named arrays into the object store once, as NumPy arrays
    (tensors are viewed, not copied), and returns the reference: a task that
    takes it as an argument receives the dict, read-only and, on the node
    that holds it, without a copy. Read it with :func:`shared_tensors`."""
    ray = import_ray()
    out = {
        name: (a.detach().cpu().numpy() if isinstance(a, Tensor) else a)
        for name, a in arrays.items()
    }
    return ray.put(out)


def shared_tensors(arrays: dict[str, np.ndarray | None]) -> dict[str, Tensor | None]:
    r"""In a task: the arrays of :func:`share` as tensors sharing their
    memory (read-only: never write to them)."""
    out: dict[str, Tensor | None] = {}
    with warnings.catch_warnings():
        # Object-store arrays are read-only; the tensors are only read.
        warnings.filterwarnings('ignore', message='The given NumPy array is not')
        for name, a in arrays.items():
            out[name] = None if a is None else torch.from_numpy(a)
    return out


def auto_block_rows(num_rows: int, align: int = 1) -> int:
    r"""The rows per task of a map stage over :obj:`num_rows` rows on the
    connected cluster: :math:`\lceil N / (4 C) \rceil` for :math:`C` CPUs
    (:obj:`TASKS_PER_CPU`), within [:obj:`MIN_BLOCK_ROWS`,
    :obj:`DEFAULT_BLOCK_ROWS`], rounded up to a multiple of :obj:`align`
    (a chunk size the tasks must respect)."""
    ray = import_ray()
    cpus = max(1, int(ray.cluster_resources().get('CPU', 1)))
    rows = -(-num_rows // (TASKS_PER_CPU * cpus))
    rows = min(max(rows, MIN_BLOCK_ROWS), DEFAULT_BLOCK_ROWS)
    return -(-rows // align) * align


def blocks(
    num_rows: int, block_rows: int = DEFAULT_BLOCK_ROWS
) -> list[tuple[int, int]]:
    r"""Row ranges :math:`[r_0, r_1)` of at most :obj:`block_rows` rows,
    covering :math:`[0, N)`."""
    if block_rows <= 0:
        raise ValueError(f'block_rows must be positive (got {block_rows})')
    return [
        (lo, min(lo + block_rows, num_rows)) for lo in range(0, num_rows, block_rows)
    ]


@dataclass
class StageStats:
    r"""What a map stage did: its tasks, seconds, and the bytes its tasks
    read from and wrote to the object store (arguments counted once per
    task that reads them: an upper bound on what moved between nodes)."""

    name: str
    tasks: int = 0
    seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class EngineStats:
    r"""Per-stage statistics of one run on the Ray engine
    (:obj:`details['engine']` of the clustering calls)."""

    stages: list[StageStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            s.name: dict(
                tasks=s.tasks,
                seconds=round(s.seconds, 3),
                bytes_in=s.bytes_in,
                bytes_out=s.bytes_out,
            )
            for s in self.stages
        }


_REMOTE: dict[Callable[..., Any], Any] = {}


def _remote(fn: Callable[..., Any]) -> Any:
    # One Ray remote function per task function, made on first use.
    if fn not in _REMOTE:
        ray = import_ray()
        _REMOTE[fn] = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(fn)
    return _REMOTE[fn]


def nbytes(value: Any) -> int:
    r"""The bytes of the arrays in :obj:`value` (nested dicts, lists and
    tuples)."""
    if isinstance(value, ArrayPart):
        return int(value.array.nbytes)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Tensor):
        return int(value.numel() * value.element_size())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def _end_stage(ray: Any, refs: list[Any], cancel: bool) -> None:
    r"""After a failed stage: cancels the tasks of :obj:`refs` not yet
    finished (:obj:`cancel`, for a stop request), or waits until all of them
    have ended (for an error; see :func:`map_stage`)."""
    if not refs:
        return
    if cancel:
        _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in unfinished:
            ray.cancel(ref, force=True)
    else:
        ray.wait(refs, num_returns=len(refs), fetch_local=False)


def map_stage(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    name: str,
    stats: EngineStats | None = None,
    shared_bytes: int = 0,
    num_returns: int = 1,
    fetch: bool = True,
    progress: bool = False,
) -> list[Any]:
    r"""Runs :obj:`fn(*args)` as one Ray task per entry of :obj:`calls` and
    returns the results in that order.

    :obj:`fn` must be a module-level function (workers import it); object
    references among the arguments reach it as their values. Ray runs a task
    again when its worker dies (:obj:`TASK_RETRIES` times); an exception
    raised by :obj:`fn` itself fails the stage with that exception, once the
    stage's other tasks have ended. A stop request (Ctrl-C) cancels the tasks
    not yet finished.

    Only a stop request cancels tasks: cancelling a task whose reply is
    arriving can abort the driver process (a race in Ray's task manager,
    ``Check failed: it != submissible_tasks_.end()``, seen with Ray 2.60 when
    the tasks of a failed stage were cancelled), so an error lets the rest
    of the stage run out instead.

    Args:
        fn (callable): The task function.
        calls (list of tuples): The arguments of each task.
        name (str): The stage's name (progress bar and :obj:`stats`).
        stats (EngineStats, optional): Collects the stage's statistics.
        shared_bytes (int, optional): Bytes of the shared objects every task
            reads, for :obj:`stats`. (default: :obj:`0`)
        num_returns (int, optional): Values each task returns (a tuple of
            that many when above one). (default: :obj:`1`)
        fetch (bool, optional): :obj:`False` leaves the results in the
            object store and returns their references (a tuple per task when
            :obj:`num_returns > 1`). (default: :obj:`True`)
        progress (bool, optional): Shows a progress bar.
    """
    ray = import_ray()
    remote = _remote(fn)
    if num_returns != 1:
        remote = remote.options(num_returns=num_returns)
    start = time.perf_counter()
    refs = [remote.remote(*args) for args in calls]
    flat = refs if num_returns == 1 else [r for task in refs for r in task]
    try:
        pending = list(refs) if num_returns == 1 else [task[0] for task in refs]
        with tqdm(total=len(refs), desc=name, disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        if not fetch:
            results = refs
        elif num_returns == 1:
            results = ray.get(refs)
        else:
            results = [tuple(ray.get(list(task))) for task in refs]
    except BaseException as exc:
        _end_stage(ray, flat, cancel=not isinstance(exc, Exception))
        cause = getattr(exc, 'cause', None)
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(
            cause, Exception
        ):
            # Our own error in a task: raised as it was, not wrapped.
            raise cause from None
        raise
    if stats is not None:
        stats.stages.append(
            StageStats(
                name,
                len(refs),
                time.perf_counter() - start,
                sum(nbytes(args) for args in calls) + shared_bytes * len(refs),
                nbytes(results) if fetch else 0,
            )
        )
    return results


__all__ = [
    'ENGINES',
    'TASK_RETRIES',
    'DEFAULT_BLOCK_ROWS',
    'MIN_BLOCK_ROWS',
    'TASKS_PER_CPU',
    'ArrayPart',
    'EngineStats',
    'FeatureShards',
    'StageStats',
    'auto_block_rows',
    'blocks',
    'check_engine',
    'connect',
    'import_ray',
    'limit_threads',
    'map_stage',
    'nbytes',
    'share',
    'shared_tensors',
]
