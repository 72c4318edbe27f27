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
from torch_geometric_sdt.utils.knn_features import SimilarityScale, similarity_scale
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard


@dataclass
class KNNContext:
    r"""Everything the model reads from one data set's kNN graph, computed once.

    Attributes:
        knn (KNN): The kNN graph, :obj:`[N, k]`, self at rank 0.
        scale (SimilarityScale): The data set's own similarity scale.
        shared (torch.Tensor): Set Jaccard index of the full lists of every
            kNN edge, :obj:`[N, k]`.
        x (torch.Tensor, optional): Unit-norm embeddings :obj:`[N, D]`
            (:obj:`'embedding'` mode only).
    """

    knn: KNN
    scale: SimilarityScale
    shared: Tensor
    x: Tensor | None = None

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
        backend: str = 'auto',
        progress: bool = False,
    ) -> KNNContext:
        """Builds the context from embeddings (and/or a precomputed kNN)."""
        if x is not None:
            x = torch.as_tensor(x)
        if graph is None:
            if x is None:
                raise ValueError('give embeddings x or a precomputed kNN graph')
            graph = knn(x, k, backend=backend, progress=progress)
        elif graph.k != k:
            raise ValueError(f'the kNN graph has k = {graph.k}, the model k = {k}')
        if x is not None and x.size(0) != graph.num_nodes:
            raise ValueError(
                f'x has {x.size(0)} rows but the kNN graph {graph.num_nodes} nodes'
            )
        shared = topk_jaccard(graph, topk=k, mode='set', progress=progress)
        xx = None
        if keep_x:
            if x is None:
                raise ValueError('embedding mode needs the embeddings x')
            xx = torch.nn.functional.normalize(x.float(), dim=-1)
        return cls(graph, similarity_scale(graph.sim), shared.float(), xx)


def band_positions(topk: Tensor, k: int, band: tuple[int, int]) -> Tensor:
    r"""Flat positions :math:`i k + r` of the candidate pairs near each node's
    Top-K boundary: ranks :math:`\max(1, K_i - b_-) \le r <
    \min(k, K_i + b_+)`.
    """
    below, above = band
    rank = torch.arange(k, device=topk.device)
    lo = (topk - below).clamp(min=1).unsqueeze(1)
    hi = (topk + above).clamp(max=k).unsqueeze(1)
    mask = (rank >= lo) & (rank < hi)
    row, col = mask.nonzero(as_tuple=True)
    return row * k + col


def topk_positions(nodes: Tensor, topk: Tensor, k: int) -> Tensor:
    """Flat positions of the Top-K edges (rank :math:`< K_i`) of some nodes,
    grouped by node.
    """
    rank = torch.arange(k, device=nodes.device)
    mask = rank < topk[nodes].unsqueeze(1)
    row, col = mask.nonzero(as_tuple=True)
    return nodes[row] * k + col


__all__ = ['KNNContext', 'band_positions', 'topk_positions']
