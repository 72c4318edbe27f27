"""The Ray engine's plumbing without a Ray cluster: engine names, the
missing-extra error, :class:`FeatureShards` and row blocks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from torch_geometric_sdt.utils.distributed import (
    DEFAULT_BLOCK_ROWS,
    ArrayPart,
    FeatureShards,
    blocks,
    check_engine,
    import_ray,
    nbytes,
)


def test_check_engine():
    assert check_engine('local') == 'local'
    assert check_engine('ray') == 'ray'
    with pytest.raises(ValueError, match='engine'):
        check_engine('spark')


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ray', None)  # import ray now fails
    with pytest.raises(ImportError, match=r'torch_geometric_sdt\[ray\]'):
        import_ray()


def test_knn_and_cluster_without_ray_name_the_extra(monkeypatch):
    from torch_geometric_sdt.baselines import nep_scores
    from torch_geometric_sdt.nn.knn import knn

    monkeypatch.setitem(sys.modules, 'ray', None)
    x = torch.randn(50, 8)
    with pytest.raises(ImportError, match=r'torch_geometric_sdt\[ray\]'):
        knn(x, 5, engine='ray')
    graph = knn(x, 5)
    with pytest.raises(ImportError, match=r'torch_geometric_sdt\[ray\]'):
        nep_scores(graph.index, graph.sim, engine='ray')


def test_local_engine_refuses_an_address():
    from torch_geometric_sdt.baselines import cluster_knn
    from torch_geometric_sdt.nn.knn import knn

    x = torch.randn(50, 8)
    with pytest.raises(ValueError, match='address'):
        knn(x, 5, address='auto')
    with pytest.raises(ValueError, match='address'):
        cluster_knn(knn(x, 5), 'fc-es', address='auto')


def test_blocks_cover_the_rows():
    assert blocks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert blocks(0, 4) == []
    with pytest.raises(ValueError, match='block_rows'):
        blocks(10, 0)
    # Tasks must compute the local engine's chunks exactly.
    from torch_geometric_sdt.nn.models import NODE_CHUNK_SIZE, TOPK_BATCH_SIZE

    assert DEFAULT_BLOCK_ROWS % NODE_CHUNK_SIZE == 0
    assert DEFAULT_BLOCK_ROWS % TOPK_BATCH_SIZE == 0


def test_feature_shards_from_array_reads_and_takes_rows():
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    shards = FeatureShards.from_array(torch.from_numpy(x), rows_per_part=4)
    assert len(shards) == 3 and shards.sizes == [4, 4, 2]
    assert shards.shape == (10, 3) and shards.num_rows == 10
    assert shards.offsets.tolist() == [0, 4, 8, 10]
    np.testing.assert_array_equal(np.concatenate([shards.read(p) for p in range(3)]), x)
    rows = np.array([0, 3, 4, 9])
    np.testing.assert_array_equal(shards.take(rows), x[rows])
    assert 'FeatureShards(10 rows, dim=3, 3 parts)' == repr(shards)
    assert nbytes(shards.parts[0]) == 4 * 3 * 4
    assert nbytes({'a': [x, torch.zeros(2)], 'b': 1}) == x.nbytes + 8


def test_feature_shards_refuse_bad_input():
    with pytest.raises(ValueError, match='at least one part'):
        FeatureShards([], [], 3)
    with pytest.raises(ValueError, match='sizes'):
        FeatureShards([ArrayPart(np.zeros((2, 3)))], [2, 1], 3)
    with pytest.raises(ValueError, match='at least one row'):
        FeatureShards([ArrayPart(np.zeros((0, 3)))], [0], 3)
    with pytest.raises(ValueError, match='dim'):
        FeatureShards([ArrayPart(np.zeros((2, 3)))], [2], 0)
    with pytest.raises(ValueError, match='no rows'):
        FeatureShards.from_array(np.zeros((0, 3)))
    with pytest.raises(ValueError, match='2-D'):
        FeatureShards.from_array(np.zeros(3))
    with pytest.raises(ValueError, match='rows_per_part'):
        FeatureShards.from_array(np.zeros((3, 3)), rows_per_part=0)
    # A part that does not hold what it claims is named.
    shards = FeatureShards([ArrayPart(np.zeros((2, 3)))], [3], 3, names=['a.npy'])
    with pytest.raises(ValueError, match=r'a\.npy has shape \(2, 3\)'):
        shards.read(0)
