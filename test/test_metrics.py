from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.testing import withPackage

from torch_geometric_sdt.metrics import (
    bcubed_fscore,
    evaluate,
    nmi,
    pairwise_fscore,
    roc_auc,
    threshold_sweep,
)
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import assert_api_refuses


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def brute_pairwise(pred: list[int], true: list[int]) -> tuple[float, ...]:
    n = len(pred)
    same_both = same_pred = same_true = 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            same_pred += pred[i] == pred[j]
            same_true += true[i] == true[j]
            same_both += pred[i] == pred[j] and true[i] == true[j]
    p = same_both / same_pred if same_pred else 1.0
    r = same_both / same_true if same_true else 1.0
    return p, r, _f(p, r)


def brute_bcubed(pred: list[int], true: list[int]) -> tuple[float, ...]:
    n = len(pred)
    p = r = 0.0
    for i in range(n):
        cluster = [j for j in range(n) if pred[j] == pred[i]]
        klass = [j for j in range(n) if true[j] == true[i]]
        both = [j for j in cluster if true[j] == true[i]]
        p += len(both) / len(cluster)
        r += len(both) / len(klass)
    return p / n, r / n, _f(p / n, r / n)


def brute_nmi(pred: list[int], true: list[int]) -> float:
    n = len(pred)
    classes, clusters = sorted(set(true)), sorted(set(pred))
    if len(classes) == len(clusters) == 1:
        return 1.0
    mi = 0.0
    for g in classes:
        a = sum(t == g for t in true)
        for c in clusters:
            b = sum(q == c for q in pred)
            nij = sum(t == g and q == c for t, q in zip(true, pred))
            if nij:
                mi += nij / n * math.log(n * nij / (a * b))

    def entropy(labels: list[int]) -> float:
        sizes = [labels.count(v) for v in set(labels)]
        return -sum(s / n * math.log(s / n) for s in sizes)

    if mi <= 0:
        return 0.0
    return mi / (0.5 * (entropy(true) + entropy(pred)))


labelings = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-3, 6), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(labelings)
def test_matches_brute_force(pair: tuple[list[int], list[int]]) -> None:
    pred, true = pair
    out = evaluate(pred, true)
    assert out['pairwise_precision'] == pytest.approx(brute_pairwise(pred, true)[0])
    assert pairwise_fscore(pred, true) == pytest.approx(brute_pairwise(pred, true))
    assert bcubed_fscore(pred, true) == pytest.approx(brute_bcubed(pred, true))
    assert nmi(pred, true) == pytest.approx(brute_nmi(pred, true), abs=1e-12)
    assert out['nmi'] == pytest.approx(nmi(pred, true))
    assert out['num_clusters'] == len(set(pred))
    assert out['num_singletons'] == sum(pred.count(c) == 1 for c in set(pred))
    assert out['num_true_clusters'] == len(set(true))
    assert out['num_items'] == len(pred)


@settings(max_examples=100, deadline=None)
@given(labelings, st.integers(0, 2**31))
def test_properties(pair: tuple[list[int], list[int]], seed: int) -> None:
    pred, true = np.array(pair[0]), np.array(pair[1])
    out = evaluate(pred, true, drop_unlabeled=False)
    for key in ('pairwise', 'bcubed'):
        for part in ('precision', 'recall', 'fscore'):
            assert 0.0 <= out[f'{key}_{part}'] <= 1.0
    assert 0.0 <= out['nmi'] <= 1.0

    # Relabelling invariance (any injective map of the ids):
    rng = np.random.default_rng(seed)
    uniq = np.unique(pred)
    steps = rng.integers(1, 10**9, uniq.size)
    new_ids = rng.permutation(np.cumsum(steps) - 5 * 10**11)
    pred2 = new_ids[np.searchsorted(uniq, pred)]
    true2 = true * 7919 + 3
    out2 = evaluate(pred2, true2, drop_unlabeled=False)
    for key, value in out.items():
        assert out2[key] == pytest.approx(value)

    # Swapping the roles swaps precision and recall; NMI is symmetric:
    swapped = evaluate(true, pred, drop_unlabeled=False)
    assert swapped['pairwise_precision'] == pytest.approx(out['pairwise_recall'])
    assert swapped['bcubed_recall'] == pytest.approx(out['bcubed_precision'])
    assert swapped['nmi'] == pytest.approx(out['nmi'])

    # A labeling against itself is perfect:
    self_out = evaluate(true, true, drop_unlabeled=False)
    for key in ('pairwise_fscore', 'bcubed_fscore', 'nmi'):
        assert self_out[key] == pytest.approx(1.0)


