r"""Turns the candidate lists of the approximate and faiss backends into the
:class:`~torch_geometric_sdt.nn.knn.KNN` form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .common import clamp_similarity, order
from .exact import recompute_rows

#: Rows per chunk of :func:`finalize_candidates`.
FINALIZE_ROWS = 65_536


def finalize_candidates(
    x: Tensor,
    cand: Tensor,
    cand_sim: Tensor,
    k: int,
    metric: str,
) -> tuple[Tensor, Tensor]:
    r"""Turns candidate neighbours :math:`[N, m]` (ids of any integer dtype;
    :math:`m \ge k - 1`, maybe missing the point itself) into the
    fixed-width form: the point itself at rank 0 (added where missing), the
    rest sorted by (similarity descending, id ascending), cut to :math:`k`.
    Rows with invalid (:obj:`-1`) or repeated ids, or too few distinct
    candidates, are recomputed with the exact backend."""
    num_nodes = x.size(0)
    device = x.device
    index = torch.empty(num_nodes, k, dtype=torch.long, device=device)
    sim = torch.empty(num_nodes, k, dtype=x.dtype, device=device)
    bad = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    # In row chunks, so the sort's temporaries stay bounded at millions of
    # rows (a few hundred bytes per candidate otherwise).
    for lo in range(0, num_nodes, FINALIZE_ROWS):
        hi = min(num_nodes, lo + FINALIZE_ROWS)
        c = cand[lo:hi].long()
        self_id = torch.arange(lo, hi, device=device)
        srt = c.sort(dim=1).values
        bad[lo:hi] = (srt[:, 0] < 0) | (srt[:, 1:] == srt[:, :-1]).any(dim=1)
        is_self = c == self_id.unsqueeze(1)
        bad[lo:hi] |= c.size(1) + 1 - is_self.sum(dim=1) < k
        val = clamp_similarity(cand_sim[lo:hi].to(x.dtype), metric)
        val = val.masked_fill(is_self, -math.inf)  # The repeat of the point itself.
        val = torch.cat([val.new_full((hi - lo, 1), math.inf), val], dim=1)
        idx = torch.cat([self_id.unsqueeze(1), c.clamp(min=0)], dim=1)
        val, idx = order(val, idx)
        index[lo:hi], sim[lo:hi] = idx[:, :k], val[:, :k]
    sim[:, 0] = 1.0 if metric == 'cosine' else 0.0

    recompute_rows(x, k, metric, bad, index, sim)
    return index, sim
