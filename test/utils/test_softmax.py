from __future__ import annotations

import torch
from torch_geometric.utils import softmax

from torch_geometric_sdt.utils import masked_softmax


def test_masked_softmax_all_masked_row_is_zero():
    src = torch.tensor([1.0, float('-inf'), float('-inf'), 2.0])
    out = masked_softmax(src, torch.tensor([0, 1, 1, 0]), 3)
    assert torch.isfinite(out).all()
    assert out[1:3].tolist() == [0.0, 0.0]
    assert torch.allclose(out[[0, 3]].sum(), torch.tensor(1.0))


def test_masked_softmax_equals_pyg_softmax_without_mask():
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(30, 2, 3, generator=gen)
    index = torch.randint(0, 7, (30,), generator=gen)
    out = masked_softmax(src, index, 7)
    assert torch.allclose(out, softmax(src, index, num_nodes=7), atol=1e-6)
