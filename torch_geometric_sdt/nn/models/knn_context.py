r"""What the SDT pipeline reads from one data set's kNN graph, and the flat
positions of the edges it works on.

A kNN graph of :math:`N` nodes and list length :math:`k` is stored as
:obj:`[N, k]` tensors; the edge of node :math:`i` at rank :math:`r` has the
flat position :math:`i k + r`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.utils.distributed import FeatureShards
from torch_geometric_sdt.utils.knn_features import (
    REFERENCES,
    SimilarityScale,
    check_scale,
    noise_sample_rows,
    noise_scale,
    similarity_scale,
)
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard
from torch_geometric_sdt.utils.validation import check_choice


@dataclass
class KNNContext:
    r"""Everything the model reads from one data set's kNN graph, computed once.

    Attributes:
        knn (KNN): The kNN graph, :obj:`[N, k]`, self at rank 0.
        scale (SimilarityScale): The data set's own similarity scale (one
            value per node for the union of several data sets, see
            :meth:`concat`).
        shared (torch.Tensor): Set Jaccard index of the full lists of every
            kNN edge, :obj:`[N, k]`.
        x (torch.Tensor, optional): Unit-norm embeddings :obj:`[N, D]`
            (:obj:`'embedding'` mode only).
        reference (str): The reference of :obj:`scale`,
            :obj:`'random_pairs'` or :obj:`'knn'`.
    """

    knn: KNN
    scale: SimilarityScale
    shared: Tensor
    x: Tensor | None = None
    reference: str = 'random_pairs'

    @property
    def num_nodes(self) -> int:
        return self.knn.num_nodes

    @property
    def k(self) -> int:
        return self.knn.k

    @classmethod
    def build(
        cls,
        x: Tensor | np.ndarray | None,
        k: int,
        *,
        graph: KNN | None = None,
        keep_x: bool = False,
        reference: str = 'random_pairs',
        backend: str = 'auto',
        progress: bool = False,
        scale: SimilarityScale | None = None,
    ) -> KNNContext:
        r"""Builds the context from embeddings (and/or a precomputed kNN).

        The similarity scale follows :obj:`reference`
        (:mod:`~torch_geometric_sdt.utils.knn_features`):
        :obj:`'random_pairs'` needs the embeddings; given a graph alone, it
        falls back to the :obj:`'knn'` estimate, which :attr:`reference`
        records (the model's self-diagnosis reports it). A given
        :obj:`scale` is used as it is (see :func:`reference_scale`).
        """
        check_choice('reference', reference, REFERENCES)
        if x is not None and not isinstance(x, np.ndarray):
            x = torch.as_tensor(x)
        if graph is None:
            if x is None:
                raise ValueError('give embeddings x or a precomputed kNN graph')
            graph = knn(x, k, backend=backend, progress=progress)
        elif graph.k != k:
            raise ValueError(f'the kNN graph has k = {graph.k}, the model k = {k}')
        if x is not None and x.shape[0] != graph.num_nodes:
            raise ValueError(
                f'x has {x.shape[0]} rows but the kNN graph {graph.num_nodes} nodes'
            )
        shared = set_jaccard(graph, progress)
        xx = None
        if keep_x:
            if x is None:
                raise ValueError('embedding mode needs the embeddings x')
            xx = torch.nn.functional.normalize(torch.as_tensor(x).float(), dim=-1)
        scale, reference = reference_scale(x, graph, reference, scale)
        return cls(graph, scale, shared, xx, reference)

    @classmethod
    def concat(cls, contexts: list[KNNContext]) -> KNNContext:
        r"""The disjoint union of several data sets' contexts: node ids of the
        :math:`t`-th are shifted by the sizes of those before it, and every
        node keeps its own data set's similarity scale (per-node
        :class:`SimilarityScale`). Training on a mixture of data sets uses
        it; no kNN edge crosses two data sets.
        """
        if not contexts:
            raise ValueError('give at least one context')
        if len(contexts) == 1:
            return contexts[0]
        if len({c.k for c in contexts}) != 1:
            raise ValueError('every context must have the same k')
        if len({c.x is None for c in contexts}) != 1:
            raise ValueError('either every context keeps x or none does')
        if len({c.reference for c in contexts}) != 1:
            raise ValueError(
                'every context must standardise similarities by the same '
                f'reference (got {sorted({c.reference for c in contexts})})'
            )
        offsets = np.cumsum([0] + [c.num_nodes for c in contexts[:-1]])
        index = torch.cat([c.knn.index + int(o) for c, o in zip(contexts, offsets)])
        sim = torch.cat([c.knn.sim for c in contexts])
        scales = [c.scale.per_node(c.num_nodes) for c in contexts]
        scale = SimilarityScale(
            torch.cat([s.center for s in scales]),  # type: ignore[misc]
            torch.cat([s.scale for s in scales]),  # type: ignore[misc]
        )
        xs = None if contexts[0].x is None else torch.cat([c.x for c in contexts])  # type: ignore[misc]
        return cls(
            KNN(index, sim),
            scale,
            torch.cat([c.shared for c in contexts]),
            xs,
            contexts[0].reference,
        )


def reference_scale(
    x: Tensor | np.ndarray | FeatureShards | None,
    graph: KNN,
    reference: str,
    scale: SimilarityScale | None = None,
) -> tuple[SimilarityScale, str]:
    r"""The similarity scale of a data set for :obj:`reference` and the
    reference it used: :obj:`'random_pairs'` reads the rows
    :func:`~torch_geometric_sdt.utils.knn_features.noise_sample_rows` picks
    (of sharded embeddings too); without embeddings it falls back to
    :obj:`'knn'`, the scale of :obj:`graph.sim`.

    A given :obj:`scale` (checked by
    :func:`~torch_geometric_sdt.utils.knn_features.check_scale`) is returned
    with :obj:`reference` and nothing is estimated: *e.g.* the
    :func:`~torch_geometric_sdt.utils.noise_scale` of a whole collection,
    so that subsets of it are clustered on one noise level. The scale is
    the one statistic of the whole input that the SDT reads (every other
    input is a node's own kNN list), so with it fixed a node's decision
    depends on its neighbourhood alone."""
    if scale is not None:
        return check_scale(scale, graph.num_nodes), reference
    if reference == 'random_pairs' and x is not None:
        if isinstance(x, FeatureShards):
            x = x.take(noise_sample_rows(x.num_rows).numpy())
        return noise_scale(x), reference  # type: ignore[arg-type]
    return similarity_scale(graph.sim), 'knn'


def set_jaccard(
    graph: KNN, progress: bool = False, positions: Tensor | None = None
) -> Tensor:
    r"""Set Jaccard index of the full lists of every kNN edge, :obj:`[N, k]`
    (:attr:`KNNContext.shared`); with :obj:`positions`, of the edges at
    those flat positions alone, :obj:`[P]`."""
    out = topk_jaccard(
        graph, topk=graph.k, mode='set', positions=positions, progress=progress
    )
    return out.float()


#: Nodes per chunk of :func:`band_positions` (the masks and pairs of one
#: chunk: about 40 MiB at :math:`k = 80`).
POSITION_CHUNK_SIZE = 1 << 14


def band_positions(
    topk: Tensor,
    k: int,
    band: tuple[int, int],
    chunk_size: int = POSITION_CHUNK_SIZE,
) -> Tensor:
    r"""Flat positions :math:`i k + r` of the candidate pairs near each node's
    Top-K boundary: ranks :math:`\max(1, K_i - b_-) \le r <
    \min(k, K_i + b_+)`, ascending.

    The output (8 bytes per pair) is allocated once and filled
    :obj:`chunk_size` nodes at a time, so that the masks and
    :meth:`~torch.Tensor.nonzero` pairs of all nodes (24 bytes per pair
    more) are never held at once.
    """
    below, above = band
    rank = torch.arange(k, device=topk.device)
    lo = (topk - below).clamp(min=1)
    hi = (topk + above).clamp(max=k)
    end = (hi - lo).clamp(min=0).cumsum(0)
    num_pairs = int(end[-1]) if end.numel() else 0
    out = torch.empty(num_pairs, dtype=torch.long, device=topk.device)
    for c0 in range(0, topk.numel(), chunk_size):
        c1 = min(c0 + chunk_size, topk.numel())
        mask = (rank >= lo[c0:c1, None]) & (rank < hi[c0:c1, None])
        row, col = mask.nonzero(as_tuple=True)
        start = int(end[c0 - 1]) if c0 > 0 else 0
        out[start : start + row.numel()] = (row + c0) * k + col
    return out


def topk_positions(nodes: Tensor, topk: Tensor, k: int) -> Tensor:
    """Flat positions of the Top-K edges (rank :math:`< K_i`) of some nodes,
    grouped by node.
    """
    rank = torch.arange(k, device=nodes.device)
    mask = rank < topk[nodes].unsqueeze(1)
    row, col = mask.nonzero(as_tuple=True)
    return nodes[row] * k + col


__all__ = [
    'KNNContext',
    'POSITION_CHUNK_SIZE',
    'band_positions',
    'reference_scale',
    'set_jaccard',
    'topk_positions',
]
