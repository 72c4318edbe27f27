from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils import edge_similarity


def test_edge_similarity_matches_knn():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 5, generator=gen) * 3  # not unit-norm
    graph = knn(x, 6, backend='exact')
    edge_index, _, sim = graph.to_edge_index()
    out = edge_similarity(x, edge_index, chunk_size=7)
    assert out.shape == (edge_index.size(1),) and out.dtype == torch.float32
    assert torch.allclose(out, sim, atol=1e-5)
    graph = knn(x, 6, metric='l2', backend='exact')
    edge_index, _, sim = graph.to_edge_index()
    out = edge_similarity(x, edge_index, 'l2')
    assert torch.allclose(out, sim, atol=1e-4)


def test_edge_similarity_bipartite_and_edge_cases():
    x_src, x_dst = torch.randn(4, 3), torch.randn(2, 3)
    edge_index = torch.tensor([[0, 3, 2], [1, 0, 1]])
    out = edge_similarity((x_src, x_dst), edge_index)
    expected = F.cosine_similarity(x_src[edge_index[0]], x_dst[edge_index[1]])
    assert torch.allclose(out, expected, atol=1e-6)
    assert edge_similarity(x_src, torch.empty(2, 0, dtype=torch.long)).numel() == 0
    zero = torch.zeros(2, 3)
    assert edge_similarity(zero, torch.tensor([[0], [1]])).tolist() == [0.0]
    with pytest.raises(ValueError, match='metric must be one of'):
        edge_similarity(x_src, edge_index, 'dot')
    with pytest.raises(ValueError, match='chunk_size must be at least 1'):
        edge_similarity(x_src, edge_index, chunk_size=0)
    with pytest.raises(ValueError, match=r'shape \[N, D\]'):
        edge_similarity(x_src[0], edge_index)
