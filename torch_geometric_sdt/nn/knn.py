r"""k-nearest-neighbour graphs in the fixed-width ``[N, k]`` form.

:func:`knn` returns a :class:`KNN` (neighbour ids and similarities, self at
rank 0), the form the rest of the pipeline works on; :func:`knn_graph` is a
drop-in replacement for :func:`torch_geometric.nn.knn_graph` that needs
neither :obj:`torch-cluster` nor :obj:`pyg-lib`.

Backends:

* :obj:`'exact'`: pure PyTorch on the input's device, chunked matrix products
  followed by an exact top-:math:`k` selection.
* :obj:`'faiss'`: exact flat index (:obj:`IndexFlatIP` / :obj:`IndexFlatL2`).
* :obj:`'faiss-hnsw'`, :obj:`'faiss-ivf'`: approximate faiss indices.
* :obj:`'pynndescent'`: approximate nearest-neighbour descent.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import torch_geometric_sdt.typing as sdt_typing

METRICS = ('cosine', 'l2')
BACKENDS = ('auto', 'exact', 'faiss', 'faiss-hnsw', 'faiss-ivf', 'pynndescent')

#: :obj:`backend='auto'` uses the exact backend up to this many points.
AUTO_EXACT_MAX_NODES = 200_000
#: Default number of columns (database points) per similarity block.
DEFAULT_COL_CHUNK_SIZE = 32_768
#: Default number of elements of one similarity block (rows x columns).
DEFAULT_BLOCK_NUMEL = 2**25

# The symmetric exact search screens groups of this many consecutive
# similarities by their maximum before testing single entries.
_GROUP = 16


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
        if flow not in ('source_to_target', 'target_to_source'):
            raise ValueError(
                f"flow must be 'source_to_target' or 'target_to_source' (got {flow!r})"
            )
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
    on a GPU, and otherwise :obj:`'pynndescent'` if installed, else
    :obj:`'faiss-hnsw'` if faiss is installed, else :obj:`'exact'`. On
    synthetic 256-d faces with :math:`k = 80` (``benchmarks/knn.py
    --sweep``), NN-descent reached recall@k 0.987 in 31 s at 100K points
    where faiss HNSW with its defaults here reached 0.943 in 68 s and IVF
    needed 78 s for 0.959.

    **Input validation.** Rows holding NaN or Inf are refused, as are zero
    rows with :obj:`metric='cosine'` (they have no direction). Rows that are
    not unit-norm are *normalised*, not refused: cosine similarity does not
    depend on the norm, so embeddings that were never normalised give the
    same neighbours as normalised ones. Exact duplicates are allowed (ties
    are ordered as above). :math:`N = 0`, a non-integer :obj:`k`,
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
            :obj:`'faiss'`, :obj:`'faiss-hnsw'`, :obj:`'faiss-ivf'` or
            :obj:`'pynndescent'`. (default: :obj:`'auto'`)
        chunk_size (int, optional): For :obj:`'exact'`, the side of the
            square blocks (or the query rows per chunk with
            :obj:`col_chunk_size`); the default keeps one similarity block
            within :obj:`DEFAULT_BLOCK_NUMEL` elements. For the faiss backends it is
            the number of queries per search call (default :obj:`65536`).
            (default: :obj:`None`)
        progress (bool, optional): Shows a progress bar. (default:
            :obj:`False`)
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
            :obj:`metric='cosine'`, :obj:`k` out of range, unknown metric,
            backend or backend option).
        ImportError: If the requested backend is not installed.
    """
    x, device = _prepare(x, metric)
    num_nodes = x.size(0)
    if num_nodes == 0:
        raise ValueError('x has no rows (N = 0): there are no points to search')
    _check_k(k, num_nodes)
    k = int(k)
    backend = _resolve_backend(backend, num_nodes, x.device)
    index, sim = _dispatch(x, k, metric, backend, chunk_size, progress, backend_kwargs)
    return KNN(index.to(device), sim.to(device))


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
    if flow not in ('source_to_target', 'target_to_source'):
        raise ValueError(
            f"flow must be 'source_to_target' or 'target_to_source' (got {flow!r})"
        )
    if isinstance(num_workers, bool) or not isinstance(num_workers, int):
        raise ValueError(f'num_workers must be an int (got {num_workers!r})')
    metric = 'cosine' if cosine else 'l2'
    x, device = _prepare(x, metric)
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
        name = _resolve_backend(backend, n, x.device)
        if n == kg:  # Every point of the graph is a neighbour.
            name = 'exact'
        index, _ = _dispatch(xg, kg, metric, name, None, False, {})
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


