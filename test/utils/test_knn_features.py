from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.utils.knn_features import similarity_scale


def test_similarity_scale_small_uses_every_value():
    sim = torch.tensor([[1.0, 0.9, 0.1], [1.0, 0.5, 0.3]])
    scale = similarity_scale(sim)
    values = torch.tensor([0.9, 0.1, 0.5, 0.3], dtype=torch.float64)
    q = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    assert scale.center == pytest.approx(float(q[1]))
    assert scale.scale == pytest.approx(float(q[2] - q[0]))


def test_similarity_scale_subsamples_rows_at_scale():
    # More values than torch.quantile accepts (16M): rows are subsampled so
    # that at most max_samples values enter, and the estimate stays close.
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(220_000, 80, generator=g)
    sim[:, 0] = 1.0
    scale = similarity_scale(sim)
    assert scale.center == pytest.approx(0.5, abs=0.01)
    assert scale.scale == pytest.approx(0.8, abs=0.01)
    small = similarity_scale(sim, max_samples=10_000)
    assert small.center == pytest.approx(0.5, abs=0.03)


def test_similarity_scale_bad_input():
    with pytest.raises(ValueError, match='k >= 2'):
        similarity_scale(torch.rand(4, 1))
    with pytest.raises(ValueError, match='at least one row'):
        similarity_scale(torch.rand(0, 3))
