r"""Property-based tests (hypothesis) of the pipeline's invariants.

* metrics: bounded in :math:`[0, 1]`, invariant to relabelling either side
  and to the order of the items (see also ``test/test_metrics.py``);
* Top-K Jaccard: bounded in :math:`[0, 1]`, symmetric on every pair listed in
  both directions when both nodes share one Top-K, and :math:`1` on the
  self edge;
* Infomap: every node gets a label, ids are consecutive from 0;
* exact kNN and the clustering graph built on it: permuting the input rows
  permutes the output. The Infomap partition itself follows the permutation
  when it is unambiguous (separated groups); on ambiguous data Infomap's
  search depends on the node order, so labels of borderline nodes may differ.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_geometric_sdt.baselines import cluster_knn, early_stop_links
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.utils import infomap, topk_jaccard

SETTINGS = settings(max_examples=20, deadline=None)
METRIC_KEYS = (
    'pairwise_precision',
    'pairwise_recall',
    'pairwise_fscore',
    'bcubed_precision',
    'bcubed_recall',
    'bcubed_fscore',
    'nmi',
)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _points(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


# Metrics #####################################################################


@SETTINGS
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 8), min_size=n, max_size=n),
            st.lists(st.integers(-1, 5), min_size=n, max_size=n),
        )
    ),
    st.integers(0, 2**32 - 1),
)
def test_metrics_bounded_and_invariant(pair, seed):
    pred, true = np.array(pair[0]), np.array(pair[1])
    if (true == -1).all():
        true[0] = 0
    out = evaluate(pred, true)
    for key in METRIC_KEYS:
        assert 0.0 <= out[key] <= 1.0, key

    rng = np.random.default_rng(seed)
    # Any injective relabelling of either side:
    pred2 = rng.permutation(1000)[pred] - 500
    classes = rng.permutation(1000)[: true.max() + 1]
    true2 = np.where(true >= 0, classes[true], -1)
    # Any order of the items:
    order = rng.permutation(pred.size)
    for p, t in ((pred2, true2), (pred[order], true[order])):
        other = evaluate(p, t)
        for key in METRIC_KEYS:
            assert other[key] == out[key] or abs(other[key] - out[key]) < 1e-12, key

    # Unlabelled items (-1) are ignored, i.e. the same as removing them:
    keep = true != -1
    dropped = evaluate(pred[keep], true[keep])
    for key in METRIC_KEYS:
        assert abs(dropped[key] - out[key]) < 1e-12, key


# Top-K Jaccard ###############################################################


knn_graphs = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(4, 40),  # N
    st.integers(2, 6),  # D
).flatmap(
    lambda t: st.tuples(
        st.just(t),
        st.integers(2, min(t[1] - 1, 12)),  # k
        st.sampled_from(['weighted', 'set']),
        st.sampled_from(['sigmoid', 'exp']),
    )
)


@SETTINGS
@given(knn_graphs, st.data())
def test_topk_jaccard_bounded_and_symmetric(args, data):
    (seed, n, d), k, mode, transform = args
    topk = data.draw(st.integers(1, k), label='topk')
    graph = knn(_points(seed, n, d), k)
    score = topk_jaccard(graph, topk=topk, mode=mode, transform=transform)
    assert score.shape == (n, k)
    assert bool(torch.isfinite(score).all())
    assert float(score.min()) >= 0.0 and float(score.max()) <= 1.0
    torch.testing.assert_close(score[:, 0], torch.ones(n), atol=1e-5, rtol=0)

    # J(i, j) == J(j, i) for every pair listed in both directions:
    rank = torch.full((n, n), -1, dtype=torch.long)
    rows = torch.arange(n).repeat_interleave(k)
    rank[rows, graph.index.reshape(-1)] = torch.arange(k).repeat(n)
    i, j = rows, graph.index.reshape(-1)
    both = rank[j, i] >= 0
    forward = score.reshape(-1)[both]
    backward = score[j[both], rank[j, i][both]]
    torch.testing.assert_close(forward, backward, atol=1e-5, rtol=0)


# Infomap #####################################################################


@SETTINGS
@given(
    st.integers(1, 50).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(
                st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                max_size=3 * n,
            ),
            st.integers(0, 20),  # extra isolated nodes
            st.booleans(),
        )
    )
)
def test_infomap_labels_cover_every_node(args):
    n, edges, extra, directed = args
    num_nodes = n + extra
    edge_index = torch.tensor(edges, dtype=torch.long).view(-1, 2).t()
    weight = torch.rand(edge_index.size(1)) + 0.1
    labels = infomap(edge_index, weight, num_nodes, directed=directed, seed=7)
    assert labels.shape == (num_nodes,) and labels.dtype == torch.long
    ids = labels.unique()
    assert torch.equal(ids, torch.arange(ids.numel()))  # consecutive from 0
    assert int(labels[0]) == 0  # numbered by first occurrence
    # Nodes that no edge touches are singletons:
    touched = torch.zeros(num_nodes, dtype=torch.bool)
    touched[edge_index.reshape(-1)] = True
    counts = torch.bincount(labels)
    assert bool((counts[labels[~touched]] == 1).all())


# Permutation equivariance (exact kNN path) ###################################


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.integers(6, 60),
    st.sampled_from(['cosine', 'l2']),
    st.data(),
)
def test_permuting_rows_permutes_the_knn_graph(seed, n, metric, data):
    x = _points(seed, n, 5)
    k = data.draw(st.integers(1, n - 1), label='k')
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(n))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    a = knn(x, k, metric=metric, backend='exact')
    b = knn(x[perm.numpy()], k, metric=metric, backend='exact')
    # Row r of the permuted input is row perm[r] of the original:
    assert torch.equal(b.index, inv[a.index[perm]])
    torch.testing.assert_close(b.sim, a.sim[perm], atol=1e-5, rtol=0)

    # ... and so is the graph the baselines hand to Infomap:
    ea, wa = early_stop_links(a.index, a.sim, 0.2)
    eb, wb = early_stop_links(b.index, b.sim, 0.2)
    mapped = inv[ea]
    key_a = (mapped[0] * n + mapped[1]).tolist()
    key_b = (eb[0] * n + eb[1]).tolist()
    assert sorted(key_a) == sorted(key_b)
    wa_by_key = dict(zip(key_a, wa.tolist()))
    for key, w in zip(key_b, wb.tolist()):
        assert abs(wa_by_key[key] - w) < 1e-5


def _groups(seed: int, sizes: list[int], dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.standard_normal((dim, dim)))[0][: len(sizes)]
    x = np.concatenate(
        [c + 0.05 * rng.standard_normal((s, dim)) for c, s in zip(centers, sizes)]
    )
    return x.astype(np.float32)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2, 8),  # groups
    st.integers(3, 12),  # group size = k: each kNN list is exactly its group
    st.sampled_from(['infomap-knn', 'fc-es']),
)
def test_permuting_rows_permutes_unambiguous_labels(seed, groups, size, method):
    x = _groups(seed, [size] * groups)  # orthogonal centres, tight groups
    perm = np.random.default_rng(seed + 1).permutation(x.shape[0])
    a = cluster_knn(knn(x, size, backend='exact'), method=method).numpy()
    b = cluster_knn(knn(x[perm], size, backend='exact'), method=method).numpy()
    assert _same_partition(a[perm], b)
    assert _same_partition(a, np.arange(x.shape[0]) // size)  # the groups