# Input handling ##############################################################


def _prepare(x: Tensor | np.ndarray, metric: str) -> tuple[Tensor, torch.device]:
    r"""Validates :obj:`x` and returns it as a float32/float64 tensor (rows
    normalised for cosine), together with the device of the result."""
    if metric not in METRICS:
        raise ValueError(f'unknown metric {metric!r} (expected one of {METRICS})')
    if isinstance(x, np.ndarray):
        if x.dtype.kind != 'f':
            raise ValueError(f'x must be a floating-point array (got dtype {x.dtype})')
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        raise ValueError(
            f'x must be a torch.Tensor or numpy.ndarray (got {type(x).__name__})'
        )
    if not x.dtype.is_floating_point:
        raise ValueError(f'x must be a floating-point tensor (got dtype {x.dtype})')
    if x.dim() != 2:
        raise ValueError(
            f'x must be 2-D [num_points, dim] (got shape {tuple(x.shape)})'
        )
    if x.size(1) == 0:
        raise ValueError('x must have at least one feature column')
    device = x.device
    if x.dtype != torch.float64:
        x = x.to(torch.float32)

    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().view(-1)
        raise ValueError(
            f'x has {bad.numel()} row(s) with NaN or Inf values '
            f'(first: row {int(bad[0])})'
        )
    if metric == 'cosine':
        norm = torch.linalg.vector_norm(x, dim=1)
        zero = norm == 0
        if bool(zero.any()):
            bad = zero.nonzero().view(-1)
            raise ValueError(
                f'x has {bad.numel()} zero row(s), which have no direction '
                f"for metric='cosine' (first: row {int(bad[0])})"
            )
        x = x / norm.unsqueeze(1)
    return x.contiguous(), device


def _check_k(k: Any, num_nodes: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f'k must be an integer (got {k!r})')
    if k <= 0:
        raise ValueError(f'k must be positive (got k={k})')
    if k >= num_nodes:
        raise ValueError(
            f'k={k} must be smaller than the number of points ({num_nodes}); '
            f'k counts the point itself'
        )


def _resolve_backend(backend: str, num_nodes: int, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r} (expected one of {BACKENDS})')
    if backend != 'auto':
        return backend
    if num_nodes <= AUTO_EXACT_MAX_NODES or device.type != 'cpu':
        return 'exact'
    if sdt_typing.WITH_PYNNDESCENT:
        return 'pynndescent'
    if sdt_typing.WITH_FAISS:
        return 'faiss-hnsw'
    return 'exact'


def _dispatch(
    x: Tensor,
    k: int,
    metric: str,
    backend: str,
    chunk_size: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size <= 0
    ):
        raise ValueError(f'chunk_size must be a positive int (got {chunk_size!r})')
    if backend == 'exact':
        col_chunk_size = kwargs.pop('col_chunk_size', None)
        symmetric = kwargs.pop('symmetric', col_chunk_size is None)
        _no_kwargs(backend, kwargs)
        if symmetric:
            return _exact_knn_symmetric(x, k, metric, chunk_size, progress)
        return _exact_knn(
            x,
            k,
            metric,
            chunk_size=chunk_size,
            col_chunk_size=col_chunk_size,
            progress=progress,
        )
    if backend.startswith('faiss'):
        cand, sim = _faiss_search(x, k, metric, backend, chunk_size, progress, kwargs)
    else:
        cand, sim = _pynndescent_search(x, k, metric, kwargs)
    return _finalize_candidates(x, cand.to(x.device), sim.to(x.device), k, metric)


def _no_kwargs(backend: str, kwargs: dict[str, Any]) -> None:
    if len(kwargs) > 0:
        raise ValueError(f'unknown option(s) {sorted(kwargs)} for backend {backend!r}')


# Exact backend ###############################################################


