r"""The shipped SDT against the baselines across data regimes: identity-size
laws, cosine scales and dimensions (draws disjoint from its training mixture).

**Cells.** A synthetic cell is a regime (identity-size law : cosine scale)
of :func:`~torch_geometric_sdt.datasets.regime_draw` at one size :math:`N`
(``--sizes``), one dimension (``--dims``) and one draw (``--draws``): the
cell of index :math:`i` in ``--cells`` is scored on draw :math:`r` with seed
:math:`3000 + i + 100 r` and tuned on a separate draw of the same regime,
size and dimension with seed :math:`3500 + i + 100 r`. Every evaluation and
tuning seed lies in :math:`[3000, 4000)` and the locality rows use 4000,
4001 and 4500, all below 10,000 (training uses seeds of 10,000 and more);
``--draws`` is at most 5 so that no evaluation draw is another draw's
tuning draw. The :obj:`'gaussian'` regime ignores the dimension (always
32-d) and is scored at the first of ``--dims`` only. When
``$SDT_SHARED/data/lfw_mobilefacenet192`` exists, real LFW adds four cells
(``LFW halving s (real)``): the identity-disjoint halvings
``split_identities(y, 0.5, s)`` for :math:`s = 0, \ldots, 3`, each tuned on
one half and scored on the other.

**Methods.** On each evaluation draw, with one exact kNN graph
(:math:`k = 80`) shared by the kNN-based methods:

* **sdt**: the shipped model, untuned (its own :math:`\eta`), given the
  embeddings and the graph (``model.cluster(x, graph=graph)``);
* **sdt (oracle Top-K)**: the same model given the label-derived Top-K
  (:func:`~torch_geometric_sdt.utils.topk_target`): the ceiling of a
  perfect Top-K predictor;
* **infomap-knn** and **fc-es** at their default thresholds, and tuned on
  the tuning draw (:func:`~torch_geometric_sdt.baselines.tune_threshold`
  over every other value of the default grid), the threshold then applied;
* **hdbscan**: scikit-learn's ``HDBSCAN`` with its defaults on the unit
  vectors (euclidean distance on unit vectors orders pairs as cosine does);
* **hdbscan (tuned)**: ``HDBSCAN`` with ``min_cluster_size`` chosen among
  (2, 3, 5, 8, 12, 20) (``min_samples`` left at ``None``, that is equal to
  it) by pairwise F on the tuning draw; it runs brute force (the same
  algorithm as the tree search, quadratic memory, far faster in 256-d) when
  both draws have at most ``--agglomerative-max`` items;
* **dbscan (tuned)**: ``DBSCAN`` on the unit vectors (euclidean), ``eps``
  and ``min_samples`` chosen on the tuning draw: ``eps`` over 16 quantiles
  of the tuning draw's kNN distances (so that the grid follows the cosine
  scale of the regime), ``min_samples`` over (1, 2, 3, 5);
* **agglomerative (tuned)**: ``AgglomerativeClustering`` with average
  linkage and cosine distance, ``distance_threshold`` chosen among 60
  quantiles of the tuning draw's merge heights (one tree, cut at every
  threshold); only when both draws have at most ``--agglomerative-max``
  items (default 12,000), as it needs all pairwise distances.

Noise points of ``HDBSCAN`` and ``DBSCAN`` are singletons. The scikit-learn
methods are skipped with a note when scikit-learn is missing. Ties in
tuning go to the first value of the grid. The pairwise F-score of
:func:`~torch_geometric_sdt.metrics.evaluate` is the tuning criterion of
every tuned method.

**Reported.** Pairwise and BCubed F of every method per cell, a verdict per
cell (the untuned SDT against every other method), a summary over all cells
(per method: mean scores, and how often and by how much the SDT is below
it), the chosen parameters and tuning time of every tuned method, the wall
time of every method on the evaluation draw (the kNN graph excluded; the
scikit-learn methods build their own neighbour search), the mean absolute
(and signed) error of the model's predicted Top-K against the oracle, and
the plot ``regimes_fscore.png``.

**Locality** (``--no-locality`` skips it): :func:`locality` clusters a set
alone and with the faces of one large unrelated identity appended, with
the SDT (as it comes, and with the set's own random-pair noise level given
to both runs, ``cluster(scale=noise_scale(x))``) and the tuned
``infomap-knn``, and reports how much the partition of the set changes.
Rows: synthetic LFW-like faces (3,000 plus an identity of 500, at every
dimension of ``--dims``) whose extra identity shares the
set's geometry (:func:`locality_draw`: the same subspace and mean
direction, so it enters the set's kNN lists), the same with an identity
drawn with another seed (another subspace: the set's kNN lists do not
change, so only statistics over the whole input can move the partition),
and real LFW (halving 1: the half without the largest identity, with and
without that identity's faces).

Writes ``benchmarks/results/regimes.{md,json}`` and ``regimes_fscore.png``
(``--quick``: a temporary folder; 2 cells of 1,000, the first of ``--dims``,
one draw, no real LFW and no locality row, whose four SDT runs would add
about 10 s)::

    python -m benchmarks.regimes
    python -m benchmarks.regimes --sizes 5000 --cells lfw:arcface large:squeezed
    python -m benchmarks.regimes --dims 128 256 512 --draws 3
    python -m benchmarks.regimes --no-lfw --no-locality --agglomerative-max 5000
    python -m benchmarks.regimes --quick
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import LFW, file_sha256, results_dir, write_results
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.baselines import THRESHOLD_GRIDS, cluster_knn, tune_threshold
from torch_geometric_sdt.datasets import (
    COSINES,
    REGIMES,
    parse_cell,
    regime_draw,
    synthetic_faces,
)
from torch_geometric_sdt.datasets.regimes import GAUSSIAN_DIM, random_pair_cosine
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn import knn
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.train import split_identities
from torch_geometric_sdt.utils import noise_scale, topk_target

FIRST_SEED = 3000
TUNE_OFFSET = 500
#: Seed step between repeated draws of a cell.
DRAW_STRIDE = 100
#: At most this many draws, so that evaluation seeds (3000 + i + 100 r)
#: never reach the tuning seeds (3500 + ...).
MAX_DRAWS = TUNE_OFFSET // DRAW_STRIDE
#: Every evaluation and tuning seed stays below this (training uses more).
SEED_LIMIT = 10_000
#: Seeds of the synthetic locality rows (the set, the other-seed identity;
#: the tuning draw at + TUNE_OFFSET when no cell provides a threshold).
LOCALITY_SEED = 4000
LOCALITY_SIZE = 3000
LOCALITY_EXTRA = 500
#: The locality rows' SDT run with the set's own noise level given.
OWN_LEVEL = "sdt (the set's noise level)"
#: The LFW halvings scored, and the one the real locality row uses.
LFW_HALVINGS = (0, 1, 2, 3)
LOCALITY_HALVING = 1
#: The untuned SDT "is below" a method when it trails by more than this.
MARGIN = 0.005

BASELINES = ('infomap-knn', 'fc-es')
#: Methods run at their defaults (named in the verdict when they win).
UNTUNED = ('infomap-knn', 'fc-es', 'hdbscan')
#: Tuning grids of the scikit-learn baselines.
HDBSCAN_SIZES = (2, 3, 5, 8, 12, 20)
DBSCAN_MIN_SAMPLES = (1, 2, 3, 5)
#: Quantiles of the tuning draw's kNN distances (ranks 1 to k - 1) that
#: make the ``eps`` grid of DBSCAN.
DBSCAN_LEVELS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.65,
    0.8,
    0.9,
)
#: The number of merge-height quantiles in the agglomerative grid.
AGGLOMERATIVE_GRID = 60
AGGLOMERATIVE_MAX = 12_000
#: The default cells: every size law at the face cosine scale, then the
#: squeezed and shifted scales on the laws where the Top-K matters most, then
#: the dense law (last, so that the seeds of the other cells stay as they
#: were: a cell's seed is FIRST_SEED plus its position).
CELLS = (
    'lfw:arcface',
    'msceleb:arcface',
    'photo_library:arcface',
    'crowd:arcface',
    'large:arcface',
    'gaussian:arcface',
    'lfw:squeezed',
    'msceleb:squeezed',
    'photo_library:squeezed',
    'large:squeezed',
    'lfw:shifted',
    'msceleb:shifted',
    'dense:arcface',
)
METHODS = (
    'sdt',
    'sdt (oracle Top-K)',
    'infomap-knn',
    'infomap-knn (tuned)',
    'fc-es',
    'fc-es (tuned)',
    'hdbscan',
    'hdbscan (tuned)',
    'dbscan (tuned)',
    'agglomerative (tuned)',
)


def _sklearn() -> SimpleNamespace | None:
    r"""scikit-learn's clustering classes, or :obj:`None` when it (or its
    ``HDBSCAN``, scikit-learn >= 1.3) is missing."""
    try:
        from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering
        from sklearn.neighbors import NearestNeighbors
    except ImportError:
        return None
    return SimpleNamespace(
        HDBSCAN=HDBSCAN,
        DBSCAN=DBSCAN,
        AgglomerativeClustering=AgglomerativeClustering,
        NearestNeighbors=NearestNeighbors,
    )


def _singletons(lab: np.ndarray) -> Tensor:
    r"""Cluster ids with every noise point (id :obj:`-1`) its own cluster."""
    lab = np.asarray(lab).astype(np.int64)
    noise = lab < 0
    lab[noise] = lab.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return torch.from_numpy(lab)


def _pairwise_f(pred: Tensor, y: Tensor) -> float:
    return float(evaluate(pred, y)['pairwise_fscore'])


def _scores(pred: Tensor, y: Tensor, seconds: float) -> dict[str, Any]:
    m = evaluate(pred, y)
    return {
        'pairwise_fscore': m['pairwise_fscore'],
        'bcubed_fscore': m['bcubed_fscore'],
        'num_clusters': m['num_clusters'],
        'seconds': seconds,
    }


def _stats(x: Tensor, y: Tensor) -> dict[str, Any]:
    counts = torch.bincount(y)
    counts = counts[counts > 0]
    return {
        'num_nodes': int(y.numel()),
        'dim': int(x.size(1)),
        'identities': int(counts.numel()),
        'mean_size': float(counts.float().mean()),
        'max_size': int(counts.max()),
        'singleton_share': float((counts == 1).float().mean()),
        'items_above_k': float((counts[y] > 80).float().mean()),
        'random_pair_cosine': random_pair_cosine(x),
    }


# ----------------------------------------------------------------------
# The scikit-learn baselines
# ----------------------------------------------------------------------
def fit_hdbscan(
    x: Tensor, min_cluster_size: int = 5, algorithm: str = 'auto'
) -> Tensor:
    r"""``HDBSCAN`` on the unit rows of :obj:`x` (``min_samples=None``),
    noise points as singletons."""
    sk = _sklearn()
    assert sk is not None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        lab = sk.HDBSCAN(
            min_cluster_size=min_cluster_size, algorithm=algorithm
        ).fit_predict(x.numpy())
    return _singletons(lab)


def tune_hdbscan(
    x: Tensor,
    y: Tensor,
    algorithm: str = 'auto',
    sizes: tuple[int, ...] = HDBSCAN_SIZES,
) -> tuple[dict[str, Any], float]:
    r"""Chooses ``min_cluster_size`` among :obj:`sizes` by pairwise F on
    (:obj:`x`, :obj:`y`); returns the parameters and their score."""
    best: tuple[float, int] | None = None
    for size in sizes:
        f = _pairwise_f(fit_hdbscan(x, size, algorithm), y)
        if best is None or f > best[0]:
            best = (f, size)
    assert best is not None
    params = {'min_cluster_size': best[1], 'min_samples': None, 'algorithm': algorithm}
    return params, best[0]


def dbscan_grid(graph: Any, levels: tuple[float, ...] = DBSCAN_LEVELS) -> list[float]:
    r"""``eps`` candidates: quantiles :obj:`levels` of the euclidean
    distances :math:`\sqrt{2 - 2 \cos}` from every node to its neighbours of
    ranks 1 to :math:`k - 1` in :obj:`graph` (rank 0 is the node itself)."""
    sim = graph.sim[:, 1:].double().clamp(max=1.0)
    dist = torch.sqrt(2.0 - 2.0 * sim).reshape(-1).numpy()
    return sorted({float(v) for v in np.quantile(dist, levels)})


def fit_dbscan(x: Tensor, eps: float, min_samples: int) -> Tensor:
    r"""``DBSCAN`` (euclidean on the unit rows of :obj:`x`), noise points as
    singletons."""
    sk = _sklearn()
    assert sk is not None
    model = sk.DBSCAN(eps=eps, min_samples=min_samples, algorithm='brute')
    return _singletons(model.fit_predict(x.numpy()))


def tune_dbscan(
    x: Tensor,
    y: Tensor,
    grid: list[float],
    min_samples: tuple[int, ...] = DBSCAN_MIN_SAMPLES,
) -> tuple[dict[str, Any], float]:
    r"""Chooses ``eps`` in :obj:`grid` and ``min_samples`` by pairwise F on
    (:obj:`x`, :obj:`y`). The neighbourhoods are found once, at the largest
    ``eps``, as a sparse distance graph; ``DBSCAN`` on that graph
    (``metric='precomputed'``) keeps the pairs within each smaller ``eps``,
    which gives the same clusters as running it on the vectors."""
    sk = _sklearn()
    assert sk is not None
    nn = sk.NearestNeighbors(radius=max(grid), algorithm='brute').fit(x.numpy())
    dist = nn.radius_neighbors_graph(x.numpy(), mode='distance')
    best: tuple[float, float, int] | None = None
    for eps in grid:
        for ms in min_samples:
            model = sk.DBSCAN(eps=eps, min_samples=ms, metric='precomputed')
            f = _pairwise_f(_singletons(model.fit_predict(dist.copy())), y)
            if best is None or f > best[0]:
                best = (f, eps, ms)
    assert best is not None
    _, eps, ms = best
    params = {
        'eps': eps,
        'min_samples': ms,
        'cosine_similarity': 1.0 - eps * eps / 2.0,
        'eps_grid': [min(grid), max(grid)],
    }
    return params, best[0]


def cut_tree(children: np.ndarray, distances: np.ndarray, threshold: float) -> Tensor:
    r"""The clusters of a merge tree (scikit-learn's ``children_`` and
    ``distances_``, merges in order) that applies every merge of height
    below :obj:`threshold`, as ``AgglomerativeClustering`` with
    ``distance_threshold=threshold`` does."""
    n = children.shape[0] + 1
    # Average linkage never merges below an earlier merge: the merges below
    # the threshold are the first m.
    m = int(np.count_nonzero(distances < threshold))
    parent = np.arange(2 * n - 1)
    parent[children[:m].reshape(-1)] = np.repeat(n + np.arange(m), 2)
    while True:  # Pointer jumping to the roots.
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return torch.from_numpy(
        np.unique(parent[:n], return_inverse=True)[1].astype(np.int64)
    )


def _agglomerative(threshold: float) -> Any:
    sk = _sklearn()
    assert sk is not None
    return sk.AgglomerativeClustering(
        n_clusters=None,
        distance_threshold=threshold,
        metric='cosine',
        linkage='average',
        compute_full_tree=True,
    )


def fit_agglomerative(x: Tensor, threshold: float) -> Tensor:
    r"""Average-linkage agglomerative clustering of :obj:`x` with cosine
    distance, merging below :obj:`threshold`."""
    return torch.from_numpy(_agglomerative(threshold).fit_predict(x.numpy()))


def tune_agglomerative(
    x: Tensor, y: Tensor, num_thresholds: int = AGGLOMERATIVE_GRID
) -> tuple[dict[str, Any], float]:
    r"""Chooses ``distance_threshold`` by pairwise F on (:obj:`x`, :obj:`y`)
    among :obj:`num_thresholds` quantiles of the merge heights of the full
    tree (quantile levels :math:`1 - q` with :math:`q` from 0.95 down to
    :math:`0.5 / N`, log-spaced: from most items apart to one cluster)."""
    tree = _agglomerative(0.0).fit(x.numpy())
    n = x.size(0)
    levels = 1.0 - np.geomspace(0.95, 0.5 / n, num_thresholds)
    grid = sorted({float(v) for v in np.quantile(tree.distances_, levels)})
    best: tuple[float, float] | None = None
    for t in grid:
        f = _pairwise_f(cut_tree(tree.children_, tree.distances_, t), y)
        if best is None or f > best[0]:
            best = (f, t)
    assert best is not None
    params = {'distance_threshold': best[1], 'threshold_grid': [grid[0], grid[-1]]}
    return params, best[0]


# ----------------------------------------------------------------------
# One cell
# ----------------------------------------------------------------------
def run_cell(
    model: SDTClusterer,
    x: Tensor,
    y: Tensor,
    x_tune: Tensor,
    y_tune: Tensor,
    agglomerative_max: int = AGGLOMERATIVE_MAX,
) -> dict[str, Any]:
    r"""Scores every method on (:obj:`x`, :obj:`y`), tuning the baselines
    on (:obj:`x_tune`, :obj:`y_tune`). Agglomerative clustering runs, and the
    tuned HDBSCAN searches brute force (else with its tree), only when both
    draws have at most :obj:`agglomerative_max` items."""
    t = time.perf_counter()
    graph = knn(x, model.k)
    knn_s = time.perf_counter() - t
    graph_tune = knn(x_tune, model.k)
    out: dict[str, Any] = {'stats': _stats(x, y), 'knn_seconds': knn_s}
    methods: dict[str, Any] = {}

    t = time.perf_counter()
    pred, details = model.cluster(x, graph=graph, return_details=True)
    methods['sdt'] = _scores(pred, y, time.perf_counter() - t)
    oracle = topk_target(graph.index, y)
    t = time.perf_counter()
    pred = model.cluster(x, graph=graph, topk=oracle)
    methods['sdt (oracle Top-K)'] = _scores(pred, y, time.perf_counter() - t)
    diff = details['topk'].double() - oracle.double()
    out['topk'] = {
        'predicted_mean': float(details['topk'].double().mean()),
        'oracle_mean': float(oracle.double().mean()),
        'mae': float(diff.abs().mean()),
        'signed_error': float(diff.mean()),
    }

    thresholds: dict[str, float] = {}
    tuning: dict[str, Any] = {}
    for method in BASELINES:
        t = time.perf_counter()
        pred = cluster_knn(graph, method)
        methods[method] = _scores(pred, y, time.perf_counter() - t)
        grid = THRESHOLD_GRIDS[method][::2]
        t = time.perf_counter()
        thr, sweep = tune_threshold(graph_tune, y_tune, method, grid=grid)
        tuning[f'{method} (tuned)'] = {
            'params': {'threshold': thr},
            'tuning_fscore': max(r['pairwise_fscore'] for r in sweep),
            'tuning_seconds': time.perf_counter() - t,
        }
        thresholds[method] = thr
        t = time.perf_counter()
        pred = cluster_knn(graph, method, threshold=thr)
        methods[f'{method} (tuned)'] = _scores(pred, y, time.perf_counter() - t)
    out['tuned_thresholds'] = thresholds

    if _sklearn() is not None:
        t = time.perf_counter()
        pred = fit_hdbscan(x)
        methods['hdbscan'] = _scores(pred, y, time.perf_counter() - t)
        # HDBSCAN's clusters have at least 2 items: its singletons are noise.
        out['hdbscan_noise_share'] = float(
            (torch.bincount(pred)[pred] == 1).float().mean()
        )
        small = max(x.size(0), x_tune.size(0)) <= agglomerative_max
        runs: list[tuple[str, Any, Any]] = [
            (
                'hdbscan (tuned)',
                lambda: tune_hdbscan(x_tune, y_tune, 'brute' if small else 'auto'),
                lambda p: fit_hdbscan(x, p['min_cluster_size'], p['algorithm']),
            ),
            (
                'dbscan (tuned)',
                lambda: tune_dbscan(x_tune, y_tune, dbscan_grid(graph_tune)),
                lambda p: fit_dbscan(x, p['eps'], p['min_samples']),
            ),
        ]
        if small:
            runs.append(
                (
                    'agglomerative (tuned)',
                    lambda: tune_agglomerative(x_tune, y_tune),
                    lambda p: fit_agglomerative(x, p['distance_threshold']),
                )
            )
        for name, tune, fit in runs:
            t = time.perf_counter()
            params, score = tune()
            tuning[name] = {
                'params': params,
                'tuning_fscore': score,
                'tuning_seconds': time.perf_counter() - t,
            }
            t = time.perf_counter()
            pred = fit(params)
            methods[name] = _scores(pred, y, time.perf_counter() - t)
    out['tuning'] = tuning
    out['metrics'] = methods
    return out


def label(cell: dict[str, Any]) -> str:
    r"""The name of a cell in the tables and the plot."""
    return str(cell.get('label', cell['cell']))


def verdict(cell: dict[str, Any]) -> str:
    r"""Where the untuned SDT stands against the best other method of a
    cell (every method whose name does not start with ``sdt``)."""
    m = cell['metrics']
    sdt = m['sdt']['pairwise_fscore']
    others = {k: v['pairwise_fscore'] for k, v in m.items() if not k.startswith('sdt')}
    best = max(others, key=others.get)
    untuned = {k: v for k, v in others.items() if k in UNTUNED}
    lost_untuned = [k for k, v in untuned.items() if v > sdt]
    gap = sdt - others[best]
    if gap >= 0:
        return f'SDT wins ({gap:+.4f} over {best})'
    extra = f'; also loses to untuned {", ".join(lost_untuned)}' if lost_untuned else ''
    return f'**SDT loses** ({gap:+.4f} to {best}){extra}'


def summary(
    cells: list[dict[str, Any]], margin: float = MARGIN
) -> list[dict[str, Any]]:
    r"""Per method, over the cells where it ran: mean pairwise and BCubed F,
    the number of cells where the untuned SDT's pairwise F is below the
    method's minus :obj:`margin`, and the mean of SDT minus the method."""
    out = []
    for method in METHODS:
        rows = [c['metrics'] for c in cells if method in c['metrics']]
        if not rows:
            continue
        diff = [
            r['sdt']['pairwise_fscore'] - r[method]['pairwise_fscore'] for r in rows
        ]
        out.append(
            {
                'method': method,
                'cells': len(rows),
                'pairwise_fscore': float(
                    np.mean([r[method]['pairwise_fscore'] for r in rows])
                ),
                'bcubed_fscore': float(
                    np.mean([r[method]['bcubed_fscore'] for r in rows])
                ),
                'sdt_below': int(sum(d < -margin for d in diff)),
                'sdt_minus': float(np.mean(diff)),
            }
        )
    return out