def test_all_singletons() -> None:
    true = np.array([0, 0, 1, 1, 2])
    pred = np.arange(5)
    p, r, f = pairwise_fscore(pred, true)
    assert (p, r, f) == (1.0, 0.0, 0.0)
    bp, br, _ = bcubed_fscore(pred, true)
    assert bp == 1.0 and br == pytest.approx((0.5 * 4 + 1) / 5)
    # Both all-singleton: a perfect match, no NaN.
    out = evaluate(np.arange(6), np.arange(6) * 3)
    assert out['pairwise_fscore'] == 1.0
    assert out['bcubed_fscore'] == 1.0
    assert out['nmi'] == pytest.approx(1.0)
    assert out['num_singletons'] == out['num_true_singletons'] == 6


def test_one_cluster() -> None:
    true = np.array([0, 0, 1, 1])
    pred = np.zeros(4, dtype=np.int64)
    p, r, f = pairwise_fscore(pred, true)
    assert p == pytest.approx(4 / 12) and r == 1.0
    assert bcubed_fscore(pred, true)[1] == 1.0
    assert nmi(pred, true) == 0.0
    out = evaluate(np.zeros(5), np.ones(5))  # both one cluster
    assert out['nmi'] == 1.0 and out['pairwise_fscore'] == 1.0
    assert out['num_clusters'] == 1 and out['num_singletons'] == 0
    out = evaluate([7], [3])  # a single item
    assert all(not math.isnan(v) for v in out.values())
    assert out['pairwise_fscore'] == out['bcubed_fscore'] == out['nmi'] == 1.0


def test_known_values() -> None:
    out = evaluate([0, 0, 1, 1], [5, 5, 5, 7])
    assert out['pairwise_precision'] == pytest.approx(0.5)
    assert out['pairwise_recall'] == pytest.approx(1 / 3)
    assert out['bcubed_precision'] == pytest.approx(0.75)
    assert out['bcubed_recall'] == pytest.approx(2 / 3)
    assert out['nmi'] == pytest.approx(brute_nmi([0, 0, 1, 1], [5, 5, 5, 7]))


def test_input_types() -> None:
    pred = [3, 3, 9, 9, 9, 1]
    true = [0, 0, 0, 1, 1, 2]
    ref = evaluate(np.array(pred), np.array(true))
    assert evaluate(torch.tensor(pred), torch.tensor(true)) == ref
    assert evaluate(np.array(pred, dtype=np.uint8), true) == ref
    assert evaluate(np.array(pred, dtype=np.float64), true) == ref  # integral floats
    assert evaluate(torch.tensor(pred, dtype=torch.int32), tuple(true)) == ref


def test_large_ids() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 50, 2000)
    pred = np.where(rng.random(2000) < 0.8, true, rng.integers(0, 80, 2000))
    ref = evaluate(pred, true)
    big = evaluate(pred * 10**15 - 10**16, true.astype(np.uint64) * 2**40)
    for key, value in ref.items():
        assert big[key] == pytest.approx(value)


def test_unlabeled() -> None:
    pred = np.array([0, 0, 1, 1, 2, 2])
    true = np.array([0, 0, 1, 1, -1, -1])
    out = evaluate(pred, true)
    assert out['num_unlabeled'] == 2 and out['num_items'] == 4
    assert out['pairwise_fscore'] == 1.0
    kept = evaluate(pred, true, drop_unlabeled=False)
    assert kept['num_unlabeled'] == 0 and kept['num_items'] == 6
    assert kept['pairwise_fscore'] == 1.0  # -1 is an ordinary class here
    assert pairwise_fscore(pred, true)[2] == 1.0
    with pytest.raises(ValueError, match='-1'):
        evaluate([0, 1], [-1, -1])


