from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils.topk_jaccard import (
    _check_options,
    edge_rank,
    topk_jaccard,
)


@functional_transform('topk_jaccard')
class TopKJaccard(BaseTransform):
    r"""Scores every edge of a kNN graph with the Top-K Jaccard coefficient
    from the `"Enhancing Noise Resilience in Face Clustering via Sparse
    Differential Transformer" <https://arxiv.org/abs/2512.22612>`_ paper
    (functional name: :obj:`topk_jaccard`).

    Node :math:`i` lists its neighbours :math:`j` (edges :math:`j \to i`) by
    descending similarity, and :math:`\mathcal{N}_i(K_i)` holds the first
    :math:`K_i` of them. Each edge gets

    .. math::
        J_{ij} = \frac{1}{2} \sum_{m \in \mathcal{N}_i(K_i) \cap
        \mathcal{N}_j(K_j)} \left( p_{im} + p_{jm} \right),
        \qquad
        p_{im} = \frac{\tilde{p}_{im}}{\sum_{m'} \tilde{p}_{im'}},
        \quad
        \tilde{p}_{im} = \frac{1}{1 + \exp(\delta d_{im} + \epsilon)},

    with :math:`d_{im} = 2 - 2 s_{im}`, so that two nodes whose most similar
    neighbours coincide are tied strongly, and an edge into a noisy
    neighbourhood is weakened. See :func:`~torch_geometric_sdt.utils.
    topk_jaccard` for every option.

    The graph is read from :obj:`data.edge_index` with the per-edge
    similarity in :obj:`data[sim_attr]` and the per-edge rank in
    :obj:`data[rank_attr]` (derived from the similarity when absent), or,
    when :obj:`k` is set, built from :obj:`data.x` with
    :func:`~torch_geometric_sdt.nn.knn.knn`, which writes :obj:`edge_index`,
    :obj:`data[rank_attr]` and :obj:`data[sim_attr]`. The score is written
    to :obj:`data[attr]`. The input :class:`~torch_geometric.data.Data` is
    never modified.

    Args:
        topk (int or str, optional): The Top-K of every node: an integer for
            all nodes, the name of a node attribute holding a
            :obj:`LongTensor[N]`, or :obj:`None` for the full lists.
            (default: :obj:`'topk'`)
        k (int, optional): If set, builds a :math:`k`-NN graph (self
            included) from :obj:`data.x`, replacing any existing edges.
            (default: :obj:`None`)
        attr (str, optional): The edge attribute the score is written to.
            (default: :obj:`'edge_weight'`)
        prune (bool, optional): If :obj:`True`, drops every edge outside its
            target's Top-K (rank :math:`\geq K_i`). (default: :obj:`False`)
        min_score (float, optional): If set, drops every edge whose score is
            below it. (default: :obj:`None`)
        sim_attr (str, optional): The edge attribute holding similarities,
            :obj:`[E]` or :obj:`[E, 1]`. (default: :obj:`'edge_attr'`)
        rank_attr (str, optional): The edge attribute holding ranks.
            (default: :obj:`'edge_rank'`)
        flow (str, optional): :obj:`'source_to_target'` (the list of
            :math:`i` holds the sources of edges into :math:`i`) or
            :obj:`'target_to_source'`. (default: :obj:`'source_to_target'`)
        transform (str, optional): :obj:`'sigmoid'` or :obj:`'exp'`.
            (default: :obj:`'sigmoid'`)
        distance (str, optional): :obj:`'sqeuclidean'` or :obj:`'cosine'`.
            (default: :obj:`'sqeuclidean'`)
        normalize (str, optional): :obj:`'topk'` or :obj:`'knn'`.
            (default: :obj:`'topk'`)
        mode (str, optional): :obj:`'weighted'` or :obj:`'set'`.
            (default: :obj:`'weighted'`)
        delta (float, optional): Sigmoid slope :math:`\delta`.
            (default: :obj:`7.5`)
        eps (float, optional): Sigmoid offset :math:`\epsilon`.
            (default: :obj:`-5.0`)
        sigma (float, optional): Scale of the exp transform.
            (default: :obj:`0.5`)
        knn_kwargs (dict, optional): Further arguments of
            :func:`~torch_geometric_sdt.nn.knn.knn`, *e.g.*
            :obj:`dict(backend='faiss')`. (default: :obj:`None`)

    Example:
        >>> data = Data(x=torch.nn.functional.normalize(torch.randn(100, 16)))
        >>> data = TopKJaccard(topk=10, k=20)(data)
        >>> data.edge_weight.shape
        torch.Size([2000])
    """

    def __init__(
        self,
        topk: int | str | None = 'topk',
        *,
        k: int | None = None,
        attr: str = 'edge_weight',
        prune: bool = False,
        min_score: float | None = None,
        sim_attr: str = 'edge_attr',
        rank_attr: str = 'edge_rank',
        flow: str = 'source_to_target',
        transform: str = 'sigmoid',
        distance: str = 'sqeuclidean',
        normalize: str = 'topk',
        mode: str = 'weighted',
        delta: float = 7.5,
        eps: float = -5.0,
        sigma: float = 0.5,
        knn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(topk, bool) or not (topk is None or isinstance(topk, (int, str))):
            raise ValueError(
                f'topk must be an integer, an attribute name or None (got '
                f'{type(topk).__name__}); store a per-node Top-K tensor in the '
                f'data object and pass its attribute name'
            )
        if isinstance(topk, int) and topk < 1:
            raise ValueError(f'topk must be at least 1 (got {topk})')
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f'k must be a positive integer (got {k!r})')
        self.topk = topk
        self.k = k
        self.attr = attr
        self.prune = prune
        self.min_score = min_score
        self.sim_attr = sim_attr
        self.rank_attr = rank_attr
        self.flow = flow
        self.knn_kwargs = dict(knn_kwargs or {})
        self.kwargs: dict[str, Any] = dict(
            transform=transform,
            distance=distance,
            normalize=normalize,
            mode=mode,
            delta=delta,
            eps=eps,
            sigma=sigma,
        )
        # Fail on bad options now rather than at the first graph.
        _check_options(transform, distance, normalize, mode, flow, sigma)

    def _node_topk(self, data: Data) -> int | Tensor | None:
        if not isinstance(self.topk, str):
            return self.topk
        value = data.get(self.topk)
        if value is None:
            raise ValueError(
                f'TopKJaccard reads the per-node Top-K from data.{self.topk}, '
                f'which is missing; set it or pass topk=<int>'
            )
        return value

    def forward(self, data: Data) -> Data:
        topk = self._node_topk(data)
        if self.k is not None:
            if data.x is None:
                raise ValueError(
                    'TopKJaccard(k=...) builds the graph from data.x, which is missing'
                )
            graph = knn(data.x, self.k, **self.knn_kwargs)
            edge_index, rank, sim = graph.to_edge_index(self.flow)
            score = topk_jaccard(graph, topk=topk, **self.kwargs).view(-1)
            data.edge_index = edge_index
            data[self.rank_attr] = rank
            data[self.sim_attr] = sim
        else:
            edge_index = data.edge_index
            if edge_index is None:
                raise ValueError(
                    'TopKJaccard needs data.edge_index, or k=<int> to build a '
                    'kNN graph from data.x'
                )
            sim = data.get(self.sim_attr)
            if isinstance(sim, Tensor) and sim.dim() == 2 and sim.size(-1) == 1:
                sim = sim.view(-1)
            rank = data.get(self.rank_attr)
            if sim is None and (rank is None or self.kwargs['mode'] == 'weighted'):
                raise ValueError(
                    f'TopKJaccard needs per-edge similarities in '
                    f'data.{self.sim_attr} (or ranks in data.{self.rank_attr} '
                    f"with mode='set')"
                )
            if sim is not None and (not isinstance(sim, Tensor) or sim.dim() != 1):
                raise ValueError(
                    f'data.{self.sim_attr} must hold one similarity per edge, '
                    f'shape [E] or [E, 1]'
                )
            score = topk_jaccard(
                edge_index,
                sim,
                topk,
                rank=rank,
                num_nodes=data.num_nodes,
                flow=self.flow,
                **self.kwargs,
            )
            if rank is None and self.prune:
                rank = edge_rank(edge_index, sim, data.num_nodes, self.flow)
        data[self.attr] = score

        keep: Tensor | None = None
        if self.prune and topk is not None:
            owner = data.edge_index[1 if self.flow == 'source_to_target' else 0]
            node_topk = (
                topk.to(owner.device)[owner] if isinstance(topk, Tensor) else topk
            )
            keep = rank < node_topk
        if self.min_score is not None:
            above = score >= self.min_score
            keep = above if keep is None else keep & above
        if keep is not None:
            data = data.edge_subgraph(keep)
        return data

    def __repr__(self) -> str:
        kw = self.kwargs
        return (
            f'{self.__class__.__name__}(topk={self.topk!r}, k={self.k}, '
            f"attr='{self.attr}', transform='{kw['transform']}', "
            f"distance='{kw['distance']}', normalize='{kw['normalize']}', "
            f"mode='{kw['mode']}', prune={self.prune}, "
            f'min_score={self.min_score})'
        )