def lfw_data() -> tuple[Tensor, Tensor] | None:
    r"""Real LFW (unit rows, labels), or :obj:`None` when absent."""
    if not (LFW / 'features.npy').exists():
        return None
    x = torch.from_numpy(np.load(LFW / 'features.npy')).float()
    x = torch.nn.functional.normalize(x, dim=1)
    y = torch.from_numpy(np.load(LFW / 'labels.npy')).long()
    return x, y


def _relabel(v: Tensor) -> Tensor:
    return torch.unique(v, return_inverse=True)[1]


def lfw_cells(
    model: SDTClusterer,
    data: tuple[Tensor, Tensor],
    halvings: tuple[int, ...] = LFW_HALVINGS,
    agglomerative_max: int = AGGLOMERATIVE_MAX,
) -> list[dict[str, Any]]:
    r"""One cell per identity-disjoint halving of real LFW: tuned on one
    half, scored on the other."""
    x, y = data
    out = []
    for s in halvings:
        tune, test = split_identities(y, 0.5, s)
        cell = run_cell(
            model,
            x[test],
            _relabel(y[test]),
            x[tune],
            _relabel(y[tune]),
            agglomerative_max=agglomerative_max,
        )
        name = f'LFW halving {s} (real)'
        cell.update(cell=name, label=name, seed=s, dim=int(x.size(1)))
        out.append(cell)
    return out


