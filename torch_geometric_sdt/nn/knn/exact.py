r"""The exact backend: pure PyTorch on the input's device, blocked matrix
products followed by an exact top-:math:`k` selection."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .common import check_positive_int, clamp_similarity, keep_top, merge, order

#: Default number of columns (database points) per similarity block.
DEFAULT_COL_CHUNK_SIZE = 32_768
#: Default number of elements of one similarity block (rows x columns).
DEFAULT_BLOCK_NUMEL = 2**25

#: The symmetric exact search screens groups of this many consecutive
#: similarities by their maximum before testing single entries.
SCREEN_GROUP = 16


def exact_knn(
    x: Tensor,
    k: int,
    metric: str,
    *,
    query: Tensor | None = None,
    chunk_size: int | None = None,
    col_chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Exact top-:math:`k` by (similarity descending, id ascending) with the
    query itself first.

    For every chunk of query rows and every block of database rows, one
    matrix product gives the similarity block (cosine: :math:`\mathbf{Q}
    \mathbf{X}_b^{\top}`; l2: the ranking key :math:`2 \mathbf{Q}
    \mathbf{X}_b^{\top} - \|\mathbf{x}_j\|^2` via :func:`torch.addmm`), the
    query's own column is set to :math:`+\infty`, and the block's top-k is
    merged into a running top-k. This is the query-chunk path of
    :func:`~torch_geometric_sdt.nn.knn.knn` (:obj:`backend='exact'` with
    :obj:`symmetric=False`), without its input checks.

    Args:
        x (torch.Tensor): Points :math:`[N, D]` as
            :func:`~torch_geometric_sdt.nn.knn.knn` prepares them: float32 or
            float64, rows unit-norm for :obj:`metric='cosine'`.
        k (int): Neighbours per query, :math:`k \le N`.
        metric (str): :obj:`'cosine'` or :obj:`'l2'`.
        query (torch.Tensor, optional): Ids of the query rows (all if
            :obj:`None`).
        chunk_size (int, optional): Query rows per chunk.
        col_chunk_size (int, optional): Database rows per block.
        progress (bool): Shows a progress bar over query chunks.

    Returns:
        (index, sim): :obj:`LongTensor[Q, k]` and :obj:`Tensor[Q, k]` for the
        :math:`Q` query rows.
    """
    num_nodes = x.size(0)
    device = x.device
    if col_chunk_size is None:
        col_chunk_size = DEFAULT_COL_CHUNK_SIZE
    check_positive_int('col_chunk_size', col_chunk_size)
    num_blocks = math.ceil(num_nodes / col_chunk_size)
    width = math.ceil(num_nodes / num_blocks)  # Balanced column blocks.
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_BLOCK_NUMEL // width)

    num_query = num_nodes if query is None else query.numel()
    sq = (x * x).sum(dim=1) if metric == 'l2' else None
    out_index = torch.empty(num_query, k, dtype=torch.long, device=device)
    out_sim = torch.empty(num_query, k, dtype=x.dtype, device=device)

    starts = range(0, num_query, chunk_size)
    for r0 in tqdm(starts, disable=not progress, desc='knn', unit='chunk'):
        r1 = min(r0 + chunk_size, num_query)
        if query is None:
            qid = torch.arange(r0, r1, device=device)
            xq = x[r0:r1]
        else:
            qid = query[r0:r1]
            xq = x[qid]
        best: tuple[Tensor, Tensor] | None = None
        for c0 in range(0, num_nodes, width):
            c1 = min(c0 + width, num_nodes)
            part = block_topk(
                xq, qid, x[c0:c1], c0, k, None if sq is None else sq[c0:c1]
            )
            best = part if best is None else merge(best, part, k)
        assert best is not None
        val, idx = best
        if sq is not None:
            val = val - sq[qid].unsqueeze(1)
        out_index[r0:r1] = idx
        out_sim[r0:r1] = clamp_similarity(val, metric)  # Self (+inf): 1 or 0.
    return out_index, out_sim


