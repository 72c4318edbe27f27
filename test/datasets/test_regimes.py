from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.datasets import COSINES, REGIMES, regime_draw
from torch_geometric_sdt.datasets.regimes import SQUEEZED_MEAN, random_pair_cosine


def _sizes(y: torch.Tensor) -> torch.Tensor:
    return torch.bincount(y)


@pytest.mark.parametrize('name', sorted(REGIMES))
def test_shapes_unit_norm_labels(name):
    x, y = regime_draw(name, 1500, 48, seed=1)
    dim = 32 if name == 'gaussian' else 48
    assert x.shape == (1500, dim) and x.dtype == torch.float32
    assert y.shape == (1500,) and y.dtype == torch.long
    torch.testing.assert_close(x.norm(dim=1), torch.ones(1500))
    assert torch.isfinite(x).all()
    assert y.min() == 0 and _sizes(y).min() >= 1  # Ids are 0..C-1.


@pytest.mark.parametrize('cosine', sorted(COSINES))
def test_determinism(cosine):
    x1, y1 = regime_draw('photo_library', 1200, 32, seed=5, cosine=cosine)
    x2, y2 = regime_draw('photo_library', 1200, 32, seed=5, cosine=cosine)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = regime_draw('photo_library', 1200, 32, seed=6, cosine=cosine)
    assert not torch.equal(x1, x3)


def test_lfw_is_the_synthetic_default():
    from torch_geometric_sdt.datasets import synthetic_faces

    x, y = regime_draw('lfw', 2000, 32, seed=3)
    x0, y0 = synthetic_faces(2000, 32, seed=3)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.parametrize('seed', [0, 1])
def test_msceleb_and_large_sizes(seed):
    for name, lo, hi in (('msceleb', 50, 120), ('large', 100, 300)):
        _, y = regime_draw(name, 4000, 32, seed=seed)
        sizes = _sizes(y)
        assert sizes.min() >= lo and sizes.max() <= hi, name
        assert sizes.sum() == 4000


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_photo_library_sizes(seed):
    _, y = regime_draw('photo_library', 3000, 32, seed=seed)
    sizes = _sizes(y)
    big = sizes[sizes > 1]
    strangers = int((sizes == 1).sum())
    assert 5 <= big.numel() <= 40
    assert big.min() >= 20 and big.max() <= 500
    assert 0.05 * 3000 - 1 <= strangers <= 0.20 * 3000 + 1


def test_crowd_is_mostly_singletons():
    _, y = regime_draw('crowd', 4000, 32, seed=0)
    sizes = _sizes(y)
    assert 0.93 <= (sizes == 1).float().mean() <= 0.97  # Of identities.
    assert (sizes[y] == 1).float().mean() >= 0.7  # Of items.
    assert sizes.max() <= 20


def test_gaussian_clusters():
    x, y = regime_draw('gaussian', 5000, seed=0)
    sizes = _sizes(y)
    assert sizes.numel() == 50 and bool((sizes == 100).all())
    # Points stay close in angle to their own cluster's mean direction.
    centres = torch.nn.functional.normalize(
        torch.zeros(50, 32).index_add_(0, y, x), dim=1
    )
    assert (x * centres[y]).sum(1).mean() > 0.95


@pytest.mark.parametrize('name', ['lfw', 'msceleb', 'large', 'gaussian'])
def test_cosine_scales(name):
    x, _ = regime_draw(name, 2000, 32, seed=2, cosine='squeezed')
    assert abs(random_pair_cosine(x) - SQUEEZED_MEAN) < 0.01
    x, _ = regime_draw(name, 2000, 32, seed=2, cosine='shifted')
    assert abs(random_pair_cosine(x)) < 0.05
    x, _ = regime_draw(name, 2000, 32, seed=2)
    assert random_pair_cosine(x) < 0.5


def test_squeezed_percentile_lies_above_the_mean():
    x, _ = regime_draw('msceleb', 2000, 64, seed=0, cosine='squeezed')
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(0, 2000, (2, 20000), generator=g)
    cos = (x[i[i != j]] * x[j[i != j]]).sum(1)
    assert 0.85 < float(cos.quantile(0.99)) < 0.99


def test_rejects_unknown_cells():
    with pytest.raises(ValueError, match='unknown regime'):
        regime_draw('nope', 100)
    with pytest.raises(ValueError, match='unknown cosine'):
        regime_draw('lfw', 100, cosine='nope')


def test_parse_cell():
    from torch_geometric_sdt.datasets import parse_cell

    assert parse_cell('msceleb') == ('msceleb', 'arcface')
    assert parse_cell('lfw:squeezed') == ('lfw', 'squeezed')
    with pytest.raises(ValueError, match="unknown regime 'moon'"):
        parse_cell('moon')
    with pytest.raises(ValueError, match="unknown regime 'lfw:tilted'"):
        parse_cell('lfw:tilted')


def test_dense_crowds_the_nearest_impostor():
    from torch_geometric_sdt.datasets.regimes import DENSE_GROUP_SIZE
    from torch_geometric_sdt.datasets.synthetic import synthetic_faces
    from torch_geometric_sdt.nn.knn import knn

    def nearest_impostor_median(x, y):
        graph = knn(x, 80, backend='exact')
        other = y[graph.index] != y.unsqueeze(1)
        sim = torch.where(other, graph.sim, torch.full_like(graph.sim, -2.0))
        best = sim.max(dim=1).values
        return float(best[best > -2.0].median())

    x, y = regime_draw('dense', 3000, 256, seed=2)
    x0, y0 = synthetic_faces(3000, 256, seed=2, group_size=DENSE_GROUP_SIZE)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    # Same identity sizes as 'lfw', a much closer nearest impostor (the
    # docstring's calibration, at 3,000 items, 256-d, seed 7: 0.653 against
    # 0.588):
    x_lfw, y_lfw = regime_draw('lfw', 3000, 256, seed=2)
    assert torch.equal(
        torch.bincount(y).sort().values, torch.bincount(y_lfw).sort().values
    )
    dense, lfw = nearest_impostor_median(x, y), nearest_impostor_median(x_lfw, y_lfw)
    assert 0.63 <= dense <= 0.68
    assert dense > lfw + 0.02
