r"""Keeping a stored kNN graph up to date when points come and go.

The graph is a pair of :obj:`[N, k]` tensors (ids, cosine similarities), row
:math:`i` sorted by (similarity descending, id ascending) with :math:`i`
itself at rank 0, as :func:`~torch_geometric_sdt.nn.knn.knn` returns it.

* **Adding points.** One pass over the similarity blocks of the new points
  against every live point (:func:`search_both_ways`) gives each new
  point's exact list and, for each old point, the new points that reach
  the last entry of its list; the old point merges them into its list
  (:func:`offer_reverse`). Additions alone keep the graph exact.
* **Removing points.** Every list that held a removed point drops it and is
  refilled from its remaining neighbours' lists (:func:`refill`), the
  candidate step of NN-descent; a list's first ranks are exact (they only
  lose removed points), its tail may miss a point that no neighbour lists.
"""

from __future__ import annotations

import torch
from torch import Tensor

from torch_geometric_sdt.nn.knn import exact_knn
from torch_geometric_sdt.nn.knn.common import merge, order

#: Rows per side of a similarity block in :func:`search_both_ways`.
SEARCH_BLOCK_SIZE = 8192
#: Query rows per block of the candidate similarity products in :func:`refill`.
REFILL_CHUNK_SIZE = 256
#: How many of a list's first neighbours lend their lists in :func:`refill`.
REFILL_NEIGHBOURS = 10


