from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.datasets import regime_draw
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils.knn_features import (
    SimilarityScale,
    noise_scale,
    similarity_scale,
)


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


def test_noise_scale_of_random_directions():
    # Cosines of random directions in D dimensions: centre 0, spread 1/sqrt(D).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 64, generator=g)
    scale = noise_scale(x)
    assert scale.center == pytest.approx(0.0, abs=0.01)
    assert scale.scale == pytest.approx(64**-0.5, rel=0.05)
    # Seeded (the same sample), and the same from NumPy input:
    assert noise_scale(x) == scale
    assert noise_scale(x.numpy()) == pytest.approx(scale)
    assert noise_scale(x, seed=1) != scale
    # Fewer rows than the sample: every pair.
    assert noise_scale(x[:10]).center == pytest.approx(
        float(
            torch.quantile(
                (lambda s: (s @ s.T)[torch.triu_indices(10, 10, 1).unbind()])(
                    torch.nn.functional.normalize(x[:10].double(), dim=1)
                ),
                0.5,
            )
        )
    )


def test_noise_scale_does_not_depend_on_identity_sizes():
    # The kNN reference moves with identity sizes (most neighbours are the
    # same identity when identities are large); the noise reference does not.
    small, _ = regime_draw('lfw', 3000, 128, seed=1)
    large, _ = regime_draw('msceleb', 3000, 128, seed=1)
    assert abs(noise_scale(small).center - noise_scale(large).center) < 0.05
    knn_small = similarity_scale(knn(small, 80).sim).center
    knn_large = similarity_scale(knn(large, 80).sim).center
    assert knn_large - knn_small > 0.2


def test_noise_scale_bad_input():
    with pytest.raises(ValueError, match='N >= 2'):
        noise_scale(torch.rand(1, 3))
    with pytest.raises(ValueError, match='num_rows'):
        noise_scale(torch.rand(5, 3), num_rows=1)


def test_per_node_scale():
    scale = SimilarityScale(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    sim = torch.tensor([[2.0, 1.0], [3.0, 1.0]])
    out = scale.standardize(sim, torch.tensor([0, 1]))
    assert out.tolist() == [[2.0, 1.0], [1.0, 0.0]]
    assert scale.standardize(torch.tensor([3.0]), torch.tensor([1])).tolist() == [1.0]
    with pytest.raises(ValueError, match='needs the nodes'):
        scale.standardize(sim)
    flat = SimilarityScale(0.5, 2.0).per_node(3)
    assert flat.center.tolist() == [0.5] * 3 and flat.scale.tolist() == [2.0] * 3
