r"""The front end of the kNN search: :class:`KNN`, :func:`knn`,
:func:`knn_graph`, input checks and the choice of backend."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.distributed import (
    DEFAULT_BLOCK_ROWS,
    FeatureShards,
    check_engine,
)
from torch_geometric_sdt.utils.validation import check_flow

from .candidates import finalize_candidates
from .common import (
    METRICS,
    check_no_options,
    check_positive_int,
    l2_exponent,
    max_abs_rows,
    prepare,
    scale_pow2,
)
from .exact import DEFAULT_COL_CHUNK_SIZE, exact_knn, exact_knn_symmetric
from .faiss_search import FAISS_BACKENDS, faiss_search
from .nndescent import nndescent_search

#: The similarity measures of :func:`knn`.
# BACKENDS and AUTO_EXACT_MAX_NODES are documented where the package
# re-exports them.
BACKENDS = ('auto', 'exact', *FAISS_BACKENDS, 'pynndescent')
AUTO_EXACT_MAX_NODES = 200_000
AUTO_NNDESCENT_OPTIONS: dict[str, Any] = {'n_iters': 4, 'max_candidates': 30}


class KNN(NamedTuple):
    r"""A k-nearest-neighbour graph in fixed-width form.

    Row :math:`i` lists the :math:`k` neighbours of node :math:`i` sorted by
    descending similarity, with :math:`i` itself at rank 0.

    Attributes:
        index (torch.Tensor): Neighbour ids, :obj:`LongTensor[N, k]`.
        sim (torch.Tensor): Similarities (cosine, or negative squared
            Euclidean distance for ``metric='l2'``), :obj:`Tensor[N, k]`,
            descending along each row.
    """

    index: Tensor
    sim: Tensor

    @property
    def num_nodes(self) -> int:
        return self.index.size(0)

    @property
    def k(self) -> int:
        return self.index.size(1)

    def to_edge_index(
        self,
        flow: str = 'source_to_target',
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""Converts to PyG's COO form.

        With :obj:`flow='source_to_target'` every target :math:`i` has the
        :math:`k` sources :obj:`index[i]` (edges :math:`j \to i`), as in
        :func:`torch_geometric.nn.knn_graph`.

        Returns:
            (edge_index, rank, sim): :obj:`LongTensor[2, N * k]`, the rank of
            each edge in its target's list :obj:`LongTensor[N * k]`, and its
            similarity :obj:`Tensor[N * k]`. Edges are ordered by target, then
            rank.
        """
        check_flow(flow)
        num_nodes, k = self.index.shape
        device = self.index.device
        target = torch.arange(num_nodes, device=device).repeat_interleave(k)
        source = self.index.reshape(-1)
        rank = torch.arange(k, device=device).repeat(num_nodes)
        if flow == 'source_to_target':
            edge_index = torch.stack([source, target], dim=0)
        else:
            edge_index = torch.stack([target, source], dim=0)
        return edge_index, rank, self.sim.reshape(-1)