def _exact_knn(
    x: Tensor,
    k: int,
    metric: str,
    query: Tensor | None = None,
    chunk_size: int | None = None,
    col_chunk_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Exact top-:math:`k` by (similarity descending, id ascending) with the
    query itself first.

    For every chunk of query rows and every block of database rows, one
    matrix product gives the similarity block (cosine: :math:`\mathbf{Q}
    \mathbf{X}_b^{\top}`; l2: the ranking key :math:`2 \mathbf{Q}
    \mathbf{X}_b^{\top} - \|\mathbf{x}_j\|^2` via :func:`torch.addmm`), the
    query's own column is set to :math:`+\infty`, and the block's top-k is
    merged into a running top-k.

    Args:
        x (torch.Tensor): Prepared points :math:`[N, D]`.
        k (int): Neighbours per query, :math:`k \le N`.
        metric (str): :obj:`'cosine'` or :obj:`'l2'`.
        query (torch.Tensor, optional): Ids of the query rows (all if
            :obj:`None`).
        chunk_size (int, optional): Query rows per chunk.
        col_chunk_size (int, optional): Database rows per block.
        progress (bool): Shows a progress bar over query chunks.
    """
    num_nodes = x.size(0)
    device = x.device
    if col_chunk_size is None:
        col_chunk_size = DEFAULT_COL_CHUNK_SIZE
    if (
        isinstance(col_chunk_size, bool)
        or not isinstance(col_chunk_size, int)
        or col_chunk_size <= 0
    ):
        raise ValueError(
            f'col_chunk_size must be a positive int (got {col_chunk_size!r})'
        )
    num_blocks = math.ceil(num_nodes / col_chunk_size)
    width = math.ceil(num_nodes / num_blocks)  # Balanced column blocks.
    if chunk_size is None:
        chunk_size = max(1, DEFAULT_BLOCK_NUMEL // width)

    num_query = num_nodes if query is None else query.numel()
    sq = (x * x).sum(dim=1) if metric == 'l2' else None
    out_index = torch.empty(num_query, k, dtype=torch.long, device=device)
    out_sim = torch.empty(num_query, k, dtype=x.dtype, device=device)

    starts = range(0, num_query, chunk_size)
    for r0 in tqdm(starts, disable=not progress, desc='knn', unit='chunk'):
        r1 = min(r0 + chunk_size, num_query)
        if query is None:
            qid = torch.arange(r0, r1, device=device)
            xq = x[r0:r1]
        else:
            qid = query[r0:r1]
            xq = x[qid]
        rows = torch.arange(r1 - r0, device=device)
        best: tuple[Tensor, Tensor] | None = None
        for c0 in range(0, num_nodes, width):
            c1 = min(c0 + width, num_nodes)
            xb = x[c0:c1]
            if sq is None:
                block = torch.mm(xq, xb.t())
            else:
                block = torch.addmm(sq[c0:c1].neg().unsqueeze(0), xq, xb.t(), alpha=2)
            local = qid - c0
            mask = (local >= 0) & (local < c1 - c0)
            block[rows[mask], local[mask]] = math.inf
            val, idx = _topk_ordered(block, min(k, c1 - c0))
            idx += c0
            best = (val, idx) if best is None else _merge(best, (val, idx), k)
        assert best is not None
        val, idx = best
        if sq is None:
            val = val.clamp(-1.0, 1.0)  # The self entry (+inf) becomes 1.
        else:
            val = (val - sq[qid].unsqueeze(1)).clamp(max=0.0)  # Self: 0.
        out_index[r0:r1] = idx
        out_sim[r0:r1] = val
    return out_index, out_sim


def _exact_knn_symmetric(
    x: Tensor,
    k: int,
    metric: str,
    block_size: int | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Exact top-:math:`k` of every point, computing each similarity once.

    The similarity matrix is symmetric, so it is computed in square blocks
    :math:`\mathbf{X}_I \mathbf{X}_J^{\top}` for :math:`J \ge I` only, and
    every block serves the rows of :math:`I` and, transposed, those of
    :math:`J`: half the matrix products of :func:`_exact_knn`. Every row
    keeps a running list of its best :math:`k + 1` candidates; a block entry
    is a candidate only if it beats the row's current :math:`(k+1)`-th value
    (one comparison per entry, as in heap-based search), and the lists are
    seeded from the diagonal blocks first so that few entries pass. Rows
    whose :math:`k`-th and :math:`(k+1)`-th values tie are recomputed by
    :func:`_exact_knn`, which applies the ascending-id rule at the cut.
    Peak extra memory is one :math:`B \times B` block (and two boolean masks
    of that size) plus the :math:`N \times (k + 1)` lists.
    """
    num_nodes = x.size(0)
    device = x.device
    kk = min(k + 1, num_nodes)
    if block_size is None:
        block_size = max(256, math.isqrt(DEFAULT_BLOCK_NUMEL))
    sq = (x * x).sum(dim=1) if metric == 'l2' else None
    best_val = torch.full((num_nodes, kk), -math.inf, dtype=x.dtype, device=device)
    best_idx = torch.full((num_nodes, kk), -1, dtype=torch.long, device=device)
    starts = list(range(0, num_nodes, block_size))

    def keys(i0: int, i1: int, j0: int, j1: int) -> tuple[Tensor, Tensor]:
        gram = torch.mm(x[i0:i1], x[j0:j1].t())
        if sq is None:
            return gram, gram
        # Ranking keys 2 <x_i, x_j> - |x_j|^2 for the rows, and the same with
        # |x_i|^2 for the columns (the transposed direction):
        gram.mul_(2)
        return gram - sq[j0:j1].unsqueeze(0), gram - sq[i0:i1].unsqueeze(1)

    def merge(r0: int, r1: int, val: Tensor, idx: Tensor) -> None:
        cat_val = torch.cat([best_val[r0:r1], val], dim=1)
        cat_idx = torch.cat([best_idx[r0:r1], idx], dim=1)
        top_val, pos = torch.topk(cat_val, kk, dim=1)
        best_val[r0:r1] = top_val
        best_idx[r0:r1] = cat_idx.gather(1, pos)

    def offer(r0: int, block: Tensor, c0: int, transposed: bool) -> None:
        # Entries of `block` (or of its transpose, without materialising it)
        # beating their row's current (k+1)-th value join that row's
        # candidates. Groups of _GROUP consecutive entries along the row are
        # screened by their maximum first, so the exact test runs on few.
        dim = 0 if transposed else 1
        length = block.size(dim)
        num_rows = block.size(1 - dim)
        thr = best_val[r0 : r0 + num_rows, -1]
        pad = -length % _GROUP
        padded = block
        if pad:
            spec = (0, 0, 0, pad) if transposed else (0, pad)
            padded = torch.nn.functional.pad(block, spec, value=-math.inf)
        if transposed:
            groups = padded.view(-1, _GROUP, num_rows)
            grp, row = (groups.amax(dim=1) > thr.unsqueeze(0)).nonzero(as_tuple=True)
            vals = groups[grp, :, row]  # [P, _GROUP]
        else:
            groups = padded.view(num_rows, -1, _GROUP)
            row, grp = (groups.amax(dim=2) > thr.unsqueeze(1)).nonzero(as_tuple=True)
            vals = groups[row, grp]  # [P, _GROUP]
        if row.numel() == 0:
            return
        p, t = (vals > thr[row].unsqueeze(1)).nonzero(as_tuple=True)
        row, col, val = row[p], grp[p] * _GROUP + t, vals[p, t]
        count = torch.bincount(row, minlength=num_rows)
        width = int(count.max())
        first = torch.cumsum(count, 0) - count
        order = torch.argsort(row, stable=True)
        row, col, val = row[order], col[order], val[order]
        slot = torch.arange(row.numel(), device=device) - first[row]
        cand_val = torch.full(
            (num_rows, width), -math.inf, dtype=x.dtype, device=device
        )
        cand_idx = torch.full((num_rows, width), -1, dtype=torch.long, device=device)
        cand_val[row, slot] = val
        cand_idx[row, slot] = col + c0
        merge(r0, r0 + num_rows, cand_val, cand_idx)

    # Diagonal blocks first: they seed every row's list (self included).
    for i0 in starts:
        i1 = min(i0 + block_size, num_nodes)
        block = keys(i0, i1, i0, i1)[0]
        block.fill_diagonal_(math.inf)
        val, idx = torch.topk(block, min(kk, i1 - i0), dim=1)
        merge(i0, i1, val, idx + i0)
    pairs = [(i0, j0) for a, i0 in enumerate(starts) for j0 in starts[a + 1 :]]
    for i0, j0 in tqdm(pairs, disable=not progress, desc='knn', unit='block'):
        i1, j1 = min(i0 + block_size, num_nodes), min(j0 + block_size, num_nodes)
        rows_key, cols_key = keys(i0, i1, j0, j1)
        offer(i0, rows_key, j0, transposed=False)
        offer(j0, cols_key, i0, transposed=True)
        del rows_key, cols_key

    val, idx = best_val[:, :k], best_idx[:, :k]
    tie = (
        best_val[:, k - 1] == best_val[:, k]
        if kk > k
        else torch.zeros(num_nodes, dtype=torch.bool, device=device)
    )
    val, idx = _order(val, idx)  # Self (+inf) first, then (value desc, id asc).
    if sq is None:
        val = val.clamp(-1.0, 1.0)
    else:
        val = (val - sq.unsqueeze(1)).clamp(max=0.0)
    if bool(tie.any()):
        rows = tie.nonzero().view(-1)
        idx[rows], val[rows] = _exact_knn(x, k, metric, query=rows)
    return idx, val


def _order(val: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    r"""Sorts each row by (value descending, id ascending)."""
    idx, perm = torch.sort(idx, dim=1, stable=True)
    val = val.gather(1, perm)
    val, perm = torch.sort(val, dim=1, descending=True, stable=True)
    return val, idx.gather(1, perm)


def _merge(
    a: tuple[Tensor, Tensor],
    b: tuple[Tensor, Tensor],
    k: int,
) -> tuple[Tensor, Tensor]:
    r"""Merges two top-k lists over disjoint ids into one."""
    val, idx = _order(torch.cat([a[0], b[0]], dim=1), torch.cat([a[1], b[1]], 1))
    return val[:, :k], idx[:, :k]


def _topk_ordered(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""The top-:obj:`k` of each row under the total order (value descending,
    column ascending), sorted in that order."""
    rows, width = block.shape
    if k >= width:
        val, idx = torch.sort(block, dim=1, descending=True, stable=True)
        return val, idx
    val, idx = torch.topk(block, k + 1, dim=1, largest=True, sorted=True)
    tie = val[:, k - 1] == val[:, k]  # Equal values straddle the cut.
    val, idx = _order(val[:, :k], idx[:, :k])
    if bool(tie.any()):
        # Keep the smallest ids among the values equal to the k-th one.
        tied = tie.nonzero().view(-1)
        thr = val[tied, k - 1]
        num_above = (val[tied] > thr.unsqueeze(1)).sum(dim=1)
        row, col = (block[tied] == thr.unsqueeze(1)).nonzero(as_tuple=True)
        count = torch.bincount(row, minlength=tied.numel())
        start = torch.cumsum(count, 0) - count
        pos = num_above[row] + torch.arange(row.numel(), device=row.device)
        pos = pos - start[row]
        keep = pos < k
        sub = idx[tied]
        sub[row[keep], pos[keep]] = col[keep]
        idx[tied] = sub
    return val, idx


# Approximate and faiss backends ##############################################


def _faiss_search(
    x: Tensor,
    k: int,
    metric: str,
    backend: str,
    chunk_size: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    if not sdt_typing.WITH_FAISS:
        raise ImportError(f'backend {backend!r} requires faiss: pip install faiss-cpu')
    import faiss

    num_nodes, dim = x.shape
    data = np.ascontiguousarray(x.detach().cpu().to(torch.float32).numpy())
    cosine = metric == 'cosine'
    faiss_metric = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
    k_search = min(k + 1, num_nodes)
    if backend == 'faiss':
        _no_kwargs(backend, kwargs)
        index = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
    elif backend == 'faiss-hnsw':
        m = int(kwargs.pop('M', 32))
        ef_construction = int(kwargs.pop('ef_construction', 80))
        ef_search = int(kwargs.pop('ef_search', max(128, 2 * k_search)))
        _no_kwargs(backend, kwargs)
        index = faiss.IndexHNSWFlat(dim, m, faiss_metric)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif backend == 'faiss-ivf':
        default_nlist = min(math.ceil(4 * math.sqrt(num_nodes)), num_nodes // 39)
        nlist = int(kwargs.pop('nlist', max(1, default_nlist)))
        nprobe = int(kwargs.pop('nprobe', 32))
        _no_kwargs(backend, kwargs)
        nlist = max(1, min(nlist, num_nodes))
        quantizer = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        index.cp.seed = 1234
        index.train(data)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f'unknown backend {backend!r} (expected one of {BACKENDS})')
    index.add(data)

    step = chunk_size or 65_536
    ids = np.empty((num_nodes, k_search), dtype=np.int64)
    dist = np.empty((num_nodes, k_search), dtype=np.float32)
    starts = range(0, num_nodes, step)
    for r0 in tqdm(starts, disable=not progress, desc='knn', unit='chunk'):
        r1 = min(r0 + step, num_nodes)
        dist[r0:r1], ids[r0:r1] = index.search(data[r0:r1], k_search)
    sim = torch.from_numpy(dist if cosine else -dist)
    return torch.from_numpy(ids), sim


def _pynndescent_search(
    x: Tensor,
    k: int,
    metric: str,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    if not sdt_typing.WITH_PYNNDESCENT:
        raise ImportError(
            "backend 'pynndescent' requires pynndescent: pip install pynndescent"
        )
    from pynndescent import NNDescent

    num_nodes = x.size(0)
    data = np.ascontiguousarray(x.detach().cpu().to(torch.float32).numpy())
    if 'metric' in kwargs or 'n_neighbors' in kwargs:
        raise ValueError(
            "pass 'metric' and 'k' to knn() itself, not as pynndescent options"
        )
    kwargs.setdefault('random_state', 0)
    name = 'cosine' if metric == 'cosine' else 'euclidean'
    k_search = max(2, min(k + 1, num_nodes - 1))
    nnd = NNDescent(data, metric=name, n_neighbors=k_search, **kwargs)
    ids, dist = nnd.neighbor_graph
    dist = torch.from_numpy(np.asarray(dist, dtype=np.float32))
    # pynndescent reports 1 - cos, or the (not squared) Euclidean distance.
    sim = 1.0 - dist if metric == 'cosine' else -(dist * dist)
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)), sim


#: Rows per chunk of :func:`_finalize_candidates`.
_FINALIZE_ROWS = 65_536


def _finalize_candidates(
    x: Tensor,
    cand: Tensor,
    cand_sim: Tensor,
    k: int,
    metric: str,
) -> tuple[Tensor, Tensor]:
    r"""Turns candidate neighbours :math:`[N, m]` (:math:`m \ge k - 1`, maybe
    missing the point itself) into the :class:`KNN` form: the point itself at
    rank 0 (added where missing), the rest sorted by (similarity descending,
    id ascending), cut to :math:`k`. Rows with invalid (:obj:`-1`) or repeated
    ids, or too few distinct candidates, are recomputed with the exact
    backend."""
    num_nodes = x.size(0)
    device = x.device
    cosine = metric == 'cosine'
    index = torch.empty(num_nodes, k, dtype=torch.long, device=device)
    sim = torch.empty(num_nodes, k, dtype=x.dtype, device=device)
    bad = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    # In row chunks, so the sort's temporaries stay bounded at millions of
    # rows (a few hundred bytes per candidate otherwise).
    for lo in range(0, num_nodes, _FINALIZE_ROWS):
        hi = min(num_nodes, lo + _FINALIZE_ROWS)
        c = cand[lo:hi]
        self_id = torch.arange(lo, hi, device=device)
        srt = c.sort(dim=1).values
        bad[lo:hi] = (srt[:, 0] < 0) | (srt[:, 1:] == srt[:, :-1]).any(dim=1)
        is_self = c == self_id.unsqueeze(1)
        bad[lo:hi] |= c.size(1) + 1 - is_self.sum(dim=1) < k
        val = cand_sim[lo:hi].to(x.dtype)
        val = val.clamp(-1.0, 1.0) if cosine else val.clamp(max=0.0)
        val = val.masked_fill(is_self, -math.inf)  # The repeat of the point itself.
        val = torch.cat([val.new_full((hi - lo, 1), math.inf), val], dim=1)
        idx = torch.cat([self_id.unsqueeze(1), c.clamp(min=0)], dim=1)
        val, idx = _order(val, idx)
        index[lo:hi], sim[lo:hi] = idx[:, :k], val[:, :k]
    sim[:, 0] = 1.0 if cosine else 0.0

    if bool(bad.any()):
        rows = bad.nonzero().view(-1)
        index[rows], sim[rows] = _exact_knn(x, k, metric, query=rows)
    return index, sim
