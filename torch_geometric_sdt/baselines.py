r"""Training-free face-clustering baselines on a kNN graph.

* :func:`infomap_knn`: face-cluster-by-infomap (kNN + early-stopped cosine
  threshold + Infomap).
* :func:`fc_es`: FC-ES, "Face Clustering via Early Stopping and Edge Recall"
  (https://arxiv.org/abs/2408.13431), the unsupervised part, with the
  neighbour-based edge probability.

Both scan each node's kNN list in order of decreasing similarity, link the node
to its neighbours while the edge score stays above a threshold and stop at the
first miss, then run directed two-level Infomap. :func:`cluster_knn` dispatches
by method name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.defaults import BASELINE_METHODS
from torch_geometric_sdt.metrics import choose_threshold, threshold_sweep
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.utils.distributed import check_engine
from torch_geometric_sdt.utils.infomap import cluster_links
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard, topk_jaccard_ray

#: The reference thresholds of the baselines (see :func:`infomap_knn` and
#: :func:`fc_es`).
DEFAULT_THRESHOLDS: dict[str, float] = {'infomap-knn': 0.58, 'fc-es': 0.22}


def _check_knn(knn: KNN) -> tuple[Tensor, Tensor]:
    index, sim = knn
    if not isinstance(index, Tensor) or not isinstance(sim, Tensor):
        raise ValueError("'knn' must hold tensors 'index' and 'sim'")
    if index.dim() != 2 or sim.shape != index.shape:
        raise ValueError(
            f"'knn.index' and 'knn.sim' must both have shape [N, k] "
            f'(got {list(index.shape)} and {list(sim.shape)})'
        )
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"'knn.index' must have an integer dtype (got {index.dtype})")
    if not sim.dtype.is_floating_point:
        raise ValueError(f"'knn.sim' must have a floating dtype (got {sim.dtype})")
    index = index.detach().cpu().long()
    if index.numel() > 0 and int(index.max()) >= index.size(0):
        raise ValueError(
            f"'knn.index' refers to node {int(index.max())}, out of range for "
            f'{index.size(0)} nodes'
        )
    if index.numel() > 0 and int(index.min()) < 0:
        raise ValueError(
            "'knn.index' contains negative ids; pass full kNN lists (knn() and "
            'read_knn() never pad with -1)'
        )
    sim = sim.detach().cpu()
    if not bool(torch.isfinite(sim).all()):
        raise ValueError("'knn.sim' contains NaN or infinite similarities")
    return index, sim


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"'{name}' must lie in [0, 1] (got {value})")
    return value


def early_stop_mask(
    index: Tensor,
    score: Tensor,
    threshold: float,
    nodes: Tensor | None = None,
) -> Tensor:
    r"""Which entries of a kNN list :func:`early_stop_links` links, as a
    boolean :obj:`[B, k]` mask: row :math:`i` is scanned in its stored order,
    entries that are :math:`i` itself are skipped, and the scan stops at the
    first neighbour with :obj:`score[i, r] < threshold` (or padded with
    :obj:`-1`). Vectorised as the prefix of each row where the pass mask
    (self counting as a pass) has not yet failed, :math:`\mathrm{cummin}`
    along the row.

    Args:
        index (torch.Tensor): Neighbour ids :obj:`LongTensor[B, k]`.
        score (torch.Tensor): Edge scores :obj:`Tensor[B, k]`.
        threshold (float): The minimum score of a linked neighbour.
        nodes (torch.Tensor, optional): The node of every row :obj:`[B]`
            (default: rows :math:`0, \ldots, B - 1`).
    """
    if nodes is None:
        nodes = torch.arange(index.size(0), device=index.device)
    is_self = index == nodes.view(-1, 1)
    passed = ((score >= threshold) & (index >= 0)) | is_self
    return passed.to(torch.uint8).cummin(dim=1).values.bool() & ~is_self


def early_stop_links(
    index: Tensor,
    score: Tensor,
    threshold: float,
    chunk_size: int = 1 << 16,
) -> tuple[Tensor, Tensor]:
    r"""Early-stopped thresholding of a kNN list, vectorised: the links of
    :func:`early_stop_mask`, in chunks of rows.

    Args:
        index (torch.Tensor): Neighbour ids :obj:`LongTensor[N, k]`.
        score (torch.Tensor): Edge scores :obj:`Tensor[N, k]`.
        threshold (float): The minimum score of a linked neighbour.
        chunk_size (int, optional): Rows processed at once.
            (default: :obj:`65536`)

    Returns:
        (edge_index, score): The links node :math:`\to` neighbour,
        :obj:`LongTensor[2, M]` ordered by node then rank, and their scores
        :obj:`Tensor[M]`.
    """
    num_nodes = index.size(0)
    sources, targets, scores = [], [], []
    for start in range(0, num_nodes, chunk_size):
        idx = index[start : start + chunk_size]
        val = score[start : start + chunk_size]
        nodes = torch.arange(start, start + idx.size(0))
        keep = early_stop_mask(idx, val, threshold, nodes)
        row, col = keep.nonzero(as_tuple=True)
        sources.append(row + start)
        targets.append(idx[row, col])
        scores.append(val[row, col])
    if not sources:
        return index.new_empty(2, 0), score.new_empty(0)
    edge_index = torch.stack([torch.cat(sources), torch.cat(targets)], dim=0)
    return edge_index, torch.cat(scores)


def infomap_knn(
    knn: KNN,
    threshold: float = DEFAULT_THRESHOLDS['infomap-knn'],
    *,
    seed: int = 123,
    num_trials: int = 1,
    progress: bool = False,
    engine: str = 'local',
    address: str | None = None,
) -> Tensor:
    r"""Face clustering by Infomap on an early-stopped kNN graph
    (face-cluster-by-infomap).

    Node :math:`i` is linked to its neighbours :math:`j`, in the order of its
    kNN list (itself skipped), with weight :math:`\cos_{ij}` while
    :math:`\cos_{ij} \geq` :obj:`threshold`; the scan stops at the first
    neighbour below the threshold (see :func:`early_stop_links`). Directed
    two-level Infomap on these links node :math:`\to` neighbour gives the
    clusters; a node with no link of its own is a singleton (as in the
    reference code, even when other nodes link to it).

    Args:
        knn (KNN): The kNN graph, rows sorted by decreasing cosine similarity.
        threshold (float, optional): Minimum cosine of a link, in
            :math:`[0, 1]`. The reference default is :obj:`0.58` (MS-Celeb-1M
            part1_test, :math:`k = 50`). (default: :obj:`0.58`)
        seed (int, optional): Infomap's seed. (default: :obj:`123`)
        num_trials (int, optional): Infomap trials. (default: :obj:`1`)
        progress (bool, optional): Show progress bars.
            (default: :obj:`False`)
        engine (str, optional): :obj:`'local'` or :obj:`'ray'`. Beyond the
            kNN search (:func:`~torch_geometric_sdt.nn.knn.knn`, which the
            Ray engine distributes) this method has nothing to distribute:
            its links are one vectorised pass over the lists and Infomap
            runs on the driver, so both engines run it here.
            (default: :obj:`'local'`)
        address (str, optional): Accepted with :obj:`engine='ray'` for a
            uniform call; unused. (default: :obj:`None`)

    Returns:
        torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0.
    """
    threshold = _check_unit('threshold', threshold)
    check_engine(engine)
    if address is not None and engine != 'ray':
        raise ValueError("address is an option of engine='ray'")
    index, sim = _check_knn(knn)
    edge_index, weight = early_stop_links(index, sim, threshold)
    return cluster_links(
        edge_index,
        weight,
        index.size(0),
        seed=seed,
        num_trials=num_trials,
        progress=progress,
    )


def fc_es(
    knn: KNN,
    threshold: float = DEFAULT_THRESHOLDS['fc-es'],
    *,
    sigma: float = 0.5,
    seed: int = 123,
    num_trials: int = 1,
    progress: bool = False,
    engine: str = 'local',
    address: str | None = None,
) -> Tensor:
    r"""FC-ES: face clustering via early stopping on neighbour-based edge
    probabilities (`"Face Clustering via Early Stopping and Edge Recall"
    <https://arxiv.org/abs/2408.13431>`_, unsupervised variant).

    Every kNN edge :math:`(i, j)` is scored by the neighbour-based edge
    probability (NEP): cosines clipped to :math:`[0, 1]` become distances
    :math:`d_{ij} = 2 - 2 \cos_{ij}`, then probabilities normalised over the
    full kNN list (self included),

    .. math::
        p_{ij} = \frac{\exp(-d_{ij} / \sigma)}
            {\sum_{m \in \mathcal{N}_i} \exp(-d_{im} / \sigma)}, \qquad
        J_{ij} = \frac{1}{2} \sum_{m \in \mathcal{N}_i \cap \mathcal{N}_j}
            (p_{im} + p_{jm}) \in [0, 1],

    computed by
    :func:`~torch_geometric_sdt.utils.topk_jaccard.topk_jaccard` with
    :obj:`topk=None` (the full lists), :obj:`transform='exp'` and
    :obj:`normalize='knn'`. Node :math:`i` is linked to its neighbours in kNN order
    (itself skipped; the list is *not* re-sorted by :math:`J`) with weight
    :math:`J_{ij}` while :math:`J_{ij} \geq \theta`, stopping at the first
    edge below :math:`\theta`; directed two-level Infomap gives the clusters
    and nodes without a link of their own are singletons. This follows the
    authors' released code (scores clipped to :math:`[0, 1]`, kNN order,
    :math:`\sigma = 0.5`, :math:`\theta = 0.22` on MS-Celeb-1M with
    :math:`k = 80`); edge recall (FC-ESER) needs a trained model and is not
    part of this baseline.

    Args:
        knn (KNN): The kNN graph, rows sorted by decreasing cosine similarity,
            self at rank 0, distinct ids (checked by :func:`topk_jaccard`).
        threshold (float, optional): The early-stop threshold :math:`\theta`,
            the minimum edge probability of a link, in :math:`[0, 1]`.
            (default: :obj:`0.22`)
        sigma (float, optional): Temperature of the exponential transform.
            (default: :obj:`0.5`)
        seed (int, optional): Infomap's seed. (default: :obj:`123`)
        num_trials (int, optional): Infomap trials. (default: :obj:`1`)
        progress (bool, optional): Show progress bars.
            (default: :obj:`False`)
        engine (str, optional): :obj:`'ray'` scores the edges
            (:func:`nep_scores`) as tasks on a Ray cluster; the links and
            Infomap run here. Same result as :obj:`'local'`.
            (default: :obj:`'local'`)
        address (str, optional): The Ray cluster to join
            (:func:`~torch_geometric_sdt.utils.distributed.connect`).
            (default: :obj:`None`)

    Returns:
        torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0.
    """
    threshold = _check_unit('threshold', threshold)
    if not sigma > 0:
        raise ValueError(f"'sigma' must be positive (got {sigma})")
    index, sim = _check_knn(knn)
    score = nep_scores(
        index, sim, sigma, progress=progress, engine=engine, address=address
    )
    edge_index, weight = early_stop_links(index, score, threshold)
    return cluster_links(
        edge_index,
        weight,
        index.size(0),
        seed=seed,
        num_trials=num_trials,
        progress=progress,
    )


def nep_scores(
    index: Tensor,
    sim: Tensor,
    sigma: float = 0.5,
    progress: bool = False,
    *,
    engine: str = 'local',
    address: str | None = None,
) -> Tensor:
    r"""FC-ES's neighbour-based edge probability :math:`J_{ij}` of every
    kNN edge, clipped to :math:`[0, 1]`, :obj:`[N, k]` (see :func:`fc_es`);
    with :obj:`engine='ray'` as a map stage over blocks of rows
    (:func:`~torch_geometric_sdt.utils.topk_jaccard_ray`), with the same
    result."""
    check_engine(engine)
    if address is not None and engine != 'ray':
        raise ValueError("address is an option of engine='ray'")
    options = dict(
        transform='exp', distance='sqeuclidean', normalize='knn', sigma=sigma
    )
    if engine == 'ray':
        score = topk_jaccard_ray(
            index,
            sim.clamp(0.0, 1.0),
            address=address,
            name='fc-es scores',
            progress=progress,
            **options,
        )
    else:
        score = topk_jaccard(index, sim.clamp(0.0, 1.0), progress=progress, **options)
    return score.clamp(0.0, 1.0)


_DISPATCH = {'infomap-knn': infomap_knn, 'fc-es': fc_es}


def _baseline(method: str) -> Callable[..., Tensor]:
    if method not in _DISPATCH:
        raise ValueError(
            f'Unknown method {method!r}; valid methods are '
            f'{", ".join(repr(name) for name in BASELINE_METHODS)}'
        )
    return _DISPATCH[method]


def cluster_knn(
    knn: KNN,
    method: str = 'infomap-knn',
    *,
    engine: str = 'local',
    address: str | None = None,
    **params: Any,
) -> Tensor:
    r"""Clusters a kNN graph with the training-free baseline :obj:`method`.

    Args:
        knn (KNN): The kNN graph, rows sorted by decreasing cosine similarity.
        method (str, optional): One of
            :obj:`~torch_geometric_sdt.defaults.BASELINE_METHODS`:
            :obj:`'infomap-knn'` (:func:`infomap_knn`) or :obj:`'fc-es'`
            (:func:`fc_es`). (default: :obj:`'infomap-knn'`)
        engine (str, optional): :obj:`'local'` or :obj:`'ray'` (see the
            method). (default: :obj:`'local'`)
        address (str, optional): The Ray cluster to join.
            (default: :obj:`None`)
        **params (optional): Keyword arguments of that method; both take
            :obj:`threshold` (a cosine for :obj:`'infomap-knn'`, the edge
            probability :math:`\theta` for :obj:`'fc-es'`).

    Returns:
        torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0.
    """
    return _baseline(method)(knn, engine=engine, address=address, **params)


#: Threshold grids searched by :func:`tune_threshold`.
THRESHOLD_GRIDS: dict[str, tuple[float, ...]] = {
    'infomap-knn': tuple(round(0.4 + 0.025 * i, 3) for i in range(21)),
    'fc-es': tuple(round(0.05 + 0.025 * i, 3) for i in range(19)),
}


def tune_threshold(
    knn: KNN,
    y: Tensor | np.ndarray,
    method: str = 'infomap-knn',
    grid: tuple[float, ...] | None = None,
    metric: str = 'pairwise_fscore',
    **params: Any,
) -> tuple[float, list[dict[str, Any]]]:
    r"""Chooses the threshold of a baseline on labelled data: clusters
    :obj:`knn` at every threshold of :obj:`grid` and keeps the best
    :obj:`metric`. Use it on training identities only, then apply the
    threshold to the evaluation data.

    Args:
        knn (KNN): The kNN graph of the labelled data.
        y (torch.Tensor or numpy.ndarray): Their labels.
        method (str, optional): A name in
            :obj:`~torch_geometric_sdt.defaults.BASELINE_METHODS`.
            (default: :obj:`'infomap-knn'`)
        grid (tuple, optional): Thresholds to try (default:
            :obj:`THRESHOLD_GRIDS[method]`).
        metric (str, optional): A key of
            :func:`~torch_geometric_sdt.metrics.evaluate` to maximise.
            (default: :obj:`'pairwise_fscore'`)
        **params (optional): Other options of the method.

    Returns:
        (threshold, sweep): The best threshold and every threshold's metrics.
    """
    run = _baseline(method)
    grid = THRESHOLD_GRIDS[method] if grid is None else tuple(grid)
    if not grid:
        raise ValueError('grid must hold at least one threshold')
    sweep = threshold_sweep(lambda t: run(knn, threshold=t, **params), grid, y)
    return choose_threshold(sweep, metric=metric), sweep


__all__ = [
    'DEFAULT_THRESHOLDS',
    'THRESHOLD_GRIDS',
    'tune_threshold',
    'cluster_knn',
    'infomap_knn',
    'fc_es',
    'early_stop_links',
    'early_stop_mask',
    'nep_scores',
]