def knn(
    x: Tensor | np.ndarray,
    k: int,
    *,
    metric: str = 'cosine',
    backend: str = 'auto',
    chunk_size: int | None = None,
    progress: bool = False,
    engine: str = 'local',
    address: str | None = None,
    **backend_kwargs: Any,
) -> KNN:
    r"""Computes the :math:`k` nearest neighbours of every row of :obj:`x`
    among the rows of :obj:`x`, in the fixed-width :class:`KNN` form.

    :math:`k` counts the point itself: :obj:`k=80` gives the point at rank 0
    followed by its 79 nearest other points, as is usual in face clustering.
    The similarity is

    .. math::
        s_{ij} = \frac{\mathbf{x}_i^{\top} \mathbf{x}_j}
        {\|\mathbf{x}_i\| \, \|\mathbf{x}_j\|}
        \quad (\text{cosine}), \qquad
        s_{ij} = -\|\mathbf{x}_i - \mathbf{x}_j\|_2^2
        \quad (\text{l2}),

    so that "descending similarity" means "nearest first" for both metrics.
    Cosine similarities are clipped to :math:`[-1, 1]` and l2 similarities to
    :math:`(-\infty, 0]`; the self entry is exactly :math:`1` (cosine) or
    :math:`0` (l2).

    Ordering is deterministic: the point itself is always at rank 0, even when
    exact duplicates tie with it; any other ties are broken by ascending id.
    The exact backend applies the id rule to ties at the :math:`k`-th place as
    well (it picks the smallest tied ids), approximate backends and
    :obj:`'faiss'` apply it to the ids they return.

    The :obj:`'exact'` backend uses the symmetry of the similarity matrix by
    default: it computes square blocks :math:`\mathbf{X}_I \mathbf{X}_J^{\top}`
    for :math:`J \ge I` only, and each block serves the rows of :math:`I` and,
    transposed, those of :math:`J` (half the matrix products); a block entry
    is tested against each row's current :math:`(k+1)`-th best, in groups of
    16 screened by their maximum, so that few entries are ever sorted. Its
    peak extra memory is one :math:`B \times B` block (:math:`B` =
    :obj:`chunk_size`, by default :math:`\sqrt{}` :obj:`DEFAULT_BLOCK_NUMEL`,
    so 128 MiB in float32) plus the :math:`N \times (k + 1)` running lists.
    With :obj:`col_chunk_size` (or :obj:`symmetric=False`) it instead runs
    query chunks of :obj:`chunk_size` rows against column blocks of
    :obj:`col_chunk_size` rows. Block shapes change the summation order of
    the matrix product, so other block sizes give the same ids (up to
    neighbours whose similarities agree to the last bit, *e.g.* exact
    duplicates) and similarities equal up to float rounding.

    :obj:`backend='auto'` picks :obj:`'exact'` for
    :math:`N \le` :obj:`AUTO_EXACT_MAX_NODES` (200,000) or when :obj:`x` lies
    on a GPU, and :obj:`'pynndescent'` otherwise (see
    :func:`resolve_backend`); NN-descent chosen by :obj:`'auto'` runs with
    :obj:`AUTO_NNDESCENT_OPTIONS` (4 iterations of at most 30 candidates;
    options given here take precedence), :obj:`backend='pynndescent'` with
    pynndescent's own defaults. On synthetic 256-d faces with :math:`k = 80`
    at 100K points (``benchmarks/knn.py --sweep 100000 --e2e``) NN-descent
    with its defaults reached recall@k 0.987 in 44 s; the :obj:`'auto'`
    options reached 0.893 in 24 s, and the shipped SDT clustered both graphs
    as well as the exact one (pairwise F 0.9715 and 0.9715, BCubed F 0.9470
    and 0.9471): the lists' far ends, which the cheaper descent misses, are
    nearly equidistant noise the clustering does not need. faiss HNSW with
    its defaults reached 0.943 in 68 s and IVF needed 78 s for 0.959. A stop
    request (Ctrl-C,
    ``SIGTERM``) cannot interrupt NN-descent's compiled code: it is held back
    and takes effect when the descent returns (see
    :mod:`torch_geometric_sdt.utils.interrupt`).

    **Input validation.** Rows holding NaN or Inf are refused, as are zero
    rows with :obj:`metric='cosine'` (they have no direction). Rows that are
    not unit-norm are *normalised*, not refused: cosine similarity does not
    depend on the norm, so embeddings that were never normalised give the
    same neighbours as normalised ones, whatever their magnitude: a row of
    huge or tiny values is first scaled by a power of two (exactly) so that
    its squared norm can neither overflow nor underflow. For
    :obj:`metric='l2'` a set of huge or tiny values is searched scaled by one
    power of two, which scales every squared distance exactly and so keeps
    the neighbours, and the similarities are reported in the units of
    :obj:`x` (those of tiny values may underflow to :math:`0`); values whose
    squared distances overflow the dtype (above about
    :math:`\sqrt{\text{max} / 4D}`, :math:`5.8 \cdot 10^{17}` in float32 at
    :math:`D = 256`) are refused. Exact duplicates are allowed (ties are
    ordered as above). :math:`N = 0`, a non-integer :obj:`k`,
    :math:`k \le 0` and :math:`k \ge N` (so also :math:`N = 1`) raise.

    Args:
        x (torch.Tensor or numpy.ndarray): Points :math:`[N, D]`, float16,
            bfloat16, float32 or float64. Computation is in float32 unless
            :obj:`x` is float64. Any device: :obj:`'exact'` runs on the
            device of :obj:`x`, the other backends on the CPU, and the result
            is moved to the device of :obj:`x`.
        k (int): Neighbours per point, the point itself included;
            :math:`1 \le k < N`.
        metric (str, optional): :obj:`'cosine'` (rows are normalised
            internally) or :obj:`'l2'`. (default: :obj:`'cosine'`)
        backend (str, optional): :obj:`'auto'`, :obj:`'exact'`,
            :obj:`'faiss'`, :obj:`'faiss-hnsw'`, :obj:`'faiss-ivf'` (these
            three need faiss: ``pip install torch_geometric_sdt[faiss]``) or
            :obj:`'pynndescent'`. (default: :obj:`'auto'`)
        chunk_size (int, optional): For :obj:`'exact'`, the side of the
            square blocks (or the query rows per chunk with
            :obj:`col_chunk_size`); the default keeps one similarity block
            within :obj:`DEFAULT_BLOCK_NUMEL` elements. For the faiss backends it is
            the number of queries per search call (default :obj:`65536`).
            (default: :obj:`None`)
        progress (bool, optional): Shows a progress bar. (default:
            :obj:`False`)
        engine (str, optional): :obj:`'local'` (this process) or
            :obj:`'ray'`: the exact search sharded over a Ray cluster
            (:func:`~torch_geometric_sdt.nn.knn.sharded.sharded_knn`; needs
            ``pip install torch_geometric_sdt[ray]``). The Ray engine
            searches exactly whatever :obj:`backend` says (:obj:`'auto'` or
            :obj:`'exact'`; the approximate backends raise), gives the ids of
            the local query-chunk path and returns the result on the CPU.
            (default: :obj:`'local'`)
        address (str, optional): The Ray cluster to join
            (:func:`~torch_geometric_sdt.utils.distributed.connect`;
            :obj:`None`: the running session, ``RAY_ADDRESS`` or a new local
            one). (default: :obj:`None`)
        **backend_kwargs (optional): Backend options.
            :obj:`'exact'`: :obj:`symmetric` (default :obj:`True` unless
            :obj:`col_chunk_size` is given) and :obj:`col_chunk_size`
            (default :obj:`DEFAULT_COL_CHUNK_SIZE`, query-chunk path only).
            :obj:`'faiss-hnsw'`: :obj:`M` (default :obj:`32`),
            :obj:`ef_construction` (default :obj:`80`), :obj:`ef_search`
            (default :obj:`max(128, 2 * k)`).
            :obj:`'faiss-ivf'`: :obj:`nlist` (default
            :math:`\min(\lceil 4 \sqrt{N} \rceil, \lfloor N / 39 \rfloor)`,
            so that k-means has 39 training points per list),
            :obj:`nprobe` (default
            :obj:`32`).
            :obj:`'pynndescent'`: :obj:`random_state` (default :obj:`0`) and
            any other :class:`pynndescent.NNDescent` argument.

    Returns:
        :class:`KNN`: :obj:`index` :obj:`LongTensor[N, k]` and :obj:`sim`
        :obj:`Tensor[N, k]` (float32, or float64 for float64 input).

    Raises:
        ValueError: On bad input (shape, dtype, NaN/Inf rows, zero rows with
            :obj:`metric='cosine'`, values too large for :obj:`metric='l2'`,
            :obj:`k` out of range, unknown metric, backend or backend
            option).
        ImportError: If a faiss backend is requested and faiss is not
            installed.
    """
    check_engine(engine)
    if engine == 'ray':
        return _knn_ray(
            x, k, metric, backend, chunk_size, progress, address, backend_kwargs
        )
    if address is not None:
        raise ValueError("address is an option of engine='ray'")
    if isinstance(x, FeatureShards):
        x = np.concatenate([x.read(p) for p in range(len(x))])
    x, device = prepare(x, metric)
    num_nodes = x.size(0)
    if num_nodes == 0:
        raise ValueError('x has no rows (N = 0): there are no points to search')
    check_k(k, num_nodes)
    k = int(k)
    chosen = resolve_backend(backend, num_nodes, x.device)
    if backend == 'auto' and chosen == 'pynndescent':
        backend_kwargs = {**AUTO_NNDESCENT_OPTIONS, **backend_kwargs}
    backend = chosen
    exponent = 0
    if metric == 'l2':
        x, exponent = scale_for_l2(x)
    index, sim = dispatch(x, k, metric, backend, chunk_size, progress, backend_kwargs)
    if exponent != 0:
        sim = scale_pow2(sim, -2 * exponent)
    return KNN(index.to(device), sim.to(device))


