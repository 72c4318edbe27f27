from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch_geometric.testing import onlyFullTest

from torch_geometric_sdt.baselines import (
    THRESHOLD_GRIDS,
    cluster_knn,
    early_stop_links,
    fc_es,
    infomap_knn,
    tune_threshold,
)
from torch_geometric_sdt.defaults import BASELINE_METHODS as METHODS
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.knn import knn as exact_knn
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import assert_api_refuses


def dense_knn(x: Tensor, k: int) -> KNN:
    r"""Exact cosine kNN for tiny test sets (self at rank 0)."""
    sim = x @ x.t()
    sim.fill_diagonal_(2.0)  # self first even with duplicates
    val, idx = sim.topk(k, dim=1)
    val[:, 0] = 1.0
    return KNN(idx, val)


def blobs(
    num_clusters: int = 8,
    size: int = 15,
    dim: int = 32,
    noise: float = 0.08,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(
        torch.randn(num_clusters, dim, generator=gen), dim=1
    )
    y = torch.arange(num_clusters).repeat_interleave(size)
    x = centers[y] + noise * torch.randn(len(y), dim, generator=gen)
    return torch.nn.functional.normalize(x, dim=1), y


@pytest.mark.parametrize('method', METHODS)
def test_separated_clusters(method: str) -> None:
    x, y = blobs()
    knn = dense_knn(x, 20)
    param = {'threshold': 0.7} if method == 'infomap-knn' else {'threshold': 0.22}
    pred = cluster_knn(knn, method, **param)
    assert pred.dtype == torch.long and pred.shape == y.shape
    out = evaluate(pred, y)
    assert out['pairwise_fscore'] == 1.0 and out['num_clusters'] == 8
    # Ids are consecutive, numbered by first node:
    assert torch.equal(pred, y)


@pytest.mark.parametrize('method', METHODS)
def test_tune_threshold(method: str) -> None:
    x, y = blobs(noise=0.3, seed=2)
    knn = dense_knn(x, 20)
    best, sweep = tune_threshold(knn, y, method)
    assert [row['threshold'] for row in sweep] == list(THRESHOLD_GRIDS[method])
    scores = [row['pairwise_fscore'] for row in sweep]
    assert best in THRESHOLD_GRIDS[method]
    assert sweep[scores.index(max(scores))]['threshold'] == best
    assert max(scores) > min(scores)  # the grid matters on this data
    best, sweep = tune_threshold(knn, y, method, grid=(0.5,), metric='nmi')
    assert best == 0.5 and len(sweep) == 1
    with pytest.raises(ValueError, match='Unknown method'):
        tune_threshold(knn, y, 'kmeans')
    with pytest.raises(ValueError, match='unknown metric'):
        tune_threshold(knn, y, method, grid=(0.5,), metric='accuracy')


def test_dispatch() -> None:
    x, y = blobs(seed=1)
    knn = dense_knn(x, 10)
    assert torch.equal(cluster_knn(knn), infomap_knn(knn))
    assert torch.equal(cluster_knn(knn, 'fc-es', threshold=0.3), fc_es(knn, 0.3))
    with pytest.raises(ValueError, match="'infomap-knn', 'fc-es'"):
        cluster_knn(knn, 'dbscan')
    with pytest.raises(TypeError):
        cluster_knn(knn, 'fc-es', theta=0.5)


def test_thresholds() -> None:
    x, y = blobs(seed=2)
    knn = dense_knn(x, 10)
    for bad in (-0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match=r'\[0, 1\]'):
            infomap_knn(knn, bad)
        with pytest.raises(ValueError, match=r'\[0, 1\]'):
            fc_es(knn, bad)
    with pytest.raises(ValueError, match='sigma'):
        fc_es(knn, sigma=0.0)
    # Nothing reaches similarity 1 off the diagonal: every node a singleton.
    assert torch.equal(infomap_knn(knn, 1.0), torch.arange(len(y)))
    assert torch.equal(fc_es(knn, 1.0), torch.arange(len(y)))
    # Threshold 0 links every listed neighbour (all cosines here are > 0):
    edge_index, _ = early_stop_links(knn.index, knn.sim, 0.0)
    assert edge_index.size(1) == len(y) * 9
    assert torch.equal(infomap_knn(knn, 0.0), y)


def test_early_stop_rule() -> None:
    index = torch.tensor(
        [
            [0, 1, 2, 3],  # 2nd neighbour fails, 3rd would pass: stop at 2
            [1, 0, 3, 2],  # all pass
            [0, 2, 1, 3],  # self not at rank 0: skipped, not a miss
            [3, 0, -1, 1],  # -1 padding stops the scan
        ]
    )
    score = torch.tensor(
        [
            [1.0, 0.9, 0.3, 0.8],
            [1.0, 0.9, 0.8, 0.7],
            [0.9, 1.0, 0.8, 0.2],
            [1.0, 0.6, 0.9, 0.9],
        ]
    )
    edge_index, weight = early_stop_links(index, score, 0.5, chunk_size=3)
    assert edge_index.tolist() == [[0, 1, 1, 1, 2, 2, 3], [1, 0, 3, 2, 0, 1, 0]]
    assert weight.tolist() == pytest.approx([0.9, 0.9, 0.8, 0.7, 0.9, 0.8, 0.6])
    # The threshold is inclusive:
    edge_index, _ = early_stop_links(index, score, 0.9)
    assert edge_index.tolist() == [[0, 1, 2], [1, 0, 0]]


def test_early_stop_in_clustering() -> None:
    # Node 2 lists node 0 with 0.6 then node 1 with 0.95 (unsorted on purpose):
    # the scan stops at 0.6 and node 2 has no link, so it stays a singleton
    # even though node 1 would pass the threshold.
    index = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
    sim = torch.tensor([[1.0, 0.95, 0.6], [1.0, 0.95, 0.95], [1.0, 0.6, 0.95]])
    pred = infomap_knn(KNN(index, sim), 0.9)
    assert pred.tolist() == [0, 0, 1]
    # A node linked to by others but with no link of its own is a singleton:
    sim = torch.tensor([[1.0, 0.95, 0.95], [1.0, 0.3, 0.2], [1.0, 0.95, 0.92]])
    pred = infomap_knn(KNN(index, sim), 0.9)
    assert pred[1] not in (pred[0], pred[2])


def test_invalid_knn() -> None:
    with pytest.raises(ValueError, match='shape'):
        infomap_knn(KNN(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match='integer'):
        infomap_knn(KNN(torch.zeros(3, 2), torch.zeros(3, 2)))
    with pytest.raises(ValueError, match='out of range'):
        infomap_knn(KNN(torch.full((3, 2), 5), torch.zeros(3, 2)))


@onlyFullTest
def test_lfw_faithfulness(lfw: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = lfw
    knn = exact_knn(torch.from_numpy(x), 80)
    out = evaluate(infomap_knn(knn, 0.7), y)
    assert out['pairwise_fscore'] == pytest.approx(0.989, abs=0.005)
    assert out['bcubed_fscore'] == pytest.approx(0.967, abs=0.005)
    assert out['nmi'] == pytest.approx(0.993, abs=0.005)
    out = evaluate(infomap_knn(knn, 0.6), y)
    # At 0.6 the graph is near percolation and the pairwise F swings with a
    # few merges: 0.818 in the reference numbers, 0.855 with infomap 2.16.
    assert 0.79 <= out['pairwise_fscore'] <= 0.88
    assert out['bcubed_fscore'] == pytest.approx(0.720, abs=0.02)
    out = evaluate(fc_es(knn, 0.3), y)
    assert out['pairwise_fscore'] > 0.85


# Bad input: each bad kNN graph or option is refused, naming it.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'kNN index out of range',
        lambda t, g: infomap_knn(
            g['knn']._replace(
                index=g['knn'].index.masked_fill(g['knn'].index == N - 1, N)
            )
        ),
        ValueError,
        f'refers to node {N}, out of range',
    ),
    (
        'kNN index negative',
        lambda t, g: fc_es(g['knn']._replace(index=-g['knn'].index - 2)),
        ValueError,
        'contains negative ids',
    ),
    (
        'kNN index padded with -1',
        lambda t, g: cluster_knn(
            g['knn']._replace(index=g['knn'].index.masked_fill(g['knn'].index == 3, -1))
        ),
        ValueError,
        'contains negative ids',
    ),
    (
        'kNN index float',
        lambda t, g: cluster_knn(g['knn']._replace(index=g['knn'].index.double())),
        ValueError,
        'integer dtype',
    ),
    (
        'kNN shape mismatch',
        lambda t, g: cluster_knn(g['knn']._replace(sim=g['knn'].sim[:, :2])),
        ValueError,
        r'shape \[N, k\]',
    ),
    (
        'kNN NaN similarity',
        lambda t, g: infomap_knn(
            g['knn']._replace(
                sim=g['knn'].sim.masked_fill(g['knn'].index == 7, float('nan'))
            )
        ),
        ValueError,
        'NaN or infinite similarities',
    ),
    (
        'infomap-knn threshold > 1',
        lambda t, g: infomap_knn(g['knn'], 1.01),
        ValueError,
        r"'threshold' must lie in \[0, 1\]",
    ),
    (
        'fc-es threshold < 0',
        lambda t, g: fc_es(g['knn'], -0.5),
        ValueError,
        r"'threshold' must lie in \[0, 1\]",
    ),
    (
        'threshold NaN',
        lambda t, g: cluster_knn(g['knn'], threshold=float('nan')),
        ValueError,
        r'\[0, 1\]',
    ),
    (
        'unknown method',
        lambda t, g: cluster_knn(g['knn'], method='kmeans'),
        ValueError,
        "Unknown method 'kmeans'",
    ),
    ('infomap seed 0', lambda t, g: infomap_knn(g['knn'], seed=0), ValueError, 'seed'),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)
