r"""Clustering metrics of the face-clustering literature.

Pairwise precision / recall / F-score, BCubed precision / recall / F-score and
normalised mutual information, all computed from one sparse contingency table
(a sort of :math:`g \cdot C + c` over the items), so that millions of items
with tens of thousands of classes are scored in seconds and no dense
:math:`G \times C` table is ever built.

Input validation: both labelings must be one-dimensional and of equal length,
with integer (or integral floating point) values. Predicted cluster ids may be
any integers. Ground-truth ids must be non-negative, :obj:`-1` marking an
unlabelled item; any other negative id is refused as a likely file error
(with :obj:`drop_unlabeled=False` every integer is a plain class id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from torch import Tensor

LabelsLike = np.ndarray | Tensor | list | tuple

UNLABELED: int = -1
r"""The ground-truth label of an unlabelled item."""


class _Contingency(NamedTuple):
    num_items: int
    count: np.ndarray  # int64 [nnz]: n_gc of every non-empty (class, cluster)
    row: np.ndarray  # int64 [nnz]: class id g of each entry
    col: np.ndarray  # int64 [nnz]: cluster id c of each entry
    true_sizes: np.ndarray  # int64 [G]: |g|
    pred_sizes: np.ndarray  # int64 [C]: |c|
    num_unlabeled: int  # items dropped because their ground truth was -1


def _as_labels(labels: LabelsLike, name: str) -> np.ndarray:
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"'{name}' must be one-dimensional (got shape {tuple(labels.shape)})"
        )
    kind = labels.dtype.kind
    if kind == 'b' or kind in 'iu':
        return labels.astype(np.int64, copy=False)
    if kind == 'f':
        if not np.isfinite(labels).all():
            raise ValueError(f"'{name}' contains NaN or infinite labels")
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"'{name}' contains non-integral labels")
        return labels.astype(np.int64)
    raise ValueError(f"'{name}' must hold integer labels (got dtype {labels.dtype})")


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    r"""Maps labels onto :math:`0, \ldots, C - 1` (in sorted order of label)."""
    if labels.size == 0:
        return labels, 0
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < 4 * labels.size + 1024:
        # Linear-time path for the usual small non-negative ids:
        present = np.bincount(labels, minlength=high + 1) > 0
        mapping = np.cumsum(present, dtype=np.int64) - 1
        return mapping[labels], int(present.sum())
    uniq, inverse = np.unique(labels, return_inverse=True)
    return inverse.astype(np.int64, copy=False).reshape(-1), int(uniq.size)


def _contingency(
    pred: LabelsLike,
    true: LabelsLike,
    drop_unlabeled: bool,
) -> _Contingency:
    pred = _as_labels(pred, 'pred')
    true = _as_labels(true, 'true')
    if drop_unlabeled and true.size > 0 and int(true.min()) < UNLABELED:
        bad = int(np.flatnonzero(true < UNLABELED)[0])
        raise ValueError(
            f"'true' holds the negative class id {int(true[bad])} (item {bad}); "
            'ground-truth ids must be non-negative, or -1 for unlabelled items '
            '(pass drop_unlabeled=False to treat all ids as plain classes)'
        )
    if pred.shape[0] != true.shape[0]:
        raise ValueError(
            f"'pred' and 'true' must have the same length "
            f'(got {pred.shape[0]} and {true.shape[0]})'
        )
    num_unlabeled = 0
    if drop_unlabeled:
        keep = true != UNLABELED
        num_unlabeled = int(keep.size - keep.sum())
        if num_unlabeled > 0:
            pred, true = pred[keep], true[keep]
    num_items = int(pred.shape[0])
    if num_items == 0:
        raise ValueError(
            'no items to evaluate (empty labels'
            + (', or every ground-truth label is -1)' if num_unlabeled else ')')
        )

    g, num_classes = _relabel(true)
    c, num_clusters = _relabel(pred)
    key = g * num_clusters + c  # < G * C <= n^2, fits int64 up to 3e9 items
    if num_classes * num_clusters <= 4 * num_items + 1024:
        count = np.bincount(key, minlength=num_classes * num_clusters)
        key = np.flatnonzero(count)
        count = count[key]
    else:
        key, count = np.unique(key, return_counts=True)
    return _Contingency(
        num_items=num_items,
        count=count.astype(np.int64, copy=False),
        row=key // num_clusters,
        col=key % num_clusters,
        true_sizes=np.bincount(g, minlength=num_classes).astype(np.int64),
        pred_sizes=np.bincount(c, minlength=num_clusters).astype(np.int64),
        num_unlabeled=num_unlabeled,
    )


def _fscore(precision: float, recall: float) -> float:
    if precision + recall <= 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _pairwise(table: _Contingency) -> tuple[float, float, float]:
    n = table.num_items
    true_positive = int(np.dot(table.count, table.count)) - n
    pred_pairs = int(np.dot(table.pred_sizes, table.pred_sizes)) - n
    true_pairs = int(np.dot(table.true_sizes, table.true_sizes)) - n
    precision = true_positive / pred_pairs if pred_pairs > 0 else 1.0
    recall = true_positive / true_pairs if true_pairs > 0 else 1.0
    return precision, recall, _fscore(precision, recall)


def _bcubed(table: _Contingency) -> tuple[float, float, float]:
    n = table.num_items
    count_sq = table.count.astype(np.float64) ** 2
    precision = float((count_sq / table.pred_sizes[table.col]).sum() / n)
    recall = float((count_sq / table.true_sizes[table.row]).sum() / n)
    precision, recall = min(precision, 1.0), min(recall, 1.0)
    return precision, recall, _fscore(precision, recall)


def _entropy(sizes: np.ndarray, n: int) -> float:
    p = sizes.astype(np.float64) / n
    return float(-(p * np.log(p)).sum())


def _nmi(table: _Contingency) -> float:
    n = table.num_items
    if table.true_sizes.size == 1 and table.pred_sizes.size == 1:
        return 1.0  # Both labelings are one cluster: identical partitions.
    count = table.count.astype(np.float64)
    log_a = np.log(table.true_sizes.astype(np.float64))[table.row]
    log_b = np.log(table.pred_sizes.astype(np.float64))[table.col]
    mutual_info = float((count / n * (np.log(count) + np.log(n) - log_a - log_b)).sum())
    if mutual_info <= 0.0:
        return 0.0
    normalizer = 0.5 * (_entropy(table.true_sizes, n) + _entropy(table.pred_sizes, n))
    return float(min(max(mutual_info / normalizer, 0.0), 1.0))


def pairwise_fscore(
    pred: LabelsLike,
    true: LabelsLike,
    *,
    drop_unlabeled: bool = True,
) -> tuple[float, float, float]:
    r"""Pairwise precision, recall and F-score of a clustering.

    Counts the pairs of items put in the same cluster. With contingency
    counts :math:`n_{gc}` (ground-truth class :math:`g`, predicted cluster
    :math:`c`) over :math:`n` items:

    .. math::
        \mathrm{TP} &= \sum_{g, c} n_{gc}^2 - n, \qquad
        P = \frac{\mathrm{TP}}{\sum_c |c|^2 - n}, \qquad
        R = \frac{\mathrm{TP}}{\sum_g |g|^2 - n},

        F &= \frac{2 P R}{P + R}.

    (These count ordered pairs; the factor two cancels.) Degenerate cases are
    defined rather than :obj:`NaN`: with no predicted pair (every predicted
    cluster a singleton) :math:`P = 1`, with no true pair :math:`R = 1`, and
    :math:`F = 0` when :math:`P + R = 0`.

    Args:
        pred (numpy.ndarray or torch.Tensor): Predicted cluster ids, any
            integers, shape :obj:`[n]`.
        true (numpy.ndarray or torch.Tensor): Ground-truth class ids,
            non-negative integers or :obj:`-1` (unlabelled; any integers with
            :obj:`drop_unlabeled=False`), shape :obj:`[n]`.
        drop_unlabeled (bool, optional): If :obj:`True`, items whose ground
            truth is :obj:`-1` are removed from both labelings before scoring;
            if :obj:`False`, :obj:`-1` is an ordinary class.
            (default: :obj:`True`)

    Returns:
        (precision, recall, fscore): Three floats in :math:`[0, 1]`.
    """
    return _pairwise(_contingency(pred, true, drop_unlabeled))


def bcubed_fscore(
    pred: LabelsLike,
    true: LabelsLike,
    *,
    drop_unlabeled: bool = True,
) -> tuple[float, float, float]:
    r"""BCubed precision, recall and F-score of a clustering.

    Averages over items the fraction of an item's cluster that shares its
    class (precision) and of its class that shares its cluster (recall):

    .. math::
        P = \frac{1}{n} \sum_{g, c} \frac{n_{gc}^2}{|c|}, \qquad
        R = \frac{1}{n} \sum_{g, c} \frac{n_{gc}^2}{|g|}, \qquad
        F = \frac{2 P R}{P + R}.

    Both are always defined for :math:`n \geq 1` (all-singleton predictions
    give :math:`P = 1`, a single cluster gives :math:`R = 1`).

    Args:
        pred (numpy.ndarray or torch.Tensor): Predicted cluster ids, shape
            :obj:`[n]`.
        true (numpy.ndarray or torch.Tensor): Ground-truth class ids, shape
            :obj:`[n]`.
        drop_unlabeled (bool, optional): If :obj:`True`, items whose ground
            truth is :obj:`-1` are removed before scoring.
            (default: :obj:`True`)

    Returns:
        (precision, recall, fscore): Three floats in :math:`[0, 1]`.
    """
    return _bcubed(_contingency(pred, true, drop_unlabeled))


def nmi(
    pred: LabelsLike,
    true: LabelsLike,
    *,
    drop_unlabeled: bool = True,
) -> float:
    r"""Normalised mutual information with the arithmetic-mean normaliser.

    .. math::
        \mathrm{NMI} = \frac{I(G; C)}{\frac{1}{2} (H(G) + H(C))}, \qquad
        I(G; C) = \sum_{g, c} \frac{n_{gc}}{n}
            \log \frac{n \, n_{gc}}{|g| \, |c|},

    i.e. :obj:`average_method='arithmetic'` of
    :func:`sklearn.metrics.normalized_mutual_info_score`, with its conventions:
    two one-cluster labelings score :math:`1`, and zero mutual information
    scores :math:`0` (so one constant labeling against a non-constant one
    scores :math:`0`, not :obj:`NaN`).

    Args:
        pred (numpy.ndarray or torch.Tensor): Predicted cluster ids, shape
            :obj:`[n]`.
        true (numpy.ndarray or torch.Tensor): Ground-truth class ids, shape
            :obj:`[n]`.
        drop_unlabeled (bool, optional): If :obj:`True`, items whose ground
            truth is :obj:`-1` are removed before scoring.
            (default: :obj:`True`)

    Returns:
        float: NMI in :math:`[0, 1]`.
    """
    return _nmi(_contingency(pred, true, drop_unlabeled))


def evaluate(
    pred: LabelsLike,
    true: LabelsLike,
    *,
    drop_unlabeled: bool = True,
) -> dict[str, float | int]:
    r"""Every metric of the field from one sparse contingency table.

    Builds the contingency counts :math:`n_{gc}` once (both labelings are
    relabelled to :math:`0, \ldots, G - 1` and :math:`0, \ldots, C - 1`, and the
    non-empty cells found by counting :math:`g \cdot C + c`), then derives
    pairwise and BCubed precision / recall / F-score
    (:func:`pairwise_fscore`, :func:`bcubed_fscore`), NMI (:func:`nmi`,
    arithmetic normaliser) and cluster counts. Memory and time are
    :math:`O(n \log n)`, independent of :math:`G \cdot C`; integer sums use
    :obj:`int64` and ratios :obj:`float64`, exact well beyond 5M items.

    Args:
        pred (numpy.ndarray or torch.Tensor): Predicted cluster ids, any
            integers, shape :obj:`[n]`.
        true (numpy.ndarray or torch.Tensor): Ground-truth class ids,
            non-negative integers or :obj:`-1` (unlabelled; any integers with
            :obj:`drop_unlabeled=False`), shape :obj:`[n]`.
        drop_unlabeled (bool, optional): If :obj:`True`, items whose ground
            truth is :obj:`-1` (unlabelled) are removed from both labelings
            before scoring, and their number is reported as
            :obj:`'num_unlabeled'`. If :obj:`False`, :obj:`-1` is an ordinary
            class. (default: :obj:`True`)

    Returns:
        dict: :obj:`'pairwise_precision'`, :obj:`'pairwise_recall'`,
        :obj:`'pairwise_fscore'`, :obj:`'bcubed_precision'`,
        :obj:`'bcubed_recall'`, :obj:`'bcubed_fscore'`, :obj:`'nmi'` (floats in
        :math:`[0, 1]`), and :obj:`'num_items'` (items scored),
        :obj:`'num_clusters'`, :obj:`'num_singletons'` (of the prediction),
        :obj:`'num_true_clusters'`, :obj:`'num_true_singletons'` (of the
        ground truth) and :obj:`'num_unlabeled'` (ints).

    Raises:
        ValueError: If the labelings differ in length, are not
            one-dimensional integer labels, or no item is left to score.

    Example:
        >>> evaluate([0, 0, 1, 1], [5, 5, 5, 7])['pairwise_fscore']
        0.4
    """
    table = _contingency(pred, true, drop_unlabeled)
    pairwise = _pairwise(table)
    bcubed = _bcubed(table)
    return {
        'pairwise_precision': pairwise[0],
        'pairwise_recall': pairwise[1],
        'pairwise_fscore': pairwise[2],
        'bcubed_precision': bcubed[0],
        'bcubed_recall': bcubed[1],
        'bcubed_fscore': bcubed[2],
        'nmi': _nmi(table),
        'num_items': table.num_items,
        'num_clusters': int(table.pred_sizes.size),
        'num_singletons': int((table.pred_sizes == 1).sum()),
        'num_true_clusters': int(table.true_sizes.size),
        'num_true_singletons': int((table.true_sizes == 1).sum()),
        'num_unlabeled': table.num_unlabeled,
    }


def roc_auc(score: LabelsLike, label: LabelsLike) -> float:
    r"""ROC AUC of :obj:`score` for the binary :obj:`label`, computed by ranks
    (the Mann-Whitney :math:`U` statistic, ties given their average rank):

    .. math::
        \mathrm{AUC} = \frac{\sum_{i: y_i = 1} r_i - n_+ (n_+ + 1) / 2}
        {n_+ n_-}.

    Args:
        score (numpy.ndarray or torch.Tensor): Scores, any shape.
        label (numpy.ndarray or torch.Tensor): Booleans of the same size.

    Returns:
        float: The AUC, or NaN when one class is empty.
    """
    if isinstance(score, Tensor):
        score = score.detach().cpu().numpy()
    if isinstance(label, Tensor):
        label = label.detach().cpu().numpy()
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    label = np.asarray(label, dtype=bool).reshape(-1)
    if score.size != label.size:
        raise ValueError(
            f'score and label differ in size ({score.size} vs {label.size})'
        )
    num_pos = int(label.sum())
    num_neg = label.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return float('nan')
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - counts + (counts + 1) / 2
    rank_sum = float(mean_rank[inverse][label].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def threshold_sweep(
    cluster: Callable[[float], LabelsLike],
    values: Sequence[float],
    true: LabelsLike,
    *,
    key: str = 'threshold',
    groups: LabelsLike | None = None,
) -> list[dict[str, float | int]]:
    r"""Clusters labelled items at every value of a threshold and scores each
    partition with :func:`evaluate`: the one sweep behind every threshold
    choice of the package (a baseline's threshold, the SDT's :math:`\eta`).

    Args:
        cluster (callable): Maps a threshold to cluster ids.
        values (sequence): The thresholds to try, in order.
        true (numpy.ndarray or torch.Tensor): Ground-truth labels.
        key (str, optional): The name of the threshold in the rows.
            (default: :obj:`'threshold'`)
        groups (numpy.ndarray or torch.Tensor, optional): The data set of
            every item, for items pooled from several data sets: every
            metric is then the mean over data sets of its value on each
            (a macro average, so that a data set of large identities, with
            many more pairs, does not outweigh the others).
            (default: :obj:`None`)

    Returns:
        list: One row per value, :obj:`{key: value, **evaluate(...)}`.
    """
    values = tuple(values)
    if not values:
        raise ValueError(f'the {key} grid must hold at least one value')
    if groups is None:
        return [{key: float(v), **evaluate(cluster(v), true)} for v in values]
    true_np = np.asarray(true)
    groups_np = np.asarray(groups)
    if groups_np.shape != true_np.shape:
        raise ValueError(
            f'groups must have the shape of the labels {list(true_np.shape)} '
            f'(got {list(groups_np.shape)})'
        )
    masks = [groups_np == g for g in np.unique(groups_np)]
    rows = []
    for v in values:
        pred = np.asarray(cluster(v))
        scores = [evaluate(pred[m], true_np[m]) for m in masks]
        mean = {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}
        rows.append({key: float(v), **mean})
    return rows


def choose_threshold(
    sweep: Sequence[dict[str, float | int]],
    *,
    key: str = 'threshold',
    metric: str = 'pairwise_fscore',
    tolerance: float | None = None,
) -> float:
    r"""Chooses a threshold from a :func:`threshold_sweep`.

    With :obj:`tolerance=None` the first value with the highest
    :obj:`metric`. With a :obj:`tolerance` :math:`\epsilon`, the median of
    the values whose :obj:`metric` is within :math:`\epsilon` of the best
    (the lower middle one for an even count): the centre of the plateau,
    the value least sensitive to a shift between the labelled data and the
    data it is applied to.

    Args:
        sweep (sequence): Rows of :func:`threshold_sweep`.
        key (str, optional): The name of the threshold in the rows.
            (default: :obj:`'threshold'`)
        metric (str, optional): A key of :func:`evaluate` to maximise.
            (default: :obj:`'pairwise_fscore'`)
        tolerance (float, optional): The plateau width :math:`\epsilon`.
            (default: :obj:`None`)
    """
    if not sweep:
        raise ValueError('the sweep is empty')
    if metric not in sweep[0]:
        raise ValueError(f'unknown metric {metric!r}')
    best = max(sweep, key=lambda row: row[metric])
    if tolerance is None:
        return float(best[key])
    near = sorted(
        float(row[key]) for row in sweep if row[metric] >= best[metric] - tolerance
    )
    return near[(len(near) - 1) // 2]


__all__ = [
    'evaluate',
    'threshold_sweep',
    'choose_threshold',
    'roc_auc',
    'pairwise_fscore',
    'bcubed_fscore',
    'nmi',
]