def _knn_ray(
    x: Tensor | np.ndarray | FeatureShards,
    k: int,
    metric: str,
    backend: str,
    chunk_size: int | None,
    progress: bool,
    address: str | None,
    options: dict[str, Any],
) -> KNN:
    # knn(engine='ray'): the sharded exact search.
    from .sharded import sharded_knn

    if metric not in METRICS:
        raise ValueError(f'unknown metric {metric!r} (expected one of {METRICS})')
    if backend not in ('auto', 'exact'):
        raise ValueError(
            f"engine='ray' searches exactly: backend must be 'auto' or 'exact' "
            f'(got {backend!r})'
        )
    options = dict(options)
    col_chunk_size = options.pop('col_chunk_size', DEFAULT_COL_CHUNK_SIZE)
    block_rows = options.pop('block_rows', None)
    options.pop('symmetric', None)
    check_no_options("engine='ray'", options)
    check_positive_int('col_chunk_size', col_chunk_size)
    if block_rows is not None:
        check_positive_int('block_rows', block_rows)
    if chunk_size is not None:
        check_positive_int('chunk_size', chunk_size)
    if not isinstance(x, FeatureShards):
        if not isinstance(x, (Tensor, np.ndarray)):
            raise ValueError(
                'x must be a torch.Tensor, numpy.ndarray or FeatureShards '
                f'(got {type(x).__name__})'
            )
        if x.ndim != 2:
            raise ValueError(
                f'x must be 2-D [num_points, dim] (got shape {tuple(x.shape)})'
            )
        if x.shape[0] == 0:
            raise ValueError('x has no rows (N = 0): there are no points to search')
        x = FeatureShards.from_array(x, block_rows or DEFAULT_BLOCK_ROWS)
    check_k(k, x.num_rows)
    index, sim = sharded_knn(
        x,
        int(k),
        metric,
        address=address,
        block_rows=block_rows,
        chunk_size=chunk_size,
        col_chunk_size=col_chunk_size,
        progress=progress,
    )
    return KNN(index, sim)


