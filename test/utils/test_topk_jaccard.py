from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from torch_geometric_sdt.testing import GOOD_K as K
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import assert_api_refuses
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard, topk_target

# Brute-force references ######################################################


def _prob(s: float, transform: str, distance: str) -> float:
    d = 2 - 2 * s if distance == 'sqeuclidean' else 1 - s
    if transform == 'sigmoid':
        return 1 / (1 + math.exp(7.5 * d - 5))
    return math.exp(-d / 0.5)


def reference(
    lists: list[list[int]],
    sims: list[list[float]] | None,
    topk: list[int],
    transform: str = 'sigmoid',
    distance: str = 'sqeuclidean',
    normalize: str = 'topk',
    mode: str = 'weighted',
) -> list[list[float]]:
    r"""Top-K Jaccard with Python sets and dicts, one edge at a time."""
    tops = [set(lst[:kk]) for lst, kk in zip(lists, topk)]
    probs: list[dict[int, float]] = []
    if mode == 'weighted':
        assert sims is not None
        for lst, sm, kk in zip(lists, sims, topk):
            raw = [_prob(s, transform, distance) for s in sm]
            total = sum(raw[:kk]) if normalize == 'topk' else sum(raw)
            probs.append({m: r / total for m, r in zip(lst, raw)})
    out = []
    for i, lst in enumerate(lists):
        row = []
        for j in lst:
            inter = tops[i] & tops[j]
            if mode == 'set':
                row.append(len(inter) / len(tops[i] | tops[j]))
            else:
                row.append(0.5 * sum(probs[i][m] + probs[j][m] for m in inter))
        out.append(row)
    return out


