from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import AddSelfLoops

from torch_geometric_sdt import SparseDiffAttention, TopKJaccard
from torch_geometric_sdt.nn.knn import KNN, knn, knn_graph
from torch_geometric_sdt.utils import edge_rank, edge_similarity, topk_jaccard


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


def tied_graph(seed: int = 0) -> Data:
    r"""Random lists without self-loops whose similarities tie across the
    Top-K boundary, edges shuffled so that edge order differs from source
    order.
    """
    gen = torch.Generator().manual_seed(seed)
    num_nodes, deg = 30, 8
    target = torch.arange(num_nodes).repeat_interleave(deg)
    source = torch.stack(
        [torch.randperm(num_nodes - 1, generator=gen)[:deg] for _ in range(num_nodes)]
    ).view(-1)
    source = source + (source >= target).long()  # no self-loops
    sim = torch.randint(0, 3, (num_nodes * deg,), generator=gen) / 4  # many ties
    perm = torch.randperm(target.numel(), generator=gen)
    x = torch.randn(num_nodes, 8, generator=gen)
    edge_index = torch.stack([source, target])[:, perm]
    return Data(x=x, edge_index=edge_index, edge_attr=sim[perm])


def conv_topk_edges(data: Data, topk: int) -> set[tuple[int, int]]:
    r"""The edges the Top-K mask of SparseDiffAttention keeps."""
    conv = SparseDiffAttention(8, 4, heads=2)
    maps = conv.attention_maps(data.x, data.edge_index, data.edge_attr, topk=topk)
    kept = (maps.alpha_1 != 0).all(dim=-1)
    return set(map(tuple, data.edge_index[:, kept].t().tolist()))


def edge_set(edge_index: Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


def test_conv_and_transform_pick_the_same_topk_on_ties() -> None:
    data = tied_graph()
    for topk in [1, 3, 5]:
        pruned = TopKJaccard(topk, prune=True)(data)
        chosen = edge_set(pruned.edge_index)
        assert len(chosen) == 30 * topk
        assert chosen == conv_topk_edges(data, topk)
        rank = edge_rank(data.edge_index, data.edge_attr)
        assert chosen == edge_set(data.edge_index[:, rank < topk])


def test_add_self_loops_mean_is_accepted_by_both() -> None:
    data = AddSelfLoops(attr='edge_attr', fill_value='mean')(tied_graph(seed=1))
    is_loop = data.edge_index[0] == data.edge_index[1]
    assert int(is_loop.sum()) == 30
    # The mean similarity is below the list's best, yet the loop ranks first:
    rank = edge_rank(data.edge_index, data.edge_attr)
    assert bool((rank[is_loop] == 0).all())
    for topk in [1, 4]:
        pruned = TopKJaccard(topk, prune=True)(data)
        assert edge_set(pruned.edge_index) == conv_topk_edges(data, topk)
    assert edge_set(TopKJaccard(1, prune=True)(data).edge_index) == edge_set(
        data.edge_index[:, is_loop]
    )


def test_knn_graph_without_similarities() -> None:
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(50, 6, generator=gen)
    data = Data(x=x, edge_index=knn_graph(x, 7, cosine=True))
    out = TopKJaccard(4)(data)
    sim = edge_similarity(x, data.edge_index)
    assert torch.allclose(out.edge_attr, sim)  # written, as the free sim_attr
    expected = topk_jaccard(data.edge_index, sim, 4, num_nodes=50)
    assert torch.equal(out.edge_weight, expected)
    assert 'edge_attr' not in data
    # knn_graph(loop=True) gives the lists of knn(), so the same scores:
    data = Data(x=x, edge_index=knn_graph(x, 7, loop=True, cosine=True))
    graph = knn(x, 7, backend='exact')
    out = TopKJaccard(4)(data)
    assert torch.equal(data.edge_index, graph.to_edge_index()[0])
    assert torch.allclose(out.edge_weight, topk_jaccard(graph, topk=4).view(-1))
    # Multi-dimensional edge features are kept, the similarity comes from x:
    data.edge_attr = torch.randn(data.num_edges, 3)
    out = TopKJaccard(4, prune=True)(data)
    assert out.edge_attr.size(1) == 3 and out.num_edges == 50 * 4


def test_hetero_data() -> None:
    data, graph = knn_data(seed=7)
    hetero = HeteroData()
    hetero['face'].x = data.x
    hetero['face'].topk = data.topk
    hetero['face', 'near', 'face'].edge_index = data.edge_index
    hetero['face', 'near', 'face'].edge_attr = data.edge_attr
    hetero['person'].num_nodes = 4
    of = torch.stack([torch.arange(60), torch.arange(60) % 4])
    hetero['face', 'of', 'person'].edge_index = of
    out = TopKJaccard(prune=True)(hetero)
    expected = TopKJaccard(prune=True)(data)
    near = out['face', 'near', 'face']
    assert torch.equal(near.edge_index, expected.edge_index)
    assert torch.equal(near.edge_weight, expected.edge_weight)
    assert torch.equal(out['face', 'of', 'person'].edge_index, of)  # untouched
    assert 'edge_weight' not in hetero['face', 'near', 'face']  # input intact
    # Similarities are computed from x where missing:
    del hetero['face', 'near', 'face'].edge_attr
    out = TopKJaccard(3)(hetero)
    assert torch.allclose(out['face', 'near', 'face'].edge_attr, data.edge_attr)
    with pytest.raises(ValueError, match=r"data\['face'\].topk, which is missing"):
        del hetero['face'].topk
        TopKJaccard()(hetero)
    with pytest.raises(ValueError, match='no edge type to score'):
        TopKJaccard(3)(HeteroData({('a', 'to', 'b'): {'edge_index': of}}))
    with pytest.raises(ValueError, match='HeteroData'):
        TopKJaccard(3, k=5)(hetero)
