from __future__ import annotations

import pytest
import torch
from torch import Tensor

from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils import edge_rank, position_in_target


def brute_force_rank(score: Tensor, index: Tensor, tiebreak: Tensor | None) -> Tensor:
    r"""Sorts the edges of every target with Python's :func:`sorted`: NaN
    first (as :func:`torch.sort`), then descending score, ascending tie-break,
    edge order.
    """
    values = score.double().tolist()
    ties = [0] * len(values) if tiebreak is None else tiebreak.tolist()
    out = torch.empty(len(values), dtype=torch.long)
    for i in set(index.tolist()):
        edges = [e for e in range(len(values)) if index[e] == i]
        edges.sort(
            key=lambda e: (
                values[e] == values[e],  # False (NaN) first
                -values[e] if values[e] == values[e] else 0.0,
                ties[e],
                e,
            )
        )
        for r, e in enumerate(edges):
            out[e] = r
    return out


def test_position_in_target():
    score = torch.tensor([0.5, 0.9, 0.1, 0.7, 0.7, 0.3])
    index = torch.tensor([0, 0, 1, 1, 1, 0])
    pos = position_in_target(score, index, 3)
    assert pos.tolist() == [1, 0, 2, 0, 1, 2]
    tiebreak = torch.tensor([0, 0, 0, 9, 2, 0])
    pos = position_in_target(score, index, 3, tiebreak=tiebreak)
    assert pos.tolist() == [1, 0, 2, 1, 0, 2]
    pos = position_in_target(torch.stack([score, -score], dim=1), index, 3)
    assert pos[:, 1].tolist() == [1, 2, 0, 1, 2, 0]
    empty = position_in_target(torch.empty(0), torch.empty(0, dtype=torch.long), 4)
    assert empty.numel() == 0
    empty = position_in_target(
        torch.empty(0, 2, 3), torch.empty(0, dtype=torch.long), 4
    )
    assert empty.shape == (0, 2, 3)


@pytest.mark.parametrize(
    'dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64]
)
@pytest.mark.parametrize('with_tiebreak', [False, True])
def test_position_in_target_matches_brute_force(
    dtype: torch.dtype, with_tiebreak: bool
):
    gen = torch.Generator().manual_seed(0)
    num_edges, num_targets = 200, 9
    # Few distinct values, both signs, both zeros, infinities and NaN: many ties.
    values = torch.tensor(
        [-2.0, -0.5, -0.0, 0.0, 0.25, 1.0, float('inf'), float('-inf'), float('nan')]
    )
    score = values[torch.randint(0, values.numel(), (num_edges, 2), generator=gen)]
    index = torch.randint(0, num_targets, (num_edges,), generator=gen)
    tiebreak = (
        torch.randint(0, 5, (num_edges,), generator=gen) if with_tiebreak else None
    )
    out = position_in_target(score.to(dtype), index, num_targets, tiebreak=tiebreak)
    assert out.shape == score.shape
    for c in range(score.size(1)):
        assert torch.equal(out[:, c], brute_force_rank(score[:, c], index, tiebreak))


def test_edge_rank_rule():
    # A self-loop of low similarity, ties, edges in no particular order:
    edge_index = torch.tensor(
        [
            [3, 0, 2, 4, 1, 5, 2, 0],
            [0, 0, 0, 0, 1, 1, 1, 1],
        ]
    )
    sim = torch.tensor([0.5, 0.1, 0.5, 0.9, 1.0, 0.2, 0.3, 0.2])
    # Node 0: self (0.1) first, then 4 (0.9), then the tie 2, 3 by source.
    # Node 1: self first, then 2 (0.3), then the tie 0, 5 by source.
    assert edge_rank(edge_index, sim).tolist() == [3, 0, 2, 1, 0, 3, 1, 2]
    # Without self precedence, only similarity and source id count:
    rank = edge_rank(edge_index, sim, self_first=False)
    assert rank.tolist() == [2, 3, 1, 0, 0, 3, 1, 2]
    # The other flow ranks the edges of every source:
    flipped = edge_rank(edge_index.flip(0), sim, flow='target_to_source')
    assert torch.equal(flipped, edge_rank(edge_index, sim))
    # Edge order breaks the remaining ties (duplicate edges):
    dup = torch.tensor([[2, 2], [0, 0]])
    assert edge_rank(dup, torch.tensor([0.5, 0.5])).tolist() == [0, 1]


def test_edge_rank_reproduces_knn_ranks():
    gen = torch.Generator().manual_seed(1)
    base = torch.nn.functional.normalize(torch.randn(40, 3, generator=gen), dim=1)
    # Exact duplicates tie with self and with each other:
    x = torch.cat([base, base[:15]], dim=0)
    graph = knn(x, 8, backend='exact')
    edge_index, rank, sim = graph.to_edge_index()
    assert torch.equal(edge_rank(edge_index, sim), rank)
    perm = torch.randperm(rank.numel(), generator=gen)
    assert torch.equal(edge_rank(edge_index[:, perm], sim[perm]), rank[perm])
    edge_index, rank, sim = graph.to_edge_index('target_to_source')
    assert torch.equal(edge_rank(edge_index, sim, flow='target_to_source'), rank)


def test_edge_rank_compiles_fullgraph():
    torch._dynamo.reset()
    edge_index = torch.randint(0, 10, (2, 50))
    sim = torch.rand(50)
    expected = edge_rank(edge_index, sim, 10)
    compiled = torch.compile(
        lambda ei, s: edge_rank(ei, s, 10), backend='aot_eager', fullgraph=True
    )
    assert torch.equal(compiled(edge_index, sim), expected)


def test_edge_rank_bad_input():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match='flow must be one of'):
        edge_rank(edge_index, torch.rand(2), flow='up')
    with pytest.raises(ValueError, match='floating-point'):
        edge_rank(edge_index, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r'shape \[2\]'):
        edge_rank(edge_index, torch.rand(3))
    with pytest.raises(ValueError, match=r'shape \[2, E\]'):
        edge_rank(edge_index[:1], torch.rand(2))