def random_knn(
    num_nodes: int,
    k: int,
    seed: int,
    ties: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Random kNN-like lists: self first, distinct ids, descending sims."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.empty(num_nodes, k, dtype=torch.long)
    for i in range(num_nodes):
        others = torch.randperm(num_nodes - 1, generator=gen)[: k - 1]
        others = others + (others >= i).long()
        index[i, 0] = i
        index[i, 1:] = others
    sim = torch.rand(num_nodes, k - 1, generator=gen) * 1.2 - 0.2
    if ties:
        sim = (sim * 4).round() / 4
    sim = sim.sort(dim=1, descending=True)[0]
    sim = torch.cat([torch.ones(num_nodes, 1), sim], dim=1)
    return index, sim


def dense_knn(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""Exact kNN by a dense similarity matrix (small test inputs only), self
    at rank 0 even when duplicates tie with it."""
    s = x @ x.t()
    s.fill_diagonal_(float('inf'))
    sim, index = s.topk(k, dim=1)
    sim[:, 0] = (x * x).sum(dim=1)
    return index, sim


def ref_target(index: Tensor, y: Tensor, beta: float = 0.5) -> list[list[float]]:
    out = []
    labels = y.tolist()
    sizes = {c: labels.count(c) for c in set(labels)}
    k = index.size(1)
    for i, row in enumerate(index.tolist()):
        cap = min(sizes[labels[i]], k)
        qs = []
        same = 0
        for t, j in enumerate(row, start=1):
            same += labels[j] == labels[i]
            p, r = same / t, same / cap
            b2 = beta * beta
            qs.append((1 + b2) * p * r / (b2 * p + r) if same else 0.0)
        out.append(qs)
    return out


def assert_close(out: Tensor, ref: list[list[float]]) -> None:
    expected = torch.tensor(ref, dtype=torch.float64)
    assert torch.allclose(out.double(), expected, rtol=1e-5, atol=1e-6)


# topk_jaccard ################################################################


@pytest.mark.parametrize('transform', ['sigmoid', 'exp'])
@pytest.mark.parametrize('distance', ['sqeuclidean', 'cosine'])
@pytest.mark.parametrize('normalize', ['topk', 'knn'])
def test_weighted_matches_reference(
    transform: str,
    distance: str,
    normalize: str,
) -> None:
    index, sim = random_knn(40, 8, seed=0, ties=True)
    topk = torch.randint(1, 9, (40,), generator=torch.Generator().manual_seed(1))
    out = topk_jaccard(
        index,
        sim,
        topk,
        transform=transform,
        distance=distance,
        normalize=normalize,
    )
    assert out.shape == (40, 8) and out.dtype == torch.float32
    ref = reference(
        index.tolist(),
        sim.tolist(),
        topk.tolist(),
        transform,
        distance,
        normalize,
    )
    assert_close(out, ref)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize('topk', [1, 5, 12])
@pytest.mark.parametrize('mode', ['weighted', 'set'])
def test_scalar_topk_matches_reference(topk: int, mode: str) -> None:
    index, sim = random_knn(60, 12, seed=topk)
    out = topk_jaccard(index, sim, topk, mode=mode)
    ref = reference(index.tolist(), sim.tolist(), [topk] * 60, mode=mode)
    assert_close(out, ref)


def test_topk_one_and_full() -> None:
    index, sim = random_knn(30, 6, seed=3)
    # Top-K = 1: the sets are {i} and {j}, which meet only on the self edge.
    out = topk_jaccard(index, sim, 1)
    expected = torch.zeros(30, 6)
    expected[:, 0] = 1.0
    assert torch.allclose(out, expected)
    # None means the full list, the same as Top-K = k.
    assert torch.equal(topk_jaccard(index, sim), topk_jaccard(index, sim, 6))
    # A constant tensor equals the integer.
    full = torch.full((30,), 4, dtype=torch.long)
    assert torch.equal(topk_jaccard(index, sim, full), topk_jaccard(index, sim, 4))


def test_set_mode_without_sim() -> None:
    index, sim = random_knn(30, 6, seed=4)
    topk = torch.randint(1, 7, (30,), generator=torch.Generator().manual_seed(0))
    out = topk_jaccard(index, None, topk, mode='set')
    assert_close(out, reference(index.tolist(), None, topk.tolist(), mode='set'))
    assert torch.equal(out, topk_jaccard(index, sim, topk, mode='set'))


def test_knn_tuple_and_float64() -> None:
    from torch_geometric_sdt.nn.knn import KNN

    index, sim = random_knn(20, 5, seed=5)
    out = topk_jaccard(KNN(index, sim), topk=3)
    assert torch.equal(out, topk_jaccard(index, sim, 3))
    out64 = topk_jaccard(index, sim.double(), 3)
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), out, atol=1e-6)


def test_fc_es_call() -> None:
    # FC-ES / FC-ESER: exp transform, normalised over the full list, K = k.
    index, sim = random_knn(25, 7, seed=6)
    out = topk_jaccard(index, sim, transform='exp', normalize='knn')
    ref = reference(index.tolist(), sim.tolist(), [7] * 25, 'exp', normalize='knn')
    assert_close(out, ref)
    # Each node's self score is the total normalised mass of its list.
    assert torch.allclose(out[:, 0], torch.ones(25))


def test_duplicate_points() -> None:
    gen = torch.Generator().manual_seed(7)
    base = torch.nn.functional.normalize(torch.randn(15, 4, generator=gen), dim=1)
    x = torch.cat([base, base[:10], base[:5]], dim=0)  # many exact duplicates
    index, sim = dense_knn(x, 6)
    assert bool((sim[:, 1] >= 1 - 1e-6).any())  # ties with self exist
    topk = torch.randint(1, 7, (x.size(0),), generator=gen)
    for mode in ['weighted', 'set']:
        out = topk_jaccard(index, sim, topk, mode=mode)
        ref = reference(index.tolist(), sim.tolist(), topk.tolist(), mode=mode)
        assert_close(out, ref)


def test_symmetric_when_both_directions_exist() -> None:
    index, sim = dense_knn(
        torch.nn.functional.normalize(
            torch.randn(50, 3, generator=torch.Generator().manual_seed(8)), dim=1
        ),
        10,
    )
    out = topk_jaccard(index, sim, 5)
    score = {}
    for i, row in enumerate(index.tolist()):
        for r, j in enumerate(row):
            score[(i, j)] = float(out[i, r])
    pairs = [(i, j) for (i, j) in score if (j, i) in score]
    assert len(pairs) > 50
    for i, j in pairs:
        assert score[(i, j)] == pytest.approx(score[(j, i)], abs=1e-6)


def test_edge_form_matches_dense_form() -> None:
    from torch_geometric_sdt.nn.knn import KNN

    index, sim = random_knn(40, 8, seed=9, ties=True)
    topk = torch.randint(1, 9, (40,), generator=torch.Generator().manual_seed(2))
    dense = topk_jaccard(index, sim, topk)
    edge_index, rank, edge_sim = KNN(index, sim).to_edge_index()
    perm = torch.randperm(rank.numel(), generator=torch.Generator().manual_seed(3))
    out = topk_jaccard(edge_index[:, perm], edge_sim[perm], topk, rank=rank[perm])
    assert out.shape == (320,)
    assert torch.equal(out, dense.view(-1)[perm])
    # The other flow, and rank derived from sim (no ties within rows here).
    index2, sim2 = random_knn(40, 8, seed=10)
    dense2 = topk_jaccard(index2, sim2, topk)
    edge_index, _, edge_sim = KNN(index2, sim2).to_edge_index('target_to_source')
    out = topk_jaccard(
        edge_index[:, perm], edge_sim[perm], topk, flow='target_to_source'
    )
    assert torch.equal(out, dense2.view(-1)[perm])


def test_general_graph_with_varying_degrees() -> None:
    gen = torch.Generator().manual_seed(11)
    num_nodes = 35
    lists, sims = [], []
    for i in range(num_nodes):
        deg = int(torch.randint(0, 9, (1,), generator=gen))
        others = torch.randperm(num_nodes, generator=gen)[:deg].tolist()
        if i in others:  # a node that lists itself does so first
            others.remove(i)
            others.insert(0, i)
        lists.append(others)
        sims.append(sorted(torch.rand(deg, generator=gen).tolist(), reverse=True))
    src = torch.tensor([j for lst in lists for j in lst])
    dst = torch.tensor([i for i, lst in enumerate(lists) for _ in lst])
    rank = torch.tensor([r for lst in lists for r in range(len(lst))])
    edge_sim = torch.tensor([s for sm in sims for s in sm])
    edge_index = torch.stack([src, dst])
    deg = torch.tensor([len(lst) for lst in lists])
    topk = torch.where(deg > 0, (deg + 1) // 2, torch.zeros_like(deg))
    for mode in ['weighted', 'set']:
        out = topk_jaccard(edge_index, edge_sim, topk, rank=rank, mode=mode)
        ref = reference(lists, sims, topk.tolist(), mode=mode)
        assert_close(out, [[v for row in ref for v in row]])
    # An integer Top-K is capped at each node's degree.
    out = topk_jaccard(edge_index, edge_sim, 4, rank=rank, num_nodes=num_nodes)
    ref = reference(lists, sims, [min(4, len(lst)) for lst in lists])
    assert_close(out, [[v for row in ref for v in row]])


def test_deterministic() -> None:
    index, sim = random_knn(200, 10, seed=12)
    a = topk_jaccard(index, sim, 6)
    b = topk_jaccard(index, sim, 6, progress=True)
    assert torch.equal(a, b)


def test_empty_graph() -> None:
    out = topk_jaccard(torch.empty(0, 3, dtype=torch.long), torch.empty(0, 3), 2)
    assert out.shape == (0, 3)
    edge_index = torch.empty(2, 0, dtype=torch.long)
    out = topk_jaccard(edge_index, torch.empty(0), 2, num_nodes=4)
    assert out.shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA not available')
def test_cuda_round_trip() -> None:
    index, sim = random_knn(30, 6, seed=13)
    out = topk_jaccard(index.cuda(), sim.cuda(), 3)
    assert out.is_cuda
    assert torch.equal(out.cpu(), topk_jaccard(index, sim, 3))


@pytest.mark.parametrize(
    'topk, match',
    [
        (0, 'at least 1'),
        (-2, 'at least 1'),
        (7, 'at most k=6'),
        (2.5, 'integer'),
        (True, 'integer'),
        ('3', 'integer'),
        (torch.tensor([1.0] * 10), 'integer tensor'),
        (torch.ones(9, dtype=torch.long), r'shape \[10\]'),
        (torch.ones(10, 2, dtype=torch.long), r'shape \[10\]'),
        (torch.tensor([1] * 9 + [0]), 'node 9 has topk=0'),
        (torch.tensor([7] + [1] * 9), 'node 0 has topk=7'),
    ],
)
def test_invalid_topk(topk: object, match: str) -> None:
    index, sim = random_knn(10, 6, seed=14)
    with pytest.raises(ValueError, match=match):
        topk_jaccard(index, sim, topk)  # type: ignore[arg-type]


def test_inconsistent_graphs() -> None:
    index, sim = random_knn(10, 6, seed=15)
    bad = index.clone()
    bad[3, [0, 1]] = bad[3, [1, 0]]
    with pytest.raises(ValueError, match='node 3 .* does not start with'):
        topk_jaccard(bad, sim, 3)
    unsorted = sim.clone()
    unsorted[4, [2, 3]] = torch.tensor([0.1, 0.5])
    with pytest.raises(ValueError, match='node 4 .* not sorted'):
        topk_jaccard(index, unsorted, 3)
    dup = index.clone()
    dup[5, 2] = dup[5, 1]
    with pytest.raises(ValueError, match='node 5 .* twice'):
        topk_jaccard(dup, sim, 3)
    out_of_range = index.clone()
    out_of_range[6, 4] = 10
    with pytest.raises(ValueError, match='node 6 .* outside'):
        topk_jaccard(out_of_range, sim, 3)
    nan = sim.clone()
    nan[7, 2] = float('nan')
    with pytest.raises(ValueError, match='node 7 .* NaN'):
        topk_jaccard(index, nan, 3)


def test_inconsistent_edge_graphs() -> None:
    edge_index = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    sim = torch.tensor([1.0, 0.5, 1.0, 0.5])
    rank = torch.tensor([0, 1, 0, 1])
    assert topk_jaccard(edge_index, sim, 1, rank=rank).shape == (4,)
    with pytest.raises(ValueError, match='rank must lie in'):
        topk_jaccard(edge_index, sim, 1, rank=torch.tensor([0, 2, 0, 1]))
    with pytest.raises(ValueError, match='rank repeats'):
        topk_jaccard(edge_index, sim, 1, rank=torch.tensor([0, 0, 0, 1]))
    with pytest.raises(ValueError, match='itself at a rank other than 0'):
        topk_jaccard(edge_index, sim, 1, rank=torch.tensor([1, 0, 0, 1]))
    with pytest.raises(ValueError, match='node 0 .* not sorted'):
        topk_jaccard(
            torch.tensor([[0, 1, 2], [0, 0, 0]]),
            torch.tensor([1.0, 0.3, 0.5]),
            1,
            rank=torch.tensor([0, 1, 2]),
        )
    with pytest.raises(ValueError, match=r'num_nodes=1'):
        topk_jaccard(edge_index, sim, 1, rank=rank, num_nodes=1)
    with pytest.raises(ValueError, match=r'shape \[2, E\]'):
        topk_jaccard(edge_index[:1], sim, 1, rank=rank)


def test_invalid_options() -> None:
    index, sim = random_knn(10, 4, seed=16)
    for kwargs, match in [
        (dict(transform='relu'), 'transform must be one of'),
        (dict(distance='l1'), 'distance must be one of'),
        (dict(normalize='row'), 'normalize must be one of'),
        (dict(mode='soft'), 'mode must be one of'),
        (dict(flow='both'), 'flow must be one of'),
        (dict(transform='exp', sigma=0.0), 'sigma must be positive'),
    ]:
        with pytest.raises(ValueError, match=match):
            topk_jaccard(index, sim, 2, **kwargs)
    with pytest.raises(ValueError, match='needs similarities'):
        topk_jaccard(index, None, 2)
    with pytest.raises(ValueError, match='same shape'):
        topk_jaccard(index, sim[:, :3], 2)
    with pytest.raises(ValueError, match='floating-point'):
        topk_jaccard(index, index, 2)


# topk_target #################################################################


@pytest.mark.parametrize('beta', [0.5, 1.0, 2.0])
def test_topk_target_matches_reference(beta: float) -> None:
    gen = torch.Generator().manual_seed(17)
    x = torch.nn.functional.normalize(torch.randn(80, 4, generator=gen), dim=1)
    y = torch.randint(0, 6, (80,), generator=gen) * 10 - 7  # arbitrary ids
    y[-1] = 1000  # a singleton class
    index, _ = dense_knn(x, 12)
    out = topk_target(index, y, beta, chunk_size=7)
    assert out.dtype == torch.long and out.shape == (80,)
    assert int(out.min()) >= 1 and int(out.max()) <= 12
    q = np.array(ref_target(index, y, beta))
    best = q.max(axis=1)
    chosen = q[np.arange(80), out.numpy() - 1]
    assert np.allclose(chosen, best, atol=1e-12)
    # The smallest best prefix wins ties.
    first = np.array([int(np.flatnonzero(np.isclose(row, row.max()))[0]) for row in q])
    assert np.array_equal(out.numpy() - 1, first)
    assert int(out[-1]) == 1  # a singleton stops at itself


def test_topk_target_pure_and_errors() -> None:
    # Two pure clusters of 5 with k = 8: each node's best prefix is its class.
    rows = [
        sorted(range(10), key=lambda j, i=i: (j != i, j // 5 != i // 5, j))[:8]
        for i in range(10)
    ]
    index = torch.tensor(rows)
    y = torch.arange(10) // 5
    assert torch.equal(topk_target(index, y), torch.full((10,), 5))
    with pytest.raises(ValueError, match='shape'):
        topk_target(index, y[:9])
    with pytest.raises(ValueError, match='integer tensor of labels'):
        topk_target(index, y.float())
    with pytest.raises(ValueError, match='beta must be positive'):
        topk_target(index, y, 0.0)
    with pytest.raises(ValueError, match='outside'):
        topk_target(index + 1, y)


def test_docstring_example() -> None:
    index = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    sim = torch.tensor([[1.0, 0.9, 0.2], [1.0, 0.9, 0.3], [1.0, 0.3, 0.2]])
    expected = torch.tensor(
        [[1.0, 1.0, 0.2492], [1.0, 1.0, 0.2549], [1.0, 0.2549, 0.2492]]
    )
    assert torch.allclose(topk_jaccard(index, sim, topk=2), expected, atol=1e-4)


# Bad input ###################################################################


def _bad_topk(good: dict, topk: Any) -> Any:
    return topk_jaccard(good['knn'], topk=topk)


# Each bad graph, Top-K or option is refused, naming it.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'edge form out of range',
        lambda t, g: topk_jaccard(
            torch.tensor([[0, 5], [1, 0]]), torch.ones(2), num_nodes=3
        ),
        ValueError,
        'num_nodes=3',
    ),
    (
        'edge form negative',
        lambda t, g: topk_jaccard(torch.tensor([[0, -1], [1, 0]]), torch.ones(2)),
        ValueError,
        'negative',
    ),
    (
        'edge form float',
        lambda t, g: topk_jaccard(torch.zeros(2, 2), torch.ones(2)),
        ValueError,
        'integer tensor',
    ),
    (
        'Top-K wrong length',
        lambda t, g: _bad_topk(g, torch.ones(N - 1, dtype=int)),
        ValueError,
        rf'shape \[{N}\]',
    ),
    (
        'Top-K zero',
        lambda t, g: _bad_topk(g, torch.zeros(N, dtype=torch.long)),
        ValueError,
        r'\[1, degree\]',
    ),
    (
        'Top-K above k',
        lambda t, g: _bad_topk(g, torch.full((N,), K + 1)),
        ValueError,
        rf'topk={K + 1} and {K} neighbours',
    ),
    (
        'Top-K float',
        lambda t, g: _bad_topk(g, torch.ones(N)),
        ValueError,
        'integer tensor',
    ),
    (
        'unknown Top-K Jaccard transform',
        lambda t, g: topk_jaccard(g['knn'], transform='tanh'),
        ValueError,
        'transform must be one of',
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


# Options of the partial scorings (rows, positions).
PART_OPTIONS = [dict(), dict(mode='set'), dict(transform='exp', normalize='knn')]


def _part_graph():
    """A kNN graph of 300 points (k = 12) and Top-K sizes for it."""
    from torch_geometric_sdt.nn.knn import knn as build_knn

    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    topk = torch.randint(1, 13, (300,), generator=torch.Generator().manual_seed(1))
    return build_knn(x, 12), topk


@pytest.mark.parametrize('options', PART_OPTIONS)
def test_rows_equal_the_rows_of_the_full_result(options):
    graph, topk = _part_graph()
    full = topk_jaccard(graph, topk=topk, **options)
    parts = [
        topk_jaccard(graph, topk=topk, rows=(lo, min(lo + 70, 300)), **options)
        for lo in range(0, 300, 70)
    ]
    assert torch.equal(torch.cat(parts), full)
    assert topk_jaccard(graph, topk=topk, rows=(5, 5), **options).shape == (0, 12)


def test_rows_are_checked():
    index = torch.tensor([[0, 1], [1, 0]])
    sim = torch.tensor([[1.0, 0.5], [1.0, 0.5]])
    for rows in [(1, 0), (0, 3), (-1, 1), (0,), 'ab', (0.5, 1)]:
        with pytest.raises(ValueError, match='rows must be a pair'):
            topk_jaccard(index, sim, topk=1, rows=rows)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match='kNN form'):
        topk_jaccard(edge_index, torch.tensor([0.5, 0.5]), rows=(0, 1), num_nodes=2)


@pytest.mark.parametrize('options', PART_OPTIONS)
def test_positions_equal_the_entries_of_the_full_result(options):
    graph, topk = _part_graph()
    full = topk_jaccard(graph, topk=topk, **options).view(-1)
    gen = torch.Generator().manual_seed(2)
    # In any order, with repeats, sorted, and none.
    for pos in [
        torch.randint(0, 300 * 12, (500,), generator=gen),
        torch.randperm(300 * 12, generator=gen)[:40].sort().values,
        torch.arange(300 * 12),
        torch.empty(0, dtype=torch.long),
    ]:
        out = topk_jaccard(graph, topk=topk, positions=pos, **options)
        assert out.shape == pos.shape
        assert torch.equal(out, full[pos])


def test_positions_are_checked():
    index = torch.tensor([[0, 1], [1, 0]])
    sim = torch.tensor([[1.0, 0.5], [1.0, 0.5]])
    for pos, match in [
        (torch.tensor([[0]]), 'must be a 1-D tensor'),
        ([0, 1], 'must be a 1-D tensor'),
        (torch.tensor([0.0]), 'integer tensor'),
        (torch.tensor([4]), r'must lie in \[0, N \* k\) = \[0, 4\)'),
        (torch.tensor([-1]), 'must lie in'),
    ]:
        with pytest.raises(ValueError, match=match):
            topk_jaccard(index, sim, topk=1, positions=pos)
    with pytest.raises(ValueError, match='rows or positions'):
        topk_jaccard(index, sim, topk=1, rows=(0, 1), positions=torch.tensor([0]))
    edge_index = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match='kNN form'):
        topk_jaccard(
            edge_index,
            torch.tensor([0.5, 0.5]),
            positions=torch.tensor([0]),
            num_nodes=2,
        )