def test_errors() -> None:
    with pytest.raises(ValueError, match='same length'):
        evaluate([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match='one-dimensional'):
        evaluate(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match='non-integral'):
        evaluate([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match='NaN'):
        evaluate([np.nan, 1.0], [0, 1])
    with pytest.raises(ValueError, match='integer labels'):
        evaluate(np.array(['a', 'b']), [0, 1])
    with pytest.raises(ValueError, match='no items'):
        evaluate([], [])


@withPackage('scipy')
def test_scale() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    true = rng.integers(0, 5000, n)
    pred = np.where(rng.random(n) < 0.9, true, rng.integers(0, 20000, n))
    out = evaluate(pred, true)
    # Checked against an independent sparse-matrix computation:
    from scipy.sparse import coo_matrix

    table = coo_matrix((np.ones(n), (true, pred))).tocsr()
    table.sum_duplicates()
    tp = (table.data**2).sum() - n
    pk = (np.asarray(table.sum(axis=0)).ravel() ** 2).sum() - n
    qk = (np.asarray(table.sum(axis=1)).ravel() ** 2).sum() - n
    assert out['pairwise_precision'] == pytest.approx(tp / pk)
    assert out['pairwise_recall'] == pytest.approx(tp / qk)


def testroc_auc():
    score = torch.tensor([0.1, 0.4, 0.35, 0.8])
    label = torch.tensor([False, False, True, True])
    assert roc_auc(score, label) == pytest.approx(0.75)
    assert roc_auc(torch.ones(4), label) == pytest.approx(0.5)


def test_threshold_sweep_and_both_choice_rules():
    from torch_geometric_sdt.metrics import choose_threshold, threshold_sweep

    true = [0, 0, 1, 1]

    # A partition that is right for thresholds in [0.3, 0.6], else one cluster.
    def cluster(t):
        return [0, 0, 1, 1] if 0.3 <= t <= 0.6 else [0, 0, 0, 0]

    sweep = threshold_sweep(cluster, (0.1, 0.3, 0.4, 0.5, 0.6, 0.9), true)
    assert [row['threshold'] for row in sweep] == [0.1, 0.3, 0.4, 0.5, 0.6, 0.9]
    assert sweep[1]['pairwise_fscore'] == 1.0 and sweep[0]['pairwise_fscore'] < 1
    assert choose_threshold(sweep) == 0.3  # the first best
    assert choose_threshold(sweep, tolerance=1e-3) == 0.4  # the plateau's centre
    assert choose_threshold(sweep, metric='nmi') == 0.3
    eta = threshold_sweep(cluster, (0.5,), true, key='eta')
    assert choose_threshold(eta, key='eta') == 0.5
    with pytest.raises(ValueError, match='unknown metric'):
        choose_threshold(sweep, metric='accuracy')
    with pytest.raises(ValueError, match='at least one value'):
        threshold_sweep(cluster, (), true)


# Bad input: each bad labelling is refused, naming the problem.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'labels of the wrong length',
        lambda t, g: evaluate(g['y'][:-1], g['y']),
        ValueError,
        'same length',
    ),
    (
        'negative labels other than -1',
        lambda t, g: evaluate(g['y'], np.where(np.arange(N) == 4, -3, g['y'])),
        ValueError,
        r'negative class id -3 \(item 4\)',
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


# A policy choice that is not an error.


def test_unlabelled_minus_one_is_allowed(good):
    y = good['y'].copy()
    y[:5] = -1
    out = evaluate(good['y'], y)
    assert out['num_unlabeled'] == 5 and out['pairwise_fscore'] == 1.0
    # Without dropping, every id is a plain class id, negatives included:
    assert evaluate(good['y'], y - 10, drop_unlabeled=False)['num_items'] == N


def test_threshold_sweep_macro_averages_over_groups():
    true = np.array([0, 0, 1, 1, 5, 5, 5, 5])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])

    def cluster(t: float) -> np.ndarray:
        # Group 0 perfect at any threshold; group 1 split at t > 0.5.
        return np.array([0, 0, 1, 1, 2, 2, 3, 3]) if t > 0.5 else true

    rows = threshold_sweep(cluster, [0.4, 0.6], true, groups=groups)
    assert rows[0]['pairwise_fscore'] == 1.0
    split = evaluate(np.array([2, 2, 3, 3]), np.array([5, 5, 5, 5]))['pairwise_fscore']
    assert rows[1]['pairwise_fscore'] == pytest.approx((1.0 + split) / 2)
    with pytest.raises(ValueError, match='groups must have the shape'):
        threshold_sweep(cluster, [0.4], true, groups=groups[:3])
