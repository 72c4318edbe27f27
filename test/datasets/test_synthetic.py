from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.testing import onlyFullTest

from torch_geometric_sdt.datasets import demo_data, identity_sizes, synthetic_faces


def test_shapes_dtypes_unit_norm():
    x, y = synthetic_faces(3000, 32, seed=1)
    assert x.shape == (3000, 32) and x.dtype == torch.float32
    assert y.shape == (3000,) and y.dtype == torch.long
    torch.testing.assert_close(x.norm(dim=1), torch.ones(3000))
    assert y.min() == 0 and torch.bincount(y).min() >= 1  # Ids are 0..C-1.
    assert torch.isfinite(x).all()


def test_determinism():
    x1, y1 = synthetic_faces(2000, 16, seed=7)
    x2, y2 = synthetic_faces(2000, 16, seed=7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = synthetic_faces(2000, 16, seed=8)
    assert not torch.equal(x1, x3) and not torch.equal(y1, y3)


def test_chunking_does_not_change_prefix_statistics():
    # Above one chunk (65,536 rows) the generator switches streams per chunk;
    # the output must stay valid across the boundary.
    x, y = synthetic_faces(70_000, 8, seed=0)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(70_000))
    assert not torch.equal(x[:10], x[65_536:65_546])


def test_long_tail_and_singletons():
    _, y = synthetic_faces(13_233, 16, seed=0)
    sizes = torch.bincount(y)
    num_ids = sizes.numel()
    # LFW: 5,749 identities, 70.8 % singletons, largest 530.
    assert 4_500 < num_ids < 7_000
    assert 0.62 < (sizes == 1).float().mean() < 0.78
    assert sizes.max() >= 100
    assert (sizes >= 10).sum() >= 50


def test_identity_sizes():
    sizes = identity_sizes(10_000, seed=3)
    assert sizes.sum() == 10_000 and sizes.min() >= 1
    assert np.array_equal(sizes, identity_sizes(10_000, seed=3))
    capped = identity_sizes(10_000, seed=3, max_size=5)
    assert capped.max() <= 5 and capped.sum() == 10_000
    no_single = identity_sizes(1_000, singleton_rate=0.0)
    assert (no_single[:-1] >= 2).all()  # Only the trimmed last may be 1.
    # More items means more identities at the same per-identity law.
    assert len(identity_sizes(100_000)) > 8 * len(sizes)


def test_num_identities():
    _, y = synthetic_faces(5_000, 8, num_identities=400)
    sizes = torch.bincount(y)
    assert sizes.numel() == 400 and sizes.sum() == 5_000 and sizes.min() >= 1
    _, y = synthetic_faces(50, 8, num_identities=50)
    assert torch.bincount(y).eq(1).all()


def test_identity_structure():
    # Items are closer to their own identity than to others, and the shared
    # mean direction makes random pairs positively correlated, as in LFW.
    x, y = synthetic_faces(4_000, 64, seed=0)
    num_ids = int(y.max()) + 1
    centre = torch.zeros(num_ids, 64).index_add_(0, y, x)
    centre = centre / centre.norm(dim=1, keepdim=True)
    multi = torch.bincount(y)[y] >= 2
    own = (x * centre[y]).sum(1)[multi]
    assert 0.85 < own.median() < 0.95
    sim = x[:500] @ x[500:1000].t()
    assert 0.05 < sim.mean() < 0.3
    nearest = (x @ x.t()).fill_diagonal_(-2).argmax(1)
    assert (y[nearest] == y)[multi].float().mean() > 0.9


def test_intrinsic_dim():
    x, _ = synthetic_faces(500, 32, intrinsic_dim=5)
    assert torch.linalg.matrix_rank(x) == 5
    x, _ = synthetic_faces(500, 32, intrinsic_dim=None)
    assert torch.linalg.matrix_rank(x) == 32


def test_data_variants():
    data = synthetic_faces(300, 8, return_data=True)
    assert isinstance(data, Data) and data.x.shape == (300, 8)
    assert data.y.shape == (300,)
    demo = demo_data(1_000, 16, seed=2)
    x, y = synthetic_faces(1_000, 16, seed=2)
    assert torch.equal(demo.x, x) and torch.equal(demo.y, y)


@pytest.mark.parametrize(
    'kwargs, match',
    [
        (dict(num_samples=0), 'num_samples'),
        (dict(num_samples=10, dim=0), 'dim'),
        (dict(num_samples=10, noise=-1.0), 'noise'),
        (dict(num_samples=10, group_size=0.5), 'group_size'),
        (dict(num_samples=10, noise_tail=0.0), 'noise_tail'),
        (dict(num_samples=10, num_identities=11), 'exceeds'),
        (dict(num_samples=10, singleton_rate=1.0), 'singleton_rate'),
        (dict(num_samples=10, intrinsic_dim=0), 'intrinsic_dim'),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_faces(**kwargs)


@onlyFullTest
def test_one_million_is_fast():
    import time

    t = time.perf_counter()
    x, y = synthetic_faces(1_000_000, 256, seed=0)
    assert time.perf_counter() - t < 60
    assert x.shape == (1_000_000, 256)
    assert torch.bincount(y).numel() > 300_000