def block_topk(
    xq: Tensor,
    qid: Tensor,
    xb: Tensor,
    offset: int,
    k: int,
    sq: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The top-:math:`k` of query rows :obj:`xq` (global ids :obj:`qid`)
    among one block of database rows :obj:`xb` (global ids :obj:`offset`,
    :obj:`offset + 1`, ...), by (key descending, id ascending), with a
    query's own column set to :math:`+\infty`. The key is the cosine
    :math:`\mathbf{q}^{\top} \mathbf{x}_j` or, given the squared norms
    :obj:`sq` of the block's rows (l2), :math:`2 \mathbf{q}^{\top}
    \mathbf{x}_j - \|\mathbf{x}_j\|^2`. Partial lists over disjoint blocks
    combine exactly with :func:`~torch_geometric_sdt.nn.knn.common.merge`.

    Returns:
        (key, index): :obj:`[Q, min(k, B)]` each, :obj:`index` global.
    """
    if sq is None:
        block = torch.mm(xq, xb.t())
    else:
        block = torch.addmm(sq.neg().unsqueeze(0), xq, xb.t(), alpha=2)
    local = qid - offset
    mask = (local >= 0) & (local < xb.size(0))
    rows = torch.arange(xq.size(0), device=xq.device)
    block[rows[mask], local[mask]] = math.inf
    val, idx = _topk_ordered(block, min(k, xb.size(0)))
    return val, idx + offset


def exact_knn_symmetric(
    x: Tensor,
    k: int,
    metric: str,
    block_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Exact top-:math:`k` of every point, computing each similarity once.

    The similarity matrix is symmetric, so it is computed in square blocks
    :math:`\mathbf{X}_I \mathbf{X}_J^{\top}` for :math:`J \ge I` only, and
    every block serves the rows of :math:`I` and, transposed, those of
    :math:`J`: half the matrix products of :func:`exact_knn`. Every row
    keeps a running list of its best :math:`k + 1` candidates; a block entry
    is a candidate only if it beats the row's current :math:`(k+1)`-th value
    (one comparison per entry, as in heap-based search), and the lists are
    seeded from the diagonal blocks first so that few entries pass. Rows
    whose :math:`k`-th and :math:`(k+1)`-th values tie are recomputed by
    :func:`exact_knn`, which applies the ascending-id rule at the cut.
    Peak extra memory is one :math:`B \times B` block (and two boolean masks
    of that size) plus the :math:`N \times (k + 1)` lists.
    """
    num_nodes = x.size(0)
    device = x.device
    kk = min(k + 1, num_nodes)
    if block_size is None:
        block_size = max(256, math.isqrt(DEFAULT_BLOCK_NUMEL))
    sq = (x * x).sum(dim=1) if metric == 'l2' else None
    best_val = torch.full((num_nodes, kk), -math.inf, dtype=x.dtype, device=device)
    best_idx = torch.full((num_nodes, kk), -1, dtype=torch.long, device=device)
    starts = list(range(0, num_nodes, block_size))

    def keys(i0: int, i1: int, j0: int, j1: int) -> tuple[Tensor, Tensor]:
        gram = torch.mm(x[i0:i1], x[j0:j1].t())
        if sq is None:
            return gram, gram
        # Ranking keys 2 <x_i, x_j> - |x_j|^2 for the rows, and the same with
        # |x_i|^2 for the columns (the transposed direction):
        gram.mul_(2)
        return gram - sq[j0:j1].unsqueeze(0), gram - sq[i0:i1].unsqueeze(1)

    def merge_rows(r0: int, r1: int, val: Tensor, idx: Tensor) -> None:
        best = (best_val[r0:r1], best_idx[r0:r1])
        best_val[r0:r1], best_idx[r0:r1] = keep_top(best, (val, idx), kk)

    def offer(r0: int, block: Tensor, c0: int, transposed: bool) -> None:
        # Entries of `block` (or of its transpose, without materialising it)
        # beating their row's current (k+1)-th value join that row's
        # candidates.
        num_rows = block.size(1 if transposed else 0)
        thr = best_val[r0 : r0 + num_rows, -1]
        row, col, val = screen(block, thr, dim=0 if transposed else 1)
        if transposed:
            row, col = col, row
        if row.numel() == 0:
            return
        cand_val, cand_idx = pack_rows(row, col + c0, val, num_rows)
        merge_rows(r0, r0 + num_rows, cand_val, cand_idx)

    # Diagonal blocks first: they seed every row's list (self included).
    for i0 in starts:
        i1 = min(i0 + block_size, num_nodes)
        block = keys(i0, i1, i0, i1)[0]
        block.fill_diagonal_(math.inf)
        val, idx = torch.topk(block, min(kk, i1 - i0), dim=1)
        merge_rows(i0, i1, val, idx + i0)
    pairs = [(i0, j0) for a, i0 in enumerate(starts) for j0 in starts[a + 1 :]]
    for i0, j0 in tqdm(pairs, disable=not progress, desc='knn', unit='block'):
        i1, j1 = min(i0 + block_size, num_nodes), min(j0 + block_size, num_nodes)
        rows_key, cols_key = keys(i0, i1, j0, j1)
        offer(i0, rows_key, j0, transposed=False)
        offer(j0, cols_key, i0, transposed=True)
        del rows_key, cols_key

    val, idx = best_val[:, :k], best_idx[:, :k]
    tie = (
        best_val[:, k - 1] == best_val[:, k]
        if kk > k
        else torch.zeros(num_nodes, dtype=torch.bool, device=device)
    )
    val, idx = order(val, idx)  # Self (+inf) first, then (value desc, id asc).
    if sq is not None:
        val = val - sq.unsqueeze(1)
    val = clamp_similarity(val, metric)
    recompute_rows(x, k, metric, tie, idx, val)
    return idx, val


def screen(block: Tensor, thr: Tensor, dim: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    r"""The entries of :obj:`block` :obj:`[R, C]` greater than the threshold
    of their row (:obj:`dim=1`, :obj:`thr` :obj:`[R]`) or of their column
    (:obj:`dim=0`, :obj:`thr` :obj:`[C]`).

    Groups of :data:`SCREEN_GROUP` consecutive entries along :obj:`dim` are
    screened by their maximum first, so the exact test and the index
    arithmetic run on few entries when few pass: one pass over the block
    (the maxima) instead of a comparison and a selection over every entry.
    For :math:`\ge`, pass :obj:`torch.nextafter(thr, -inf)`.

    Returns:
        (row, col, val): block coordinates and values of the entries, ordered
        by group.
    """
    length = block.size(dim)
    pad = -length % SCREEN_GROUP
    padded = block
    if pad:
        spec = (0, 0, 0, pad) if dim == 0 else (0, pad)
        padded = torch.nn.functional.pad(block, spec, value=-math.inf)
    if dim == 0:
        groups = padded.view(-1, SCREEN_GROUP, block.size(1))
        grp, line = (groups.amax(dim=1) > thr.unsqueeze(0)).nonzero(as_tuple=True)
        vals = groups[grp, :, line]  # [P, SCREEN_GROUP]
    else:
        groups = padded.view(block.size(0), -1, SCREEN_GROUP)
        line, grp = (groups.amax(dim=2) > thr.unsqueeze(1)).nonzero(as_tuple=True)
        vals = groups[line, grp]  # [P, SCREEN_GROUP]
    p, t = (vals > thr[line].unsqueeze(1)).nonzero(as_tuple=True)
    line, pos, val = line[p], grp[p] * SCREEN_GROUP + t, vals[p, t]
    return (pos, line, val) if dim == 0 else (line, pos, val)


def pack_rows(
    row: Tensor, col: Tensor, val: Tensor, num_rows: int
) -> tuple[Tensor, Tensor]:
    r"""Entries :obj:`(row, col, val)` side by side per row: :obj:`[R, W]`
    values (padding :math:`-\infty`) and columns (padding :obj:`-1`),
    :math:`W` the most entries of one row, for a merge into running lists."""
    count = torch.bincount(row, minlength=num_rows)
    width = int(count.max()) if row.numel() else 0
    first = torch.cumsum(count, 0) - count
    perm = torch.argsort(row, stable=True)
    row, col, val = row[perm], col[perm], val[perm]
    slot = torch.arange(row.numel(), device=row.device) - first[row]
    out_val = torch.full(
        (num_rows, width), -math.inf, dtype=val.dtype, device=val.device
    )
    out_idx = torch.full((num_rows, width), -1, dtype=torch.long, device=val.device)
    out_val[row, slot] = val
    out_idx[row, slot] = col
    return out_val, out_idx


def recompute_rows(
    x: Tensor,
    k: int,
    metric: str,
    mask: Tensor,
    index: Tensor,
    sim: Tensor,
) -> None:
    r"""Overwrites the rows of :obj:`index` and :obj:`sim` selected by the
    boolean :obj:`mask` with their :func:`exact_knn` lists, in place."""
    if bool(mask.any()):
        rows = mask.nonzero().view(-1)
        index[rows], sim[rows] = exact_knn(x, k, metric, query=rows)


def _topk_ordered(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""The top-:obj:`k` of each row under the total order (value descending,
    column ascending), sorted in that order."""
    rows, width = block.shape
    if k >= width:
        val, idx = torch.sort(block, dim=1, descending=True, stable=True)
        return val, idx
    val, idx = torch.topk(block, k + 1, dim=1, largest=True, sorted=True)
    tie = val[:, k - 1] == val[:, k]  # Equal values straddle the cut.
    val, idx = order(val[:, :k], idx[:, :k])
    if bool(tie.any()):
        # Keep the smallest ids among the values equal to the k-th one.
        tied = tie.nonzero().view(-1)
        thr = val[tied, k - 1]
        num_above = (val[tied] > thr.unsqueeze(1)).sum(dim=1)
        row, col = (block[tied] == thr.unsqueeze(1)).nonzero(as_tuple=True)
        count = torch.bincount(row, minlength=tied.numel())
        start = torch.cumsum(count, 0) - count
        pos = num_above[row] + torch.arange(row.numel(), device=row.device)
        pos = pos - start[row]
        keep = pos < k
        sub = idx[tied]
        sub[row[keep], pos[keep]] = col[keep]
        idx[tied] = sub
    return val, idx