def knn_graph(
    x: Tensor,
    k: int,
    batch: Tensor | None = None,
    loop: bool = False,
    flow: str = 'source_to_target',
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: int | None = None,
    *,
    backend: str = 'auto',
) -> Tensor:
    r"""Computes graph edges to the nearest :obj:`k` points, with the same
    signature, semantics and edge orientation as
    :func:`torch_geometric.nn.knn_graph`, but without :obj:`torch-cluster` or
    :obj:`pyg-lib`.

    With :obj:`flow='source_to_target'` each target node :math:`i` receives
    edges :math:`j \to i` from its :math:`k` nearest points :math:`j`; with
    :obj:`loop=False` the point itself is excluded, so these are :math:`k`
    other points. Graphs of the mini-batch :obj:`batch` are handled
    separately; a graph with fewer points than requested gets all of them.
    Edges are ordered by target, then by ascending distance (ties by
    ascending id).

    Args:
        x (torch.Tensor): Node feature matrix
            :math:`\mathbf{X} \in \mathbb{R}^{N \times F}`.
        k (int): The number of neighbors.
        batch (torch.Tensor, optional): Batch vector
            :math:`\mathbf{b} \in {\{ 0, \ldots, B-1\}}^N`, which assigns each
            node to a specific example. (default: :obj:`None`)
        loop (bool, optional): If :obj:`True`, the graph will contain
            self-loops (the point itself counts among the :obj:`k`).
            (default: :obj:`False`)
        flow (str, optional): The flow direction when using in combination with
            message passing (:obj:`"source_to_target"` or
            :obj:`"target_to_source"`). (default: :obj:`"source_to_target"`)
        cosine (bool, optional): If :obj:`True`, will use the cosine
            distance instead of euclidean distance to find nearest neighbors.
            (default: :obj:`False`)
        num_workers (int, optional): Accepted for compatibility; the number
            of threads is :func:`torch.get_num_threads`. (default: :obj:`1`)
        batch_size (int, optional): The number of examples :math:`B`.
            Automatically calculated if not given. (default: :obj:`None`)
        backend (str, optional): The backend of :func:`knn`.
            (default: :obj:`'auto'`)

    :rtype: :class:`torch.Tensor` (:obj:`LongTensor[2, E]`)
    """
    check_flow(flow)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int):
        raise ValueError(f'num_workers must be an int (got {num_workers!r})')
    metric = 'cosine' if cosine else 'l2'
    x, device = prepare(x, metric)
    if metric == 'l2':
        x, _ = scale_for_l2(x)
    num_nodes = x.size(0)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f'k must be a positive integer (got {k!r})')
    k = int(k)
    k_search = k if loop else k + 1

    if batch is None:
        groups = [torch.arange(num_nodes, device=x.device)]
    else:
        batch = torch.as_tensor(batch, device=x.device)
        if batch.dim() != 1 or batch.numel() != num_nodes:
            raise ValueError(
                f'batch must have shape [{num_nodes}] (got {tuple(batch.shape)})'
            )
        if batch.dtype.is_floating_point or batch.dtype == torch.bool:
            raise ValueError(f'batch must be an integer tensor (got {batch.dtype})')
        if num_nodes > 0 and int(batch.min()) < 0:
            raise ValueError('batch must not contain negative values')
        num_graphs = int(batch.max()) + 1 if num_nodes > 0 else 0
        if batch_size is not None:
            if batch_size < num_graphs:
                raise ValueError(
                    f'batch_size={batch_size} is smaller than the number of '
                    f'graphs in batch ({num_graphs})'
                )
        perm = torch.argsort(batch, stable=True)
        counts = torch.bincount(batch, minlength=num_graphs).tolist()
        groups = [g for g in torch.split(perm, counts) if g.numel() > 0]

    sources, targets = [], []
    for nodes in groups:
        n = nodes.numel()
        kg = min(k_search, n)
        xg = x[nodes]
        name = resolve_backend(backend, n, x.device)
        if n == kg:  # Every point of the graph is a neighbour.
            name = 'exact'
        index, _ = dispatch(xg, kg, metric, name, None, False, {})
        if not loop:
            index = index[:, 1:]
        kk = index.size(1)
        targets.append(nodes.repeat_interleave(kk))
        sources.append(nodes[index.reshape(-1)])

    if len(sources) == 0:
        edge_index = torch.empty(2, 0, dtype=torch.long, device=x.device)
    else:
        edge_index = torch.stack([torch.cat(sources), torch.cat(targets)], dim=0)
    if flow == 'target_to_source':
        edge_index = edge_index.flip(0)
    return edge_index.to(device)


