r"""The links node :math:`\to` neighbour of every clustering method, kept as
dense :obj:`[N, k]` weights beside the kNN lists (:obj:`NaN`: no link), and
brought up to date after the lists change.

Each method is a :class:`Linker`: :meth:`Linker.compute` builds its state
from scratch; :meth:`Linker.update` brings a stored state up to date after
some lists changed. For the training-free baselines the links are a cheap,
vectorised function of the lists and are recomputed whole. For the SDT
model the update recomputes only what the changed lists reach, and with
a tolerance of :obj:`0` gives the same state as :meth:`Linker.compute` on
the same lists:

1. the set Jaccard indices of the pairs whose either full list changed,
   the others carried over from the pair's old rank (:func:`same_pairs`);
2. :math:`K_i` for the nodes that took a new neighbour id within the first
   :math:`K_i +` :data:`TOPK_REACH` ranks, the Top-K and the first rank
   past it (with a tolerance of :obj:`0`: every node whose ids,
   similarities or set Jaccard row changed at all);
3. the Top-K Jaccard scores of the pairs whose either Top-K set changed
   (ids or :math:`K_i`), the others carried over as in step 1 (exact: a
   score reads only the two Top-K sets and their similarities);
4. the node states of the nodes whose encoder input changed, and of those
   up to :math:`L` Top-K hops downstream of them, each on its receptive
   field (:meth:`~torch_geometric_sdt.nn.models.SDTClusterer.node_states`);
5. the band pairs: every scored pair of a row whose :math:`K_i` changed,
   and elsewhere only the scored pairs whose features or endpoint states
   changed (a pair's probability reads nothing else);
6. the final links (all rows, vectorised).

"Changed" means by more than :data:`TOLERANCE` for every number compared:
similarities, set and Top-K Jaccard indices and the entries of a node
state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from torch_geometric_sdt.baselines import early_stop_mask, nep_scores
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.nn.models.knn_context import (
    KNNContext,
    set_jaccard,
    topk_positions,
)
from torch_geometric_sdt.utils.knn_features import SimilarityScale, noise_scale

State = dict[str, Tensor]

#: How far an input of the SDT pipeline (a similarity, a set or Top-K
#: Jaccard score, an entry of a node state) must move before what is
#: computed from it is computed again (see :meth:`SDTLinker.update`); with
#: :obj:`0` every change counts and an update equals computing everything
#: again.
TOLERANCE = 0.02

#: Ranks past the Top-K (ranks :math:`0 .. K_i - 1`) where a change of the
#: list still asks for a new :math:`K_i`, with a nonzero tolerance (see
#: :meth:`SDTLinker.update`). The predictor marks where the identity ends.
#: In one addition of 1,000 faces to 100,000 (``benchmarks/incremental.py``'s
#: data), 53 % of the nodes that took a new face inside their Top-K changed
#: :math:`K_i`, 32 % of those that took it at rank :math:`K_i`, and 5.6 % of
#: those that took it at ranks :math:`K_i + 1` to :math:`K_i + 9` (2.3 % by
#: more than 1); asking those too made 1.56 times as many predictions
#: (20,386 against 13,042).
TOPK_REACH = 1


class Linker:
    """The links of one clustering method (see the module docstring)."""

    #: The method's name, as in :obj:`sdt cluster --method`.
    method: str = ''
    #: How far a link weight may move before its row counts as changed
    #: (:func:`~torch_geometric_sdt.index.relabel.changed_rows`).
    tolerance: float = 0.0

    def settings(self) -> dict[str, Any]:
        """What the index records to rebuild this linker."""
        raise NotImplementedError

    def compute(self, x: Tensor, graph: KNN, progress: bool = False) -> State:
        """The state of every row, with :obj:`'links'` :obj:`[N, k]`."""
        raise NotImplementedError

    def update(
        self,
        x: Tensor,
        graph: KNN,
        old_graph: KNN,
        old: State,
        changed: Tensor,
        progress: bool = False,
    ) -> State:
        r"""The state after the lists of the rows :obj:`changed`
        (:obj:`BoolTensor[N]`) changed from :obj:`old_graph` to :obj:`graph`;
        :obj:`old` and :obj:`old_graph` hold the previous rows, possibly fewer
        than :math:`N` (new rows at the end)."""
        return self.compute(x, graph, progress)


class EarlyStopLinker(Linker):
    r""":obj:`'infomap-knn'` (cosine links) and :obj:`'fc-es'` (FC-ES edge
    probabilities), both early-stopped at :obj:`threshold`
    (:func:`~torch_geometric_sdt.baselines.early_stop_mask`)."""

    def __init__(self, method: str, threshold: float, sigma: float = 0.5) -> None:
        self.method = method
        self.threshold = float(threshold)
        self.sigma = float(sigma)

    def settings(self) -> dict[str, Any]:
        return dict(threshold=self.threshold, sigma=self.sigma)

    def compute(self, x: Tensor, graph: KNN, progress: bool = False) -> State:
        score = graph.sim
        if self.method == 'fc-es':
            score = nep_scores(graph.index, graph.sim, self.sigma, progress)
        mask = early_stop_mask(graph.index, score, self.threshold)
        links = score.float().masked_fill(~mask, float('nan'))
        return {'links': links}


class SDTLinker(Linker):
    """The SDT model's final links, with the model's intermediate results
    as state (see the module docstring)."""

    method = 'sdt'

    def __init__(
        self,
        model: SDTClusterer,
        eta: float | None = None,
        scale: SimilarityScale | None = None,
        tolerance: float = TOLERANCE,
    ) -> None:
        self.model = model
        self.tolerance = float(tolerance)
        self.eta = model.config['eta'] if eta is None else float(eta)
        self.scale = scale

    def settings(self) -> dict[str, Any]:
        assert self.scale is not None
        return dict(
            eta=self.eta,
            scale=[float(self.scale.center), float(self.scale.scale)],
            tolerance=self.tolerance,
        )

    def context(
        self, x: Tensor, graph: KNN, shared: Tensor | None = None
    ) -> KNNContext:
        """The model's context with the similarity scale frozen at creation
        (so that rows nobody touched keep their inputs), and :obj:`shared`
        as its set Jaccard indices (default: computed)."""
        if self.scale is None:
            self.scale = noise_scale(x)
            self.scale = SimilarityScale(
                float(self.scale.center), float(self.scale.scale)
            )
        if shared is None:
            shared = set_jaccard(graph)
        return KNNContext(graph, self.scale, shared, None, 'random_pairs')

    def compute(self, x: Tensor, graph: KNN, progress: bool = False) -> State:
        model = self.model
        ctx = self.context(x, graph)
        topk = model.predict_topk(ctx, progress=progress)
        jac = model.jaccard(ctx, topk, progress=progress)
        h = model.node_states(ctx, topk, jac)
        pos, prob = model.score_band(ctx, topk, jac, h)
        band = torch.full((graph.num_nodes, graph.k), float('nan'))
        band.view(-1)[pos] = prob
        return self._finish(ctx, topk, jac, h, band)

    def update(
        self,
        x: Tensor,
        graph: KNN,
        old_graph: KNN,
        old: State,
        changed: Tensor,
        progress: bool = False,
    ) -> State:
        model, k = self.model, graph.k
        n, n_old = graph.num_nodes, old['topk'].numel()
        # What moved, entry by entry (rows past the old ones: everything).
        listed = torch.ones(n, k, dtype=torch.bool)
        listed[:n_old] = graph.index[:n_old] != old_graph.index
        # 1. Set Jaccard of the pairs whose either list changed.
        old_pos = same_pairs(graph.index, old_graph.index)
        shared = _refresh(
            old['shared'],
            old_pos,
            listed.any(dim=1),
            graph.index,
            lambda pos: set_jaccard(graph, positions=pos),
        )
        ctx = self.context(x, graph, shared)
        sim = self._moved(graph.sim, old_graph.sim)
        shared_moved = self._moved(shared, old['shared'])
        # 2. K_i where a new id entered the reach. A set Jaccard index that
        # moved there alone does not ask: in three additions of 1,000 faces
        # to 100,000 (benchmarks/incremental.py's data) such nodes were
        # 1,609 to 2,023 besides 9,652 to 11,446 asked, and 4.7 to 6.0 %
        # of them would have changed K_i (mean change 0.15 to 0.32).
        topk_old = torch.cat([old['topk'], old['topk'].new_zeros(n - n_old)])
        topk = topk_old.clone()
        scope = self._scope(topk_old)
        ask = (listed & scope).any(dim=1)
        if self.tolerance == 0:
            ask |= (shared_moved | sim).any(dim=1)
        ask = ask.nonzero().view(-1)
        if ask.numel():
            topk[ask] = model.predict_topk(ctx, nodes=ask, progress=progress)
        topk_diff = topk != topk_old
        # 3. Top-K Jaccard of the pairs whose either Top-K set changed (ids
        # or K_i: the probabilities read the similarities of that set).
        stay = old_pos == torch.arange(k)
        inside_new = torch.arange(k) < topk.unsqueeze(1)
        jac = _refresh(
            old['jaccard'],
            old_pos,
            topk_diff | (~stay & inside_new).any(dim=1),
            graph.index,
            lambda pos: model.jaccard(ctx, topk, progress=progress, positions=pos),
        )
        pair = listed | sim | shared_moved | self._moved(jac, old['jaccard'])
        # 4. Node states: nodes whose features (similarity profile, K_i) or
        # Top-K in-edges moved, and the nodes that read them.
        inside = torch.arange(k) < torch.maximum(topk, topk_old).unsqueeze(1)
        dirty = topk_diff | sim.any(dim=1) | (pair & inside).any(dim=1)
        dirty = self._downstream(ctx, topk, dirty)
        h = torch.cat([old['h'], old['h'].new_zeros(n - n_old, old['h'].size(1))])
        rows = dirty.nonzero().view(-1)
        if rows.numel():
            h[rows] = model.node_states(ctx, topk, jac, nodes=rows)
        state = self._moved(h, old['h']).any(dim=1) & dirty
        # 5. Every scored pair of the rows whose K_i changed (the band moved
        # with it); elsewhere the scored pairs whose inputs moved: the
        # neighbour, the pair's features or either end's state.
        band = _pad(old['band'], n)
        band[topk_diff] = float('nan')
        scored = torch.zeros(n * k, dtype=torch.bool)
        scored[model.scored_positions(topk)] = True
        pair |= state[graph.index] | state.unsqueeze(1) | topk_diff.unsqueeze(1)
        pos = (pair & scored.view(n, k)).view(-1).nonzero().view(-1)
        if pos.numel():
            pos, prob = model.score_band(ctx, topk, jac, h, pos=pos)
            band.view(-1)[pos] = prob
        return self._finish(ctx, topk, jac, h, band)

    def _moved(self, new: Tensor, old: Tensor) -> Tensor:
        r"""Entries of :obj:`new` that differ from :obj:`old` by more than
        :attr:`tolerance` (rows past :obj:`old`'s: all)."""
        out = torch.ones(new.shape, dtype=torch.bool)
        n_old = old.size(0)
        out[:n_old] = (new[:n_old] - old).abs() > self.tolerance
        return out

    def _scope(self, topk: Tensor) -> Tensor:
        r"""Ranks whose change asks for a new :math:`K_i`: :math:`r < K_i +`
        :data:`TOPK_REACH` (every rank when :attr:`tolerance` is :obj:`0`)."""
        k = self.model.k
        if self.tolerance == 0:
            return torch.ones(topk.numel(), k, dtype=torch.bool)
        return torch.arange(k) < (topk + TOPK_REACH).unsqueeze(1)

    def _downstream(self, ctx: KNNContext, topk: Tensor, dirty: Tensor) -> Tensor:
        r"""Nodes whose state reads a node of :obj:`dirty` within :math:`L`
        Top-K hops (:obj:`dirty` included)."""
        k = self.model.k
        pos = topk_positions(torch.arange(ctx.num_nodes), topk, k)
        target, source = pos // k, ctx.knn.index.view(-1)[pos]
        out = dirty.clone()
        for _ in range(self.model.config['num_layers']):
            out[target[out[source]]] = True
        return out

    def _finish(
        self, ctx: KNNContext, topk: Tensor, jac: Tensor, h: Tensor, band: Tensor
    ) -> State:
        scored = ~torch.isnan(band)
        pos = scored.view(-1).nonzero().view(-1)
        link_pos, weight = self.model.final_link_positions(
            topk, jac, pos, band.view(-1)[pos], eta=self.eta
        )
        links = torch.full_like(band, float('nan'))
        links.view(-1)[link_pos] = weight
        return dict(
            topk=topk, shared=ctx.shared, jaccard=jac, h=h, band=band, links=links
        )


def same_pairs(index: Tensor, old_index: Tensor) -> Tensor:
    r"""For every entry of the lists :obj:`index` :obj:`[N, k]`, the rank of
    the same pair in the lists :obj:`old_index` :obj:`[N_old, k]` (rows past
    :math:`N_{old}`, and pairs not found: :obj:`-1`).

    An addition only inserts new points (ids :math:`\ge N_{old}`) into the
    old lists, and the old points keep their order: the entry at rank
    :math:`r` held rank :math:`r - c`, where :math:`c` counts the new points
    before it. Each such rank is checked against :obj:`old_index`, so a list
    changed otherwise (a removal's refill) finds a pair only where it kept
    its rank.
    """
    n, k = index.shape
    n_old = old_index.size(0)
    out = torch.full((n, k), -1, dtype=torch.long)
    rows = index[:n_old]
    new = rows >= n_old
    rank = torch.arange(k) - (new.cumsum(dim=1) - new.long())
    held = old_index.gather(1, rank) == rows
    out[:n_old] = torch.where(held & ~new, rank, -1)
    return out


def _refresh(
    old: Tensor,
    old_pos: Tensor,
    moved: Tensor,
    index: Tensor,
    score: Callable[[Tensor], Tensor],
) -> Tensor:
    """Per entry of the lists :obj:`index`, a pair score: :obj:`score` of
    its flat position where the pair is new (:obj:`old_pos` :obj:`-1`, see
    :func:`same_pairs`) or either end is :obj:`moved`, else the value
    :obj:`old` held for the same pair."""
    again = ((old_pos < 0) | moved.unsqueeze(1) | moved[index]).view(-1)
    n_old = old.size(0)
    out = old.new_empty(old_pos.shape)  # Every entry is carried or scored.
    out[:n_old] = old.gather(1, old_pos[:n_old].clamp(min=0))
    out.view(-1)[again] = score(again.nonzero().view(-1))
    return out


def _pad(value: Tensor, num_rows: int) -> Tensor:
    """:obj:`value` with :obj:`NaN` rows appended up to :obj:`num_rows`."""
    extra = value.new_full((num_rows - value.size(0), *value.shape[1:]), float('nan'))
    return torch.cat([value, extra])


__all__ = [
    'TOLERANCE',
    'TOPK_REACH',
    'same_pairs',
    'EarlyStopLinker',
    'Linker',
    'SDTLinker',
    'State',
]
