from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from torch_geometric_sdt import TopKJaccard
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.utils import edge_rank, topk_jaccard


def knn_data(num_nodes: int = 60, k: int = 8, seed: int = 0) -> tuple[Data, KNN]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(num_nodes, 6, generator=gen), dim=1)
    graph = knn(x, k, backend='exact')
    edge_index, rank, sim = graph.to_edge_index()
    topk = torch.randint(1, k + 1, (num_nodes,), generator=gen)
    data = Data(x=x, edge_index=edge_index, edge_rank=rank, edge_attr=sim, topk=topk)
    return data, graph


def test_scores_from_data_attributes() -> None:
    data, graph = knn_data()
    out = TopKJaccard()(data)
    expected = topk_jaccard(graph, topk=data.topk).view(-1)
    assert torch.equal(out.edge_weight, expected)
    assert torch.equal(out.edge_index, data.edge_index)
    # Integer and full-list Top-K, another attribute name, [E, 1] similarities.
    out = TopKJaccard(5, attr='score')(data)
    assert torch.equal(out.score, topk_jaccard(graph, topk=5).view(-1))
    data2 = data.clone()
    data2.edge_attr = data2.edge_attr.view(-1, 1)
    out = TopKJaccard(None, transform='exp', normalize='knn')(data2)
    fc_es = topk_jaccard(graph, transform='exp', normalize='knn').view(-1)
    assert torch.equal(out.edge_weight, fc_es)


def test_rank_derived_from_similarity() -> None:
    data, graph = knn_data(seed=1)
    del data.edge_rank
    perm = torch.randperm(data.num_edges, generator=torch.Generator().manual_seed(0))
    shuffled = data.edge_subgraph(perm)
    out = TopKJaccard(3)(shuffled)
    expected = topk_jaccard(graph, topk=3).view(-1)[perm]
    assert torch.equal(out.edge_weight, expected)


def test_build_from_x() -> None:
    data, graph = knn_data(seed=2)
    bare = Data(x=data.x, topk=data.topk)
    out = TopKJaccard(k=8)(bare)
    assert torch.equal(out.edge_index, data.edge_index)
    assert torch.equal(out.edge_rank, data.edge_rank)
    assert torch.allclose(out.edge_attr, data.edge_attr)
    assert torch.equal(out.edge_weight, topk_jaccard(graph, topk=data.topk).view(-1))
    assert 'edge_index' not in bare  # the input is left untouched


def test_prune_and_floor() -> None:
    data, graph = knn_data(seed=3)
    full = TopKJaccard()(data)
    out = TopKJaccard(prune=True)(data)
    keep = data.edge_rank < data.topk[data.edge_index[1]]
    assert out.num_edges == int(keep.sum()) < data.num_edges
    assert torch.equal(out.edge_index, data.edge_index[:, keep])
    assert torch.equal(out.edge_weight, full.edge_weight[keep])
    assert torch.equal(out.edge_rank, data.edge_rank[keep])
    assert out.num_nodes == data.num_nodes
    out = TopKJaccard(min_score=0.3)(data)
    assert bool((out.edge_weight >= 0.3).all())
    assert out.num_edges == int((full.edge_weight >= 0.3).sum())
    out = TopKJaccard(prune=True, min_score=0.3)(data)
    assert out.num_edges == int((keep & (full.edge_weight >= 0.3)).sum())
    # Pruning without stored ranks ranks by similarity.
    del data.edge_rank
    assert TopKJaccard(prune=True)(data).num_edges == int(keep.sum())


def test_input_not_mutated() -> None:
    data, _ = knn_data(seed=4)
    before = {key: value.clone() for key, value in data.items()}
    out = TopKJaccard(prune=True, min_score=0.1)(data)
    assert out is not data
    assert set(data.keys()) == set(before)
    for key, value in data.items():
        assert torch.equal(value, before[key])


def test_general_graph() -> None:
    edge_index = torch.tensor([[0, 1, 2, 1, 0, 2, 3], [0, 0, 0, 1, 1, 2, 2]])
    sim = torch.tensor([1.0, 0.8, 0.1, 1.0, 0.8, 1.0, 0.2])
    data = Data(edge_index=edge_index, edge_attr=sim, num_nodes=4)
    out = TopKJaccard(2)(data)
    expected = topk_jaccard(edge_index, sim, 2, num_nodes=4)
    assert torch.equal(out.edge_weight, expected)
    assert torch.equal(edge_rank(edge_index, sim), torch.tensor([0, 1, 2, 0, 1, 0, 1]))


def test_errors_and_repr() -> None:
    data, _ = knn_data(seed=5)
    del data.topk
    with pytest.raises(ValueError, match='data.topk, which is missing'):
        TopKJaccard()(data)
    with pytest.raises(ValueError, match='needs per-edge similarities'):
        TopKJaccard(3)(Data(edge_index=data.edge_index, num_nodes=60))
    with pytest.raises(ValueError, match='needs data.edge_index'):
        TopKJaccard(3)(Data(x=data.x))
    with pytest.raises(ValueError, match='data.x'):
        TopKJaccard(3, k=5)(Data(num_nodes=4))
    with pytest.raises(ValueError, match='topk must be'):
        TopKJaccard(0)
    with pytest.raises(ValueError, match='topk must be'):
        TopKJaccard(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='k must be'):
        TopKJaccard(3, k=0)
    with pytest.raises(ValueError, match='transform must be'):
        TopKJaccard(3, transform='tanh')
    with pytest.raises(ValueError, match='flow must be one of'):
        TopKJaccard(3, flow='up')
    assert repr(TopKJaccard(10, mode='set', prune=True)) == (
        "TopKJaccard(topk=10, k=None, attr='edge_weight', transform='sigmoid', "
        "distance='sqeuclidean', normalize='topk', mode='set', prune=True, "
        'min_score=None)'
    )