# Input handling and dispatch #################################################


def scale_for_l2(x: Tensor) -> tuple[Tensor, int]:
    r"""For :obj:`metric='l2'`: :obj:`x` times :math:`2^e` and :math:`e`,
    where :math:`e` brings the largest magnitude of :obj:`x` into
    :math:`[0.5, 1)` when it lies outside about :math:`[2^{-40}, 2^{40}]`
    (else :math:`e = 0` and :obj:`x` itself). A power of two scales every
    squared distance by :math:`4^e` exactly, so the neighbours are those of
    :obj:`x`; the similarities found are scaled back by :math:`4^{-e}`."""
    if x.numel() == 0:
        return x, 0
    exponent = l2_exponent(float(max_abs_rows(x).max()))
    if exponent == 0:
        return x, 0
    return scale_pow2(x, exponent).contiguous(), exponent


def check_k(k: Any, num_nodes: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f'k must be an integer (got {k!r})')
    if k <= 0:
        raise ValueError(f'k must be positive (got k={k})')
    if k >= num_nodes:
        raise ValueError(
            f'k={k} must be smaller than the number of points ({num_nodes}); '
            f'k counts the point itself'
        )


def resolve_backend(backend: str, num_nodes: int, device: torch.device) -> str:
    r"""The backend :func:`knn` runs for :obj:`backend` on :obj:`num_nodes`
    points on :obj:`device`: :obj:`'auto'` becomes :obj:`'exact'` for
    :math:`N \le` :obj:`AUTO_EXACT_MAX_NODES` or off the CPU and
    :obj:`'pynndescent'` otherwise; any other name of :obj:`BACKENDS` is
    returned as it is (installed or not).

    Raises:
        ValueError: If :obj:`backend` is not one of :obj:`BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r} (expected one of {BACKENDS})')
    if backend != 'auto':
        return backend
    if num_nodes <= AUTO_EXACT_MAX_NODES or device.type != 'cpu':
        return 'exact'
    return 'pynndescent'


def dispatch(
    x: Tensor,
    k: int,
    metric: str,
    backend: str,
    chunk_size: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    r"""Runs the resolved :obj:`backend`; returns (index, sim) in the
    :class:`KNN` form."""
    if chunk_size is not None:
        check_positive_int('chunk_size', chunk_size)
    if backend == 'exact':
        col_chunk_size = kwargs.pop('col_chunk_size', None)
        symmetric = kwargs.pop('symmetric', col_chunk_size is None)
        check_no_options(backend, kwargs)
        if symmetric:
            return exact_knn_symmetric(x, k, metric, chunk_size, progress)
        return exact_knn(
            x,
            k,
            metric,
            chunk_size=chunk_size,
            col_chunk_size=col_chunk_size,
            progress=progress,
        )
    if backend in FAISS_BACKENDS:
        cand, sim = faiss_search(x, k, metric, backend, chunk_size, progress, kwargs)
    else:
        cand, sim = nndescent_search(x, k, metric, kwargs)
    return finalize_candidates(x, cand.to(x.device), sim.to(x.device), k, metric)
