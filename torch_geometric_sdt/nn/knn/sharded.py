r"""The exact kNN search of the Ray engine: a sharded brute-force search.

The embeddings come as :class:`~torch_geometric_sdt.utils.distributed.
FeatureShards` (row blocks). A first map stage reads and prepares every part
once (checks, rows normalised for cosine) into the object store; then one
task per block of query rows searches it against every part in turn, one
part in memory at a time, keeping a running top-:math:`k`. Partial lists
over disjoint parts combine exactly
(:func:`~torch_geometric_sdt.nn.knn.common.merge`: similarity descending,
id ascending, the query itself first), so the lists are those of the
query-chunk path of the local exact search (:obj:`backend='exact'`): the
same ids, and similarities equal up to the rounding of differently shaped
matrix products.

Memory per task: one query block (:obj:`block_rows` :math:`\times D`), one
part, one similarity block (:obj:`DEFAULT_BLOCK_NUMEL` floats) and the
block's running lists (:obj:`block_rows` :math:`\times k \times 12`
bytes); parts read from the object store on the task's node are not copied.
Work: :math:`N^2 D` multiply-adds over all tasks; data moved: every task
reads every part, :math:`T N D \times 4` bytes for :math:`T` tasks when no
part is on the task's node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torch_geometric_sdt.utils.distributed import (
    EngineStats,
    FeatureShards,
    auto_block_rows,
    connect,
    import_ray,
    limit_threads,
    map_stage,
    shared_tensors,
)

from .common import (
    clamp_similarity,
    l2_exponent,
    max_abs_rows,
    merge,
    prepare,
    scale_pow2,
)
from .exact import DEFAULT_BLOCK_NUMEL, DEFAULT_COL_CHUNK_SIZE, block_topk


def _prepare_part(
    part: Any, size: int, dim: int, name: str, metric: str
) -> tuple[np.ndarray, float]:
    # Task: reads one part and prepares it as the local search prepares x.
    limit_threads()
    x = np.asarray(part())
    if x.shape != (size, dim):
        raise ValueError(f'{name} has shape {tuple(x.shape)}, expected ({size}, {dim})')
    try:
        xt, _ = prepare(x, metric)
    except ValueError as exc:
        raise ValueError(f'{name}: {exc}') from None
    largest = float(max_abs_rows(xt).max()) if metric == 'l2' else 0.0
    return xt.numpy(), largest


def _search_block(
    query: np.ndarray,
    lo: int,
    hi: int,
    offset: int,
    parts: list[Any],
    offsets: list[int],
    k: int,
    metric: str,
    exponent: int,
    chunk_size: int | None,
    col_chunk_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    # Task: the top-k of query rows [lo, hi) of one part against every part.
    ray = import_ray()
    limit_threads()

    def scaled(a: np.ndarray) -> torch.Tensor:
        # A view of the object store's read-only block (the search never
        # writes to it); scaling makes a new tensor.
        t = shared_tensors({'x': a})['x']
        return scale_pow2(t, exponent) if exponent else t  # type: ignore[arg-type]

    xq = scaled(query[lo:hi])
    qid = torch.arange(offset + lo, offset + hi)
    num_query = hi - lo
    # The same query chunks against every part (their running lists merge).
    rows = chunk_size or max(1, DEFAULT_BLOCK_NUMEL // col_chunk_size)
    best: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for part, c_off in zip(parts, offsets):
        xp = ray.get(part)
        width = min(col_chunk_size, xp.shape[0])
        for c0 in range(0, xp.shape[0], width):
            xb = scaled(xp[c0 : c0 + width])
            sq = (xb * xb).sum(dim=1) if metric == 'l2' else None
            for n, r0 in enumerate(range(0, num_query, rows)):
                cand = block_topk(
                    xq[r0 : r0 + rows], qid[r0 : r0 + rows], xb, c_off + c0, k, sq
                )
                if n == len(best):
                    best.append(cand)
                else:
                    best[n] = merge(best[n], cand, k)  # type: ignore[arg-type]
    val = torch.cat([b[0] for b in best])  # type: ignore[index]
    idx = torch.cat([b[1] for b in best])  # type: ignore[index]
    if metric == 'l2':
        val = val - (xq * xq).sum(dim=1, keepdim=True)
        val = scale_pow2(val, -2 * exponent) if exponent else val
    return idx.numpy(), clamp_similarity(val, metric).numpy()


def sharded_knn(
    shards: FeatureShards,
    k: int,
    metric: str = 'cosine',
    *,
    address: str | None = None,
    block_rows: int | None = None,
    chunk_size: int | None = None,
    col_chunk_size: int = DEFAULT_COL_CHUNK_SIZE,
    progress: bool = False,
    stats: EngineStats | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Exact kNN lists of sharded embeddings on a Ray cluster (see the
    module docstring): :obj:`(index LongTensor[N, k], sim Tensor[N, k])` on
    the CPU. Input checks are those of
    :func:`~torch_geometric_sdt.nn.knn.knn`, made by the task that reads
    each part (the message names the part).

    Args:
        shards (FeatureShards): The embeddings.
        k (int): Neighbours per point, the point itself included.
        metric (str, optional): :obj:`'cosine'` or :obj:`'l2'`.
        address (str, optional): The Ray cluster
            (:func:`~torch_geometric_sdt.utils.distributed.connect`).
        block_rows (int, optional): Query rows per task (default:
            :func:`~torch_geometric_sdt.utils.distributed.auto_block_rows`).
        chunk_size (int, optional): Query rows per similarity block.
        col_chunk_size (int, optional): Database rows per similarity block.
        progress (bool, optional): Progress bars.
        stats (EngineStats, optional): Collects per-stage statistics.
    """
    ray = connect(address)
    loaded = map_stage(
        _prepare_part,
        [
            (part, size, shards.dim, name, metric)
            for part, size, name in zip(shards.parts, shards.sizes, shards.names)
        ],
        name='read parts',
        stats=stats,
        num_returns=2,
        fetch=False,
        progress=progress,
    )
    parts = [ref for ref, _ in loaded]
    if block_rows is None:
        block_rows = auto_block_rows(shards.num_rows)
    exponent = 0
    if metric == 'l2':
        exponent = l2_exponent(max(ray.get([ref for _, ref in loaded])))
    calls = []
    for p, (ref, size) in enumerate(zip(parts, shards.sizes)):
        for lo in range(0, size, block_rows):
            calls.append(
                (
                    ref,
                    lo,
                    min(lo + block_rows, size),
                    int(shards.offsets[p]),
                    parts,
                    [int(o) for o in shards.offsets[:-1]],
                    k,
                    metric,
                    exponent,
                    chunk_size,
                    col_chunk_size,
                )
            )
    num = shards.num_rows
    results = map_stage(
        _search_block,
        calls,
        name='knn',
        stats=stats,
        shared_bytes=num * shards.dim * 4,
        progress=progress,
    )
    index = torch.from_numpy(np.concatenate([r[0] for r in results]))
    sim = torch.from_numpy(np.concatenate([r[1] for r in results]))
    return index, sim


__all__ = ['sharded_knn']
