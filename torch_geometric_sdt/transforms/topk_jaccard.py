from __future__ import annotations

from typing import Any

from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.data.storage import EdgeStorage, NodeStorage
from torch_geometric.transforms import BaseTransform

from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils.rank import edge_rank
from torch_geometric_sdt.utils.similarity import edge_similarity
from torch_geometric_sdt.utils.topk_jaccard import _check_options, topk_jaccard
from torch_geometric_sdt.utils.validation import check_int

# A Data object, or one node or edge store of a HeteroData object.
_Store = Data | NodeStorage | EdgeStorage


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
    :obj:`data[rank_attr]`. Without ranks, edges are ranked by
    :func:`~torch_geometric_sdt.utils.edge_rank` (self-loop first, then
    descending similarity, ties by ascending source id), the order the Top-K
    mask of :class:`~torch_geometric_sdt.nn.conv.SparseDiffAttention` uses.
    Without a one-dimensional similarity (*e.g.* for a graph from
    :func:`~torch_geometric_sdt.nn.knn.knn_graph`, which returns edges only),
    the cosine similarity of every edge's endpoints is computed from
    :obj:`data.x` by :func:`~torch_geometric_sdt.utils.edge_similarity`
    (:math:`O(|\mathcal{E}| D)`, no dense :math:`N \times N` matrix) and
    written to :obj:`data[sim_attr]` if that attribute is free. When
    :obj:`k` is set, the graph is instead built from :obj:`data.x` with
    :func:`~torch_geometric_sdt.nn.knn.knn`, which writes :obj:`edge_index`,
    :obj:`data[rank_attr]` and :obj:`data[sim_attr]`. The score is written
    to :obj:`data[attr]`. The input data object is never modified.

    A :class:`~torch_geometric.data.HeteroData` object is scored edge type by
    edge type: every edge type :math:`(t, r, t)` between nodes of one type
    whose store holds what is needed (similarities, ranks with
    :obj:`mode='set'`, or :obj:`data[t].x`) is processed as above, with the
    per-node Top-K read from :obj:`data[t]`; other edge types are left as
    they are. :obj:`k` is not supported for it.

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
        if isinstance(topk, int):
            check_int('topk', topk, minimum=1)
        if k is not None:
            check_int('k', k, minimum=1)
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

    def forward(self, data: Data | HeteroData) -> Data | HeteroData:
        if isinstance(data, HeteroData):
            return self._forward_hetero(data)
        if self.k is None and data.edge_index is None:
            raise ValueError(
                'TopKJaccard needs data.edge_index, or k=<int> to build a '
                'kNN graph from data.x'
            )
        keep = self._score(data, data, 'data', 'data')
        return data if keep is None else data.edge_subgraph(keep)

    def _forward_hetero(self, data: HeteroData) -> HeteroData:
        if self.k is not None:
            raise ValueError(
                'TopKJaccard(k=...) builds the kNN graph of a Data object; '
                'for HeteroData, build the edges first and pass k=None'
            )
        keep: dict[tuple[str, str, str], Tensor] = {}
        num_scored = 0
        for edge_type in data.edge_types:
            src, _, dst = edge_type
            store, node_store = data[edge_type], data[dst]
            if src != dst or 'edge_index' not in store:
                continue
            if self._similarity(store) is None and node_store.get('x') is None:
                if self.kwargs['mode'] == 'weighted' or self.rank_attr not in store:
                    continue
            where, node_where = f'data[{edge_type!r}]', f'data[{dst!r}]'
            mask = self._score(store, node_store, where, node_where)
            num_scored += 1
            if mask is not None:
                keep[edge_type] = mask
        if num_scored == 0:
            raise ValueError(
                f'TopKJaccard found no edge type to score: it needs an edge '
                f'type (t, relation, t) with edge_index and per-edge '
                f'similarities in .{self.sim_attr} (or node features '
                f'data[t].x)'
            )
        return data.edge_subgraph(keep) if keep else data

    def _similarity(self, store: _Store) -> Tensor | None:
        r"""The per-edge similarity of :obj:`store`, if it holds one."""
        sim = store.get(self.sim_attr)
        if not isinstance(sim, Tensor) or not sim.is_floating_point():
            return None
        if sim.dim() == 2 and sim.size(-1) == 1:
            sim = sim.view(-1)
        return sim if sim.dim() == 1 else None

    def _score(
        self,
        store: _Store,
        node_store: _Store,
        where: str,
        node_where: str,
    ) -> Tensor | None:
        r"""Scores the edges of :obj:`store` in place; returns the mask of
        the edges to keep (:obj:`None` to keep all).
        """
        topk = self._node_topk(node_store, node_where)
        if self.k is not None:
            x = node_store.get('x')
            if x is None:
                raise ValueError(
                    'TopKJaccard(k=...) builds the graph from data.x, which is missing'
                )
            graph = knn(x, self.k, **self.knn_kwargs)
            edge_index, rank, sim = graph.to_edge_index(self.flow)
            score = topk_jaccard(graph, topk=topk, **self.kwargs).view(-1)
            store['edge_index'] = edge_index
            store[self.rank_attr] = rank
            store[self.sim_attr] = sim
        else:
            edge_index = store['edge_index']
            num_nodes = node_store.num_nodes
            sim = self._similarity(store)
            rank = store.get(self.rank_attr)
            if sim is None and (rank is None or self.kwargs['mode'] == 'weighted'):
                sim = self._similarity_from_x(store, node_store, where, node_where)
            if rank is None:
                rank = edge_rank(edge_index, sim, num_nodes, self.flow)
            score = topk_jaccard(
                edge_index,
                sim,
                topk,
                rank=rank,
                num_nodes=num_nodes,
                flow=self.flow,
                **self.kwargs,
            )
        store[self.attr] = score

        keep: Tensor | None = None
        if self.prune and topk is not None:
            owner = edge_index[1 if self.flow == 'source_to_target' else 0]
            node_topk = (
                topk.to(owner.device)[owner] if isinstance(topk, Tensor) else topk
            )
            keep = rank.to(owner.device) < node_topk
        if self.min_score is not None:
            above = score >= self.min_score
            keep = above if keep is None else keep & above
        return keep

    def _similarity_from_x(
        self,
        store: _Store,
        node_store: _Store,
        where: str,
        node_where: str,
    ) -> Tensor:
        x = node_store.get('x')
        if not isinstance(x, Tensor) or x.dim() != 2:
            if store.get(self.sim_attr) is not None:
                raise ValueError(
                    f'{where}.{self.sim_attr} must hold one similarity per '
                    f'edge, shape [E] or [E, 1], or {node_where}.x the node '
                    f'features to compute it from'
                )
            raise ValueError(
                f'TopKJaccard needs per-edge similarities in '
                f'{where}.{self.sim_attr}, node features {node_where}.x to '
                f'compute them from, or ranks in {where}.{self.rank_attr} '
                f"with mode='set'"
            )
        sim = edge_similarity(x, store['edge_index'])
        if self.sim_attr not in store:
            store[self.sim_attr] = sim
        return sim

    def _node_topk(self, node_store: _Store, node_where: str) -> int | Tensor | None:
        if not isinstance(self.topk, str):
            return self.topk
        value = node_store.get(self.topk)
        if value is None:
            raise ValueError(
                f'TopKJaccard reads the per-node Top-K from '
                f'{node_where}.{self.topk}, which is missing; set it or pass '
                f'topk=<int>'
            )
        return value

    def __repr__(self) -> str:
        kw = self.kwargs
        return (
            f'{self.__class__.__name__}(topk={self.topk!r}, k={self.k}, '
            f"attr='{self.attr}', transform='{kw['transform']}', "
            f"distance='{kw['distance']}', normalize='{kw['normalize']}', "
            f"mode='{kw['mode']}', prune={self.prune}, "
            f'min_score={self.min_score})'
        )