def search(x: Tensor, alive: Tensor, query: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""Exact :math:`k`-NN lists of the rows :obj:`query` among the rows
    :obj:`alive` (both sorted ids into :obj:`x`, every query alive).

    Args:
        x (torch.Tensor): Unit-norm embeddings of every row :obj:`[N, D]`.
        alive (torch.Tensor): The live rows :obj:`LongTensor[A]`, sorted.
        query (torch.Tensor): Rows to search for :obj:`LongTensor[Q]`.
        k (int): List length, :math:`k \le A`.

    Returns:
        (index, sim): :obj:`[Q, k]` global row ids and cosines, self first.
    """
    local = torch.searchsorted(alive, query)
    index, sim = exact_knn(x[alive], k, 'cosine', query=local)
    return alive[index], sim


def search_both_ways(
    x: Tensor,
    alive: Tensor,
    new_rows: Tensor,
    k: int,
    bound: Tensor,
    block_size: int = SEARCH_BLOCK_SIZE,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""One pass over the similarity blocks of the new rows against all live
    rows that gives both directions exactly: the new rows' own :math:`k`-NN
    lists, and every pair (old row :math:`i`, new row :math:`q`) whose
    similarity reaches :math:`i`'s :obj:`bound`, the last similarity of its
    list (the only new rows that can enter it).

    Only those pairs are kept (about :math:`k` per new row), never a
    per-row selection over all new rows.

    Args:
        x (torch.Tensor): Unit-norm embeddings of every row :obj:`[N, D]`.
        alive (torch.Tensor): The live rows, sorted, the new ones included.
        new_rows (torch.Tensor): The new rows :obj:`[Q]`, sorted, the last
            rows of :obj:`x`.
        k (int): List length.
        bound (torch.Tensor): The similarity an old row's candidate must
            reach, :obj:`[N_old]` (rows before the new ones).
        block_size (int, optional): Rows per side of a similarity block.

    Returns:
        (index, sim, rows, cand, cand_sim): the new rows' lists
        :obj:`[Q, k]` (self first), and the offers: old rows, new rows and
        their similarities, :obj:`[P]` each, ordered by old row.
    """
    num_old = int(new_rows[0])
    num_new = new_rows.numel()
    index = torch.empty(num_new, k, dtype=torch.long)
    sim = torch.empty(num_new, k)
    offers: list[tuple[Tensor, Tensor, Tensor]] = []
    for q0 in range(0, num_new, block_size):
        rows = new_rows[q0 : q0 + block_size]
        qx = x[rows]
        fwd: tuple[Tensor, Tensor] | None = None
        for c0 in range(0, alive.numel(), block_size):
            cols = alive[c0 : c0 + block_size]
            block = qx @ x[cols].t()  # [q, b]
            # Old rows of this block: the new rows that reach their bound.
            old = cols[cols < num_old]
            if old.numel():
                part = block[:, : old.numel()]
                q, c = (part >= bound[old].unsqueeze(0)).nonzero().unbind(1)
                offers.append((old[c], rows[q], part[q, c]))
            # The new rows' own lists: self first, merged across blocks.
            block.masked_fill_(cols.unsqueeze(0) == rows.unsqueeze(1), torch.inf)
            val, idx = torch.topk(block, min(k, cols.numel()), dim=1)
            part = order(val, cols[idx])
            fwd = part if fwd is None else merge(fwd, part, k)
        assert fwd is not None
        sim[q0 : q0 + rows.numel()] = fwd[0].clamp(-1.0, 1.0)
        index[q0 : q0 + rows.numel()] = fwd[1]
    if offers:
        target, cand, cand_sim = (torch.cat(part) for part in zip(*offers))
    else:
        target = cand = torch.empty(0, dtype=torch.long)
        cand_sim = torch.empty(0)
    perm = torch.sort(target, stable=True)[1]
    return index, sim, target[perm], cand[perm], cand_sim[perm]


def merge_candidates(
    index: Tensor, sim: Tensor, rows: Tensor, cand: Tensor, cand_sim: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The lists of :obj:`rows` merged with candidates: the :math:`k` best
    distinct entries of each row's list and its candidates (padding
    :obj:`-1`), self kept first, ordered by (similarity descending, id
    ascending).

    Args:
        index (torch.Tensor): Current lists of :obj:`rows` :obj:`[B, k]`
            (entries :obj:`-1` are empty).
        sim (torch.Tensor): Their similarities :obj:`[B, k]`.
        rows (torch.Tensor): The row ids :obj:`[B]`.
        cand (torch.Tensor): Candidate ids :obj:`[B, C]`, :obj:`-1` padding.
        cand_sim (torch.Tensor): Their similarities :obj:`[B, C]`.

    Returns:
        (index, sim): The merged lists :obj:`[B, k]`.
    """
    k = index.size(1)
    ids = torch.cat([index, cand], dim=1)
    key = torch.cat([sim, cand_sim.to(sim.dtype)], dim=1)
    key = key.masked_fill(ids < 0, -torch.inf)
    key = key.masked_fill(ids == rows.view(-1, 1), torch.inf)  # Self first.
    # Duplicates: keep one copy (they carry the same similarity).
    ids_sorted, perm = torch.sort(ids, dim=1, stable=True)
    dup = torch.zeros_like(ids_sorted, dtype=torch.bool)
    dup[:, 1:] = ids_sorted[:, 1:] == ids_sorted[:, :-1]
    key.scatter_(1, perm, key.gather(1, perm).masked_fill(dup, -torch.inf))
    key, ids = order(key, ids)
    out_ids = ids[:, :k].clone()
    out_val = key[:, :k].clone()
    out_val[:, 0] = 1.0  # Self.
    out_ids[out_val == -torch.inf] = -1  # Too few candidates.
    return out_ids, out_val


def offer_reverse(
    index: Tensor,
    sim: Tensor,
    alive: Tensor,
    rows: Tensor,
    cand: Tensor,
    cand_sim: Tensor,
) -> Tensor:
    r"""Offers the new rows to the old live rows, in place: every old row
    merges the offers of :func:`search_both_ways` into its list.

    Args:
        index (torch.Tensor): All lists :obj:`[N, k]` (updated in place).
        sim (torch.Tensor): Their similarities :obj:`[N, k]` (in place).
        alive (torch.Tensor): Live rows, :obj:`BoolTensor[N]`.
        rows (torch.Tensor): Old rows of the offers :obj:`[P]`, sorted.
        cand (torch.Tensor): The new rows offered :obj:`[P]`.
        cand_sim (torch.Tensor): Their similarities :obj:`[P]`.

    Returns:
        torch.Tensor: The old rows whose lists changed, sorted.
    """
    keep = alive[rows]
    rows, cand, cand_sim = rows[keep], cand[keep], cand_sim[keep]
    if rows.numel() == 0:
        return rows
    # Offers of one row side by side: [R, C], padded with -1.
    target, count = torch.unique_consecutive(rows, return_counts=True)
    start = torch.cumsum(count, 0) - count
    slot = torch.arange(rows.numel()) - start.repeat_interleave(count)
    width = int(count.max())
    ids = torch.full((target.numel(), width), -1, dtype=torch.long)
    val = torch.full((target.numel(), width), -torch.inf, dtype=cand_sim.dtype)
    at = torch.arange(target.numel()).repeat_interleave(count)
    ids[at, slot], val[at, slot] = cand, cand_sim
    merged, merged_sim = merge_candidates(index[target], sim[target], target, ids, val)
    moved = (merged != index[target]).any(dim=1)
    index[target], sim[target] = merged, merged_sim
    return target[moved]


def refill(
    x: Tensor,
    index: Tensor,
    sim: Tensor,
    dead: Tensor,
    neighbours: int = REFILL_NEIGHBOURS,
    chunk_size: int = REFILL_CHUNK_SIZE,
) -> Tensor:
    r"""Drops removed points from every live list and refills it, in place.

    A list that held a removed point keeps its live entries and takes the
    best of the points listed by its first :obj:`neighbours` live
    neighbours, with their exact cosines.

    Args:
        x (torch.Tensor): Unit-norm embeddings :obj:`[N, D]`.
        index (torch.Tensor): All lists :obj:`[N, k]` (updated in place).
        sim (torch.Tensor): Their similarities :obj:`[N, k]` (in place).
        dead (torch.Tensor): :obj:`BoolTensor[N]`, the removed rows (and any
            removed earlier).
        neighbours (int, optional): Lending neighbours per list.
        chunk_size (int, optional): Rows per block of similarity products.

    Returns:
        torch.Tensor: The live rows whose lists changed, sorted.
    """
    k = index.size(1)
    holds = dead[index].any(dim=1) & ~dead
    rows = holds.nonzero().view(-1)
    # Rows that held the same removed point are close: chunked together,
    # they share most candidates, so that one product per chunk serves all.
    first = dead[index[rows]].int().argmax(dim=1)
    rows = rows[torch.argsort(index[rows, first], stable=True)]
    slot = torch.zeros(index.size(0), dtype=torch.long)
    for lo in range(0, rows.numel(), chunk_size):
        r = rows[lo : lo + chunk_size]
        own = index[r].masked_fill(dead[index[r]], -1)
        own_sim = sim[r].masked_fill(own < 0, -torch.inf)
        # The first live neighbours (rank >= 1) lend their lists.
        rank = torch.arange(1, k).expand(r.numel(), -1)
        key = rank.masked_fill(own[:, 1:] < 0, k)  # Removed entries last.
        first = torch.topk(key, min(neighbours, k - 1), dim=1, largest=False)[0]
        lenders = own.gather(1, first.clamp(max=k - 1))
        lenders = lenders.masked_fill(first >= k, -1)
        lent = index[lenders.clamp(min=0)].masked_fill(lenders.unsqueeze(2) < 0, -1)
        cand = lent.reshape(r.numel(), -1)
        cand = cand.masked_fill((cand >= 0) & dead[cand.clamp(min=0)], -1)
        # Only points the list lacks, once each.
        listed, _ = torch.sort(own, dim=1)
        at = torch.searchsorted(listed, cand).clamp(max=listed.size(1) - 1)
        cand = cand.masked_fill(listed.gather(1, at) == cand, -1)
        cand, _ = torch.sort(cand, dim=1)
        cand[:, 1:] = cand[:, 1:].masked_fill(cand[:, 1:] == cand[:, :-1], -1)
        # One product against the chunk's distinct candidates, numbered
        # through a lookup table (no sort).
        valid = cand[cand >= 0]
        slot[valid] = torch.arange(valid.numel())
        uniq = valid[slot[valid] == torch.arange(valid.numel())]
        slot[uniq] = torch.arange(uniq.numel())
        if uniq.numel():
            cand_sim = (x[r] @ x[uniq].t()).gather(1, slot[cand.clamp(min=0)])
        else:
            cand_sim = torch.zeros(cand.shape, dtype=x.dtype)
        slot[uniq] = 0
        cand_sim = cand_sim.clamp(-1.0, 1.0).masked_fill(cand < 0, -torch.inf)
        # A list that lost d entries needs at most the d best candidates.
        lost = int((own < 0).sum(dim=1).max())
        best, at = torch.topk(cand_sim, min(lost, cand.size(1)), dim=1)
        cand = cand.gather(1, at).masked_fill(best == -torch.inf, -1)
        index[r], sim[r] = merge_candidates(own, own_sim, r, cand, best)
    # Lists the neighbours could not fill (a closed group): exact search.
    short = rows[(index[rows] < 0).any(dim=1)]
    if short.numel():
        index[short], sim[short] = search(x, (~dead).nonzero().view(-1), short, k)
    return torch.sort(rows).values


__all__ = [
    'REFILL_CHUNK_SIZE',
    'REFILL_NEIGHBOURS',
    'SEARCH_BLOCK_SIZE',
    'search_both_ways',
    'merge_candidates',
    'offer_reverse',
    'refill',
    'search',
]
