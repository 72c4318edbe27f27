r"""The :mod:`numba` kernels of :func:`~torch_geometric_sdt.utils.topk_jaccard`.

Every kernel works on neighbour lists in CSR form (:obj:`rowptr`, :obj:`col`)
and runs on the CPU, parallel over nodes where marked. Compiled code is cached
in a user cache folder (see :mod:`torch_geometric_sdt.utils._numba`), so only
the first call after installation pays the compile time.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from torch_geometric_sdt.utils._numba import njit

# Error codes written per row by `check_rows`.
OK, OUT_OF_RANGE, SELF, DUPLICATE, UNSORTED, NAN = range(6)


@njit(nogil=True)
def prob(
    s: float,
    transform: int,
    distance: int,
    delta: float,
    eps: float,
    sigma: float,
) -> float:  # pragma: no cover (compiled)
    d = 2.0 - 2.0 * s if distance == 0 else 1.0 - s
    if transform == 0:  # 1 / (1 + exp(z)), evaluated without overflow
        z = delta * d + eps
        if z >= 0.0:
            e = math.exp(-z)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(z))
    return math.exp(-d / sigma)


@njit(parallel=True, nogil=True)
def row_probs(
    rowptr: np.ndarray,
    sim: np.ndarray,
    topk: np.ndarray,
    transform: int,
    distance: int,
    over_topk: bool,
    delta: float,
    eps: float,
    sigma: float,
    out: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    num_nodes = rowptr.shape[0] - 1
    for i in numba.prange(num_nodes):
        start, stop = rowptr[i], rowptr[i + 1]
        norm_stop = start + topk[i] if over_topk else stop
        total = 0.0
        for e in range(start, stop):
            if e < norm_stop:
                total += prob(sim[e], transform, distance, delta, eps, sigma)
        inv = 1.0 / total if total > 0.0 else 0.0
        for e in range(start, stop):
            out[e] = prob(sim[e], transform, distance, delta, eps, sigma) * inv


@njit(parallel=True, nogil=True)
def check_rows(
    rowptr: np.ndarray,
    col: np.ndarray,
    sim: np.ndarray,
    has_sim: bool,
    self_first: bool,
    num_chunks: int,
    err: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    num_nodes = rowptr.shape[0] - 1
    chunk = (num_nodes + num_chunks - 1) // num_chunks
    for c in numba.prange(num_chunks):
        stamp = np.full(num_nodes, -1, np.int64)
        for i in range(c * chunk, min(num_nodes, (c + 1) * chunk)):
            start, stop = rowptr[i], rowptr[i + 1]
            code = OK
            for e in range(start, stop):
                j = col[e]
                if j < 0 or j >= num_nodes:
                    code = OUT_OF_RANGE
                    break
                if e == start:
                    if self_first and j != i:
                        code = SELF
                        break
                elif j == i and not self_first:
                    code = SELF
                    break
                if stamp[j] == i:
                    code = DUPLICATE
                    break
                stamp[j] = i
                if has_sim:
                    s = sim[e]
                    if s != s:
                        code = NAN
                        break
                    # Self at rank 0 is placed first whatever its value, so
                    # float noise against a duplicate point is no error.
                    after_self = e == start + 1 and col[start] == i
                    if e > start and not after_self and s > sim[e - 1]:
                        code = UNSORTED
                        break
            err[i] = code


@njit(nogil=True, fastmath=True)
def pair_score(
    rowptr: np.ndarray,
    col: np.ndarray,
    p: np.ndarray,
    topk: np.ndarray,
    weighted: bool,
    mark: np.ndarray,
    ki: int,
    j: int,
) -> float:  # pragma: no cover (compiled)
    # The score of the edge (i, j), with `mark` holding the Top-K set of i
    # (see `scores`) and `ki` its size.
    sj = rowptr[j]
    kj = topk[j]
    # Branch-free loops over local slices, so that they vectorise.
    cj = col[sj : sj + kj]
    zero = mark.dtype.type(0.0)
    if weighted:
        pj = p[sj : sj + kj]
        acc = zero
        for f in range(kj):
            v = mark[np.uint64(cj[f])]
            acc += (v + pj[f]) if v >= zero else zero
        return min(0.5 * acc, 1.0)  # not past 1
    cnt = 0
    for f in range(kj):
        cnt += 1 if mark[np.uint64(cj[f])] >= zero else 0
    return cnt / (ki + kj - cnt)


@njit(parallel=True, nogil=True, fastmath=True)
def scores(
    rowptr: np.ndarray,
    col: np.ndarray,
    p: np.ndarray,
    topk: np.ndarray,
    weighted: bool,
    rows: np.ndarray,
    row_start: int,
    row_stop: int,
    num_chunks: int,
    out_start: np.ndarray,
    out_stop: np.ndarray,
    entries: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover (compiled)
    # Scores entries of the lists of rows rows[row_start:row_stop] into
    # out[out_start[t]:out_stop[t]] for row rows[t]: with `entries` empty,
    # its whole list in list order; else the CSR positions entries[s] for s
    # in that range.
    num_nodes = rowptr.shape[0] - 1
    num_rows = row_stop - row_start
    chunk = (num_rows + num_chunks - 1) // num_chunks
    whole = entries.size == 0
    for c in numba.prange(num_chunks):
        # `mark[m]` holds p_im while m is in the Top-K set of the current i,
        # and -1 otherwise; it is reset after each row, so one O(N) scratch
        # array per worker serves all of its rows.
        mark = np.empty(num_nodes, dtype=out.dtype)
        mark[:] = -1.0
        lo = row_start + c * chunk
        hi = min(row_stop, lo + chunk)
        for t in range(lo, hi):
            i = rows[t]
            si = rowptr[i]
            ki = topk[i]
            for e in range(si, si + ki):
                mark[col[e]] = p[e] if weighted else 1.0
            s0 = out_start[t]
            for s in range(s0, out_stop[t]):
                e = si + (s - s0) if whole else entries[s]
                out[s] = pair_score(rowptr, col, p, topk, weighted, mark, ki, col[e])
            for e in range(si, si + ki):
                mark[col[e]] = -1.0


@njit(nogil=True)
def bfs_order(
    rowptr: np.ndarray,
    col: np.ndarray,
) -> np.ndarray:  # pragma: no cover (compiled)
    # Breadth-first order over the neighbour lists: consecutive rows then
    # share most of their neighbours, whose lists stay in cache.
    num_nodes = rowptr.shape[0] - 1
    order = np.empty(num_nodes, np.int64)
    seen = np.zeros(num_nodes, np.bool_)
    head = 0
    tail = 0
    for root in range(num_nodes):
        if seen[root]:
            continue
        seen[root] = True
        order[tail] = root
        tail += 1
        while head < tail:
            u = order[head]
            head += 1
            for e in range(rowptr[u], rowptr[u + 1]):
                v = col[e]
                if not seen[v]:
                    seen[v] = True
                    order[tail] = v
                    tail += 1
    return order