# ----------------------------------------------------------------------
# Locality
# ----------------------------------------------------------------------
def locality_draw(
    num_nodes: int, extra: int, dim: int, seed: int, same_geometry: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    r"""A synthetic LFW-like set and one unrelated identity of :obj:`extra`
    items: :obj:`(x, y, x_extra)`.

    With :obj:`same_geometry`, :obj:`x` is the first :obj:`num_nodes` rows
    of ``regime_draw('lfw', num_nodes + extra, dim, seed)`` and the identity
    the last :obj:`extra` rows of a one-identity
    :func:`~torch_geometric_sdt.datasets.synthetic_faces` draw of the same
    size and seed: both share the random subspace and mean direction that
    the generator draws first, so the identity lies among the set's faces
    (its cosine to them is the set's random-pair cosine) but is none of
    them, and the disjoint rows share no sample noise. Otherwise the
    identity is a one-identity draw of :obj:`extra` items with seed
    :obj:`seed + 1`: another subspace, at cosine near 0 to the set.
    """
    if same_geometry:
        x, y = regime_draw('lfw', num_nodes + extra, dim, seed=seed)
        x, y = x[:num_nodes], _relabel(y[:num_nodes])
        big, _ = synthetic_faces(num_nodes + extra, dim, seed=seed, num_identities=1)
        return x, y, big[num_nodes:].contiguous()
    x, y = regime_draw('lfw', num_nodes, dim, seed=seed)
    big, _ = synthetic_faces(extra, dim, seed=seed + 1, num_identities=1)
    return x, y, big


def locality(
    model: SDTClusterer, x: Tensor, y: Tensor, x_big: Tensor, threshold: float
) -> dict[str, Any]:
    r"""Clusters :obj:`x` alone and :obj:`x` with the rows :obj:`x_big` (one
    unrelated identity) appended, with the SDT and with ``infomap-knn`` at
    :obj:`threshold`.

    Per method: :obj:`'agreement'`, the pairwise F of the partition of the
    rows of :obj:`x` clustered with :obj:`x_big` against the one clustered
    alone (1 when adding the identity changes nothing);
    :obj:`'pairwise_fscore_alone'` and :obj:`'pairwise_fscore_with'`
    against :obj:`y`; :obj:`'rows_joined'`, the rows of :obj:`x` that share
    a cluster with a row of :obj:`x_big`; and :obj:`'extra_clusters'`, the
    clusters the extra identity is split into. The SDT runs twice: as it
    comes, and (:data:`OWN_LEVEL`) with the noise level of :obj:`x` alone
    given in both runs (``cluster(scale=noise_scale(x))``), which tells
    what the random-pair level of the whole input moves. Also the share of
    rows of :obj:`x` whose kNN list changes and the mean cosine between
    :obj:`x` and :obj:`x_big`.
    """
    n = x.size(0)
    x_all = torch.cat([x, x_big])
    graph = knn(x, model.k)
    graph_all = knn(x_all, model.k)
    changed = (graph.index != graph_all.index[:n]).any(dim=1)
    out: dict[str, Any] = {
        'num_nodes': n,
        'extra': int(x_big.size(0)),
        'knn_rows_changed': float(changed.float().mean()),
        'cross_cosine': float(x.double().mean(0) @ x_big.double().mean(0)),
        'random_pair_cosine': random_pair_cosine(x),
        'threshold': threshold,
    }
    level = noise_scale(x)
    runs = {
        'sdt': lambda xx, g: model.cluster(xx, graph=g),
        # The one set-wide statistic the SDT reads, held at the set's own:
        OWN_LEVEL: lambda xx, g: model.cluster(xx, graph=g, scale=level),
        'infomap-knn (tuned)': lambda xx, g: cluster_knn(
            g, 'infomap-knn', threshold=threshold
        ),
    }
    methods = {}
    for name, run in runs.items():
        alone = run(x, graph)
        joint = run(x_all, graph_all)
        big_ids = torch.unique(joint[n:])
        methods[name] = {
            'agreement': _pairwise_f(joint[:n], alone),
            'pairwise_fscore_alone': _pairwise_f(alone, y),
            'pairwise_fscore_with': _pairwise_f(joint[:n], y),
            'rows_joined': int(torch.isin(joint[:n], big_ids).sum()),
            'extra_clusters': int(big_ids.numel()),
        }
    out['metrics'] = methods
    return out


def _tuned_infomap(x: Tensor, y: Tensor, k: int) -> float:
    grid = THRESHOLD_GRIDS['infomap-knn'][::2]
    return tune_threshold(knn(x, k), y, 'infomap-knn', grid=grid)[0]


def synthetic_locality(
    model: SDTClusterer,
    dim: int,
    cells: list[dict[str, Any]],
    num_nodes: int = LOCALITY_SIZE,
    extra: int = LOCALITY_EXTRA,
    same_geometry: bool = True,
) -> dict[str, Any]:
    r"""The synthetic locality row (:func:`locality_draw`). The threshold
    of ``infomap-knn`` is the one tuned for the ``lfw:arcface`` cell of the
    same size and dimension (draw 0) when there is one, else tuned on a
    separate draw (seed :obj:`LOCALITY_SEED + TUNE_OFFSET`)."""
    x, y, big = locality_draw(num_nodes, extra, dim, LOCALITY_SEED, same_geometry)
    match = [
        c
        for c in cells
        if c['cell'] == 'lfw:arcface'
        and c.get('draw') == 0
        and c['stats']['num_nodes'] == num_nodes
        and c['stats']['dim'] == dim
    ]
    if match:
        thr, source = match[0]['tuned_thresholds']['infomap-knn'], match[0]['label']
    else:
        seed = LOCALITY_SEED + TUNE_OFFSET
        xt, yt = regime_draw('lfw', num_nodes, dim, seed=seed)
        thr, source = _tuned_infomap(xt, yt, model.k), f'lfw:arcface seed {seed}'
    row = locality(model, x, y, big, thr)
    kind = 'same geometry' if same_geometry else 'other seed'
    row.update(
        row=f'synthetic lfw:arcface D={dim}, identity of {kind}',
        dim=dim,
        seed=LOCALITY_SEED,
        threshold_from=source,
    )
    return row


def lfw_locality(
    model: SDTClusterer, data: tuple[Tensor, Tensor], halving: int = LOCALITY_HALVING
) -> dict[str, Any]:
    r"""The real locality row: of the halving :obj:`halving` of LFW, the
    half without the largest identity, alone and with that identity's
    faces; ``infomap-knn`` is tuned on the other half."""
    x, y = data
    largest = int(torch.bincount(y).argmax())
    halves = split_identities(y, 0.5, halving)
    has = [bool((y[h] == largest).any()) for h in halves]
    rest, other = (halves[1], halves[0]) if has[0] else (halves[0], halves[1])
    thr = _tuned_infomap(x[other], _relabel(y[other]), model.k)
    big = x[y == largest]
    row = locality(model, x[rest], _relabel(y[rest]), big, thr)
    row.update(
        row=f'LFW halving {halving} (real), largest identity',
        dim=int(x.size(1)),
        seed=halving,
        threshold_from='the other half',
    )
    return row


# ----------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------
def tables(result: dict[str, Any]) -> list[str]:
    cells = result['cells']
    methods = [m for m in METHODS if any(m in c['metrics'] for c in cells)]
    lines = []
    for score, title in (
        ('pairwise_fscore', 'Pairwise F'),
        ('bcubed_fscore', 'BCubed F'),
    ):
        lines += [
            f'## {title}',
            '',
            '| cell | N | ' + ' | '.join(methods) + ' |',
            '|---|---|' + '---|' * len(methods),
        ]
        for c in cells:
            row = [
                f'{c["metrics"][m][score]:.4f}' if m in c['metrics'] else '-'
                for m in methods
            ]
            lines.append(
                f'| {label(c)} | {c["stats"]["num_nodes"]:,} | '
                + ' | '.join(row)
                + ' |'
            )
        lines.append('')
    lines += [
        '## Summary over all cells',
        '',
        'Per method, over the cells where it ran: the mean scores, the cells '
        f"where the untuned SDT's pairwise F is more than {MARGIN} below the "
        "method's, and the mean of SDT minus the method (pairwise F).",
        '',
        '| method | cells | mean pairwise F | mean BCubed F | SDT below '
        f'(by > {MARGIN}) | mean SDT minus method |',
        '|---|---|---|---|---|---|',
    ]
    for s in summary(cells):
        vs = (
            '- | -'
            if s['method'] == 'sdt'
            else f'{s["sdt_below"]} of {s["cells"]} | {s["sdt_minus"]:+.4f}'
        )
        lines.append(
            f'| {s["method"]} | {s["cells"]} | {s["pairwise_fscore"]:.4f} | '
            f'{s["bcubed_fscore"]:.4f} | {vs} |'
        )
    lines += [
        '',
        '## Verdict (pairwise F, untuned SDT against every other method)',
        '',
        '| cell | verdict | SDT minus oracle-Top-K SDT |',
        '|---|---|---|',
    ]
    for c in cells:
        m = c['metrics']
        gap = m['sdt']['pairwise_fscore'] - m['sdt (oracle Top-K)']['pairwise_fscore']
        lines.append(f'| {label(c)} | {verdict(c)} | {gap:+.4f} |')
    lines += [
        '',
        '## Top-K of the shipped model against the oracle',
        '',
        '| cell | predicted mean | oracle mean | MAE | signed error |',
        '|---|---|---|---|---|',
    ]
    for c in cells:
        t = c['topk']
        lines.append(
            f'| {label(c)} | {t["predicted_mean"]:.1f} | {t["oracle_mean"]:.1f} | '
            f'{t["mae"]:.1f} | {t["signed_error"]:+.1f} |'
        )
    lines += [
        '',
        '## The cells',
        '',
        '| cell | N | D | identities | mean size | max size | singleton share '
        '| items in identities > k | random-pair cosine | tuned thresholds '
        '(infomap-knn, fc-es) | hdbscan noise share |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for c in cells:
        s, th = c['stats'], c['tuned_thresholds']
        noise = c.get('hdbscan_noise_share')
        lines.append(
            f'| {label(c)} | {s["num_nodes"]:,} | {s["dim"]} | {s["identities"]:,} | '
            f'{s["mean_size"]:.1f} | {s["max_size"]:,} | {s["singleton_share"]:.3f} | '
            f'{s["items_above_k"]:.3f} | {s["random_pair_cosine"]:.3f} | '
            f'{th["infomap-knn"]}, {th["fc-es"]} | '
            + ('-' if noise is None else f'{noise:.3f}')
            + ' |'
        )
    if any(c.get('tuning') for c in cells):
        lines += [
            '',
            '## Tuned parameters (chosen on the tuning draw or half)',
            '',
            '| cell | method | parameters | pairwise F on the tuning draw | '
            'tuning seconds |',
            '|---|---|---|---|---|',
        ]
        for c in cells:
            for name, t in c.get('tuning', {}).items():
                lines.append(
                    f'| {label(c)} | {name} | {_params(t["params"])} | '
                    f'{t["tuning_fscore"]:.4f} | {t["tuning_seconds"]:.1f} |'
                )
    lines += [
        '',
        '## Seconds per method on the evaluation draw (kNN graph excluded; '
        'the scikit-learn methods build their own neighbour search; tuning '
        'time in the table above)',
        '',
        '| cell | kNN | ' + ' | '.join(methods) + ' |',
        '|---|---|' + '---|' * len(methods),
    ]
    for c in cells:
        row = [
            f'{c["metrics"][m]["seconds"]:.1f}' if m in c['metrics'] else '-'
            for m in methods
        ]
        lines.append(
            f'| {label(c)} | {c["knn_seconds"]:.1f} | ' + ' | '.join(row) + ' |'
        )
    return lines


def _params(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if k.endswith('_grid'):
            parts.append(f'{k} [{v[0]:.4g}, {v[1]:.4g}]')
        elif isinstance(v, float):
            parts.append(f'{k} {v:.4g}')
        else:
            parts.append(f'{k} {v}')
    return ', '.join(parts)


def locality_table(rows: list[dict[str, Any]]) -> list[str]:
    r"""The markdown table of the locality rows."""
    lines = [
        '## Locality: the same set clustered alone and with one large '
        'unrelated identity added',
        '',
        'Agreement: pairwise F of the partition of the set clustered with '
        'the extra identity against the one clustered alone (1: adding it '
        'changes nothing). "kNN rows changed": the share of the set whose '
        'kNN list changes when the identity is added; where it is 0, only '
        'statistics over the whole input can move the partition.',
        '',
        '| row | N | extra | kNN rows changed | cosine set-extra (random '
        'pairs in the set) | method | agreement | pairwise F alone | pairwise '
        'F with | rows joined to the extra identity | clusters of the extra '
        'identity |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        for name, m in r['metrics'].items():
            lines.append(
                f'| {r["row"]} | {r["num_nodes"]:,} | {r["extra"]:,} | '
                f'{r["knn_rows_changed"]:.3f} | {r["cross_cosine"]:.3f} '
                f'({r["random_pair_cosine"]:.3f}) | {name} | '
                f'{m["agreement"]:.4f} | {m["pairwise_fscore_alone"]:.4f} | '
                f'{m["pairwise_fscore_with"]:.4f} | {m["rows_joined"]:,} | '
                f'{m["extra_clusters"]:,} |'
            )
    return lines


def _report(cell: dict[str, Any]) -> None:
    scores = cell['metrics'].items()
    text = ', '.join(f'{k} {v["pairwise_fscore"]:.4f}' for k, v in scores)
    print(f'{label(cell)}: {text}', flush=True)


def _sdt_accepts(model: SDTClusterer, dim: int) -> bool:
    r"""Whether the model can cluster :obj:`dim`-dimensional embeddings (an
    embedding-mode model only those it was trained on)."""
    emb = model.config.get('embedding_channels')
    return model.mode != 'embedding' or emb is None or int(emb) == dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[3000])
    parser.add_argument(
        '--cells',
        nargs='+',
        default=list(CELLS),
        help=f'name:cosine pairs; names {sorted(REGIMES)}, cosines {sorted(COSINES)}',
    )
    parser.add_argument('--dims', type=int, nargs='+', default=[256])
    parser.add_argument(
        '--draws',
        type=int,
        default=1,
        help=f'independent draws per cell (1 to {MAX_DRAWS})',
    )
    parser.add_argument(
        '--agglomerative-max',
        type=int,
        default=AGGLOMERATIVE_MAX,
        help='largest draw for the quadratic methods (agglomerative, brute '
        'HDBSCAN for the tuned variant)',
    )
    parser.add_argument('--no-lfw', action='store_true', help='skip real LFW')
    parser.add_argument(
        '--no-locality', action='store_true', help='skip the locality rows'
    )
    parser.add_argument(
        '--quick',
        action='store_true',
        help='2 cells of 1,000, one dim, one draw, no LFW, no locality',
    )
    parser.add_argument(
        '--model',
        type=Path,
        default=None,
        help='an SDT checkpoint to score instead of the shipped model',
    )
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    sizes, cell_names, dims, num_draws = args.sizes, args.cells, args.dims, args.draws
    sizes, dims = list(dict.fromkeys(sizes)), list(dict.fromkeys(dims))
    if args.quick:
        sizes, cell_names = [1000], ['lfw:arcface', 'large:squeezed']
        dims, num_draws = dims[:1], 1
    for c in cell_names:
        try:
            parse_cell(c)
        except ValueError:
            parser.error(f'unknown cell {c!r}')
    if not 1 <= num_draws <= MAX_DRAWS:
        parser.error(
            f'--draws must lie in [1, {MAX_DRAWS}]: seeds {FIRST_SEED} + i + '
            f'{DRAW_STRIDE} r would reach the tuning seeds'
        )
    if len(cell_names) > DRAW_STRIDE:
        parser.error(f'at most {DRAW_STRIDE} cells')
    if min(sizes) < 2 or min(dims) < 1 or args.agglomerative_max < 0:
        parser.error('sizes must be >= 2, dims >= 1, --agglomerative-max >= 0')
    top = FIRST_SEED + len(cell_names) - 1 + DRAW_STRIDE * (num_draws - 1)
    assert top + TUNE_OFFSET < LOCALITY_SEED < SEED_LIMIT - TUNE_OFFSET

    start = time.perf_counter()
    model_path = default_model_path() if args.model is None else args.model
    model = SDTClusterer.load(model_path)
    model_sha = file_sha256(model_path)
    notes = []
    if args.model is not None:
        notes.append(
            f'Model: `{args.model}` (sha256 {model_sha[:12]}), not the shipped one.'
        )
    cells = []
    skipped = []
    for n in sizes:
        for dim in dims:
            for r in range(num_draws):
                for i, c in enumerate(cell_names):
                    name, cos = parse_cell(c)
                    if name == 'gaussian' and dim != dims[0]:
                        continue  # 32-d whatever the dimension: one run.
                    d = GAUSSIAN_DIM if name == 'gaussian' else dim
                    if not _sdt_accepts(model, d):
                        skipped.append(f'{name}:{cos} D={d}')
                        continue
                    seed = FIRST_SEED + i + DRAW_STRIDE * r
                    tune_seed = seed + TUNE_OFFSET
                    assert tune_seed < LOCALITY_SEED
                    x, y = regime_draw(name, n, dim, seed=seed, cosine=cos)
                    xt, yt = regime_draw(name, n, dim, seed=tune_seed, cosine=cos)
                    cell = run_cell(model, x, y, xt, yt, args.agglomerative_max)
                    cell.update(
                        cell=f'{name}:{cos}',
                        label=f'{name}:{cos} N={n:,} D={d} draw {r}',
                        dim=d,
                        draw=r,
                        seed=seed,
                        tune_seed=tune_seed,
                    )
                    cells.append(cell)
                    _report(cell)
    lfw = None
    if args.no_lfw or args.quick:
        notes.append('Real LFW was not run (--no-lfw or --quick).')
    else:
        lfw = lfw_data()
        if lfw is None:
            notes.append(f'Real LFW skipped: {LFW} is absent.')
        elif not _sdt_accepts(model, lfw[0].size(1)):
            skipped.append(f'LFW D={lfw[0].size(1)}')
            lfw = None
        else:
            for cell in lfw_cells(model, lfw, agglomerative_max=args.agglomerative_max):
                cells.append(cell)
                _report(cell)
    if skipped:
        notes.append(
            f'Skipped (an embedding-mode SDT trained on '
            f'{model.config.get("embedding_channels")}-d embeddings cannot '
            f'cluster them): {", ".join(skipped)}.'
        )
    if _sklearn() is None:
        notes.append(
            'hdbscan, hdbscan (tuned), dbscan (tuned) and agglomerative (tuned) '
            'skipped: scikit-learn (>= 1.3) is not installed.'
        )
    big = [
        label(c)
        for c in cells
        if 'hdbscan (tuned)' in c['metrics']
        and 'agglomerative (tuned)' not in c['metrics']
    ]
    if big:
        notes.append(
            f'agglomerative (tuned) skipped above {args.agglomerative_max:,} items '
            f'(--agglomerative-max), and hdbscan (tuned) ran with its tree search: '
            f'{", ".join(big)}.'
        )

    rows: list[dict[str, Any]] = []
    if args.no_locality or args.quick:
        notes.append('Locality rows were not run (--no-locality or --quick).')
    else:
        loc_dims = [d for d in dims if _sdt_accepts(model, d)]
        if not loc_dims:
            notes.append('No synthetic locality row: the SDT takes none of --dims.')
        for d in loc_dims:
            rows.append(synthetic_locality(model, d, cells))
            rows.append(synthetic_locality(model, d, cells, same_geometry=False))
        if lfw is not None:
            rows.append(lfw_locality(model, lfw))
        else:
            notes.append('No real LFW locality row: real LFW was not run.')
        for row in rows:
            print(
                f'locality {row["row"]}: '
                + ', '.join(
                    f'{k} agreement {v["agreement"]:.4f}'
                    for k, v in row['metrics'].items()
                ),
                flush=True,
            )
    total = time.perf_counter() - start

    out = results_dir(args.quick, args.out)
    plots = []
    if cells:
        from benchmarks.plots import regimes_fscore

        out.mkdir(parents=True, exist_ok=True)
        path = regimes_fscore(cells, out / 'regimes_fscore.png')
        plots = [path.name] if path is not None else []

    lines = [
        'The shipped SDT (trained on the regime mixture of '
        '`datasets.training_mixture`, seeds from 10000), untuned, against the '
        'baselines on draws of every regime '
        '(`torch_geometric_sdt.datasets.regime_draw`: identity-size law : '
        f'cosine scale), {num_draws} draw(s) per cell and dimension; every '
        'tuned method is tuned on a separate draw of the same cell (pairwise '
        'F) and applied once; for real LFW, four identity-disjoint halvings, '
        'each tuned on one half and scored on the other. Exact kNN, '
        f'k = {model.k}; SDT eta {model.config["eta"]}. "oracle Top-K" is the '
        'same model given the label-derived Top-K. hdbscan: scikit-learn '
        'defaults on the unit vectors; hdbscan (tuned): min_cluster_size in '
        f'{HDBSCAN_SIZES}; dbscan (tuned): eps over quantiles of the tuning '
        f"draw's kNN distances, min_samples in {DBSCAN_MIN_SAMPLES}; "
        'agglomerative (tuned): average linkage, cosine, distance threshold '
        "over quantiles of the tuning tree's merge heights (up to "
        f'{args.agglomerative_max:,} items). Noise points are singletons.',
        '',
        f'Total run time: {total:.0f} s.',
        '',
    ]
    lines += [f'- {n}' for n in notes] + ([''] if notes else [])
    losses = [label(c) for c in cells if verdict(c).startswith('**SDT loses')]
    lines += [
        f'**SDT loses to at least one other method (pairwise F) in {len(losses)} '
        f'of {len(cells)} cells**' + (f': {", ".join(losses)}.' if losses else '.'),
        '',
    ]
    tuned = next(
        (s for s in summary(cells) if s['method'] == 'infomap-knn (tuned)'), None
    )
    if tuned is not None:
        lines += [
            f'**Against the tuned infomap-knn: the untuned SDT is more than '
            f'{MARGIN} pairwise F below it in {tuned["sdt_below"]} of '
            f'{tuned["cells"]} cells; mean SDT minus tuned infomap-knn '
            f'{tuned["sdt_minus"]:+.4f}.**',
            '',
        ]
    if cells:
        lines += tables({'cells': cells})
    if rows:
        lines += [''] + locality_table(rows)
    write_results(
        'regimes',
        'SDT against the baselines across data regimes',
        {
            'sizes': sizes,
            'dims': dims,
            'draws': num_draws,
            'cells_requested': cell_names,
            'model': str(model_path),
            'model_sha256': model_sha,
            'agglomerative_max': args.agglomerative_max,
            'notes': notes,
            'total_seconds': total,
            'summary': summary(cells),
            'cells': cells,
            'locality': rows,
            'plots': plots,
        },
        lines,
        out=out,
    )


if __name__ == '__main__':
    main()
