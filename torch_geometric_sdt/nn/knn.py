"""k-nearest-neighbour graphs in the fixed-width ``[N, k]`` form."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KNN(NamedTuple):
    r"""A k-nearest-neighbour graph in fixed-width form.

    Row :math:`i` lists the :math:`k` neighbours of node :math:`i` sorted by
    descending similarity, with :math:`i` itself at rank 0.

    Attributes:
        index (torch.Tensor): Neighbour ids, :obj:`LongTensor[N, k]`.
        sim (torch.Tensor): Similarities (cosine, or negative squared
            Euclidean distance for ``metric='l2'``), :obj:`Tensor[N, k]`,
            descending along each row.
    """

    index: Tensor
    sim: Tensor

    @property
    def num_nodes(self) -> int:
        return self.index.size(0)

    @property
    def k(self) -> int:
        return self.index.size(1)

    def to_edge_index(
        self,
        flow: str = 'source_to_target',
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Converts to PyG's COO form.

        With :obj:`flow='source_to_target'` every target :math:`i` has the
        :math:`k` sources :obj:`index[i]` (edges :math:`j \to i`), as in
        :func:`torch_geometric.nn.knn_graph`.

        Returns:
            (edge_index, rank, sim): :obj:`LongTensor[2, N * k]`, the rank of
            each edge in its target's list :obj:`LongTensor[N * k]`, and its
            similarity :obj:`Tensor[N * k]`. Edges are ordered by target, then
            rank.
        """
        if flow not in ('source_to_target', 'target_to_source'):
            raise ValueError(f"flow must be 'source_to_target' or "
                             f"'target_to_source' (got {flow!r})")
        num_nodes, k = self.index.shape
        device = self.index.device
        target = torch.arange(num_nodes, device=device).repeat_interleave(k)
        source = self.index.reshape(-1)
        rank = torch.arange(k, device=device).repeat(num_nodes)
        if flow == 'source_to_target':
            edge_index = torch.stack([source, target], dim=0)
        else:
            edge_index = torch.stack([target, source], dim=0)
        return edge_index, rank, self.sim.reshape(-1)
