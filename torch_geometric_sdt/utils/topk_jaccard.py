r"""The Top-K Jaccard coefficient of a neighbour graph, and its oracle Top-K.

Every node :math:`i` owns a list of neighbours sorted by descending
similarity (a kNN list with :math:`i` itself at rank 0, or the incoming edges
of a general graph ordered by rank). The first :math:`K_i` entries form its
Top-K set :math:`\mathcal{N}_i(K_i)`. Two nodes whose Top-K sets overlap
strongly are likely to belong to the same cluster; the coefficient below turns
that overlap into an edge score.

The kernel is compiled with :mod:`numba` (parallel over nodes, one scratch
array per worker, rows visited in breadth-first order so that neighbouring
lists stay in cache) and runs on the CPU: tensors on another device are moved
to the CPU and the result is returned on the input's device. The kernels
live in :mod:`torch_geometric_sdt.utils._topk_jaccard_kernels`; their compiled
code is cached in a user cache folder (not in the package), so only the first
call after installation pays the compile time.
"""

from __future__ import annotations

import inspect
from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor
from torch_geometric.utils.num_nodes import maybe_num_nodes
from tqdm.auto import tqdm

from torch_geometric_sdt.utils import _topk_jaccard_kernels as kernels
from torch_geometric_sdt.utils.distributed import (
    EngineStats,
    auto_block_rows,
    blocks,
    connect,
    limit_threads,
    map_stage,
    nbytes,
    share,
)
from torch_geometric_sdt.utils.interrupt import deferred_interrupts, interruption_point
from torch_geometric_sdt.utils.rank import edge_rank
from torch_geometric_sdt.utils.validation import check_choice, check_flow, check_topk

#: The distance-to-probability transforms of :func:`topk_jaccard`.
TRANSFORMS = ('sigmoid', 'exp')
_DISTANCES = ('sqeuclidean', 'cosine')
_NORMALIZE = ('topk', 'knn')
_MODES = ('weighted', 'set')

# Input handling ##############################################################


def _check_options(
    transform: str,
    distance: str,
    normalize: str,
    mode: str,
    flow: str,
    sigma: float,
) -> tuple[int, int, bool, bool]:
    r"""Validates the options of :func:`topk_jaccard`; returns the kernel's
    codes :obj:`(transform, distance, over_topk, weighted)`."""
    transform_id = check_choice('transform', transform, TRANSFORMS)
    distance_id = check_choice('distance', distance, _DISTANCES)
    over_topk = check_choice('normalize', normalize, _NORMALIZE) == 0
    weighted = check_choice('mode', mode, _MODES) == 0
    check_flow(flow)
    if transform == 'exp' and not sigma > 0:
        raise ValueError(f'sigma must be positive (got {sigma})')
    return transform_id, distance_id, over_topk, weighted


def _resolve_topk(
    topk: int | Tensor | None,
    deg: Tensor,
    k: int | None,
) -> Tensor:
    r"""Returns the effective per-node Top-K as :obj:`int64[N]` on the CPU;
    :obj:`k` is the list width of the kNN form, :obj:`None` for the edge
    form."""
    if topk is None:
        return deg.clone()
    topk = check_topk(topk, deg.numel())
    if isinstance(topk, Tensor) and topk.dim() > 0:
        out = topk.detach().to('cpu', torch.int64)
        has_edges = deg > 0
        bad = has_edges & ((out < 1) | (out > deg))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f'topk must lie in [1, degree] for every node with a '
                f'neighbour list; node {i} has topk={int(out[i])} and '
                f'{int(deg[i])} neighbours' + (f' (k={k})' if k is not None else '')
            )
        return torch.where(has_edges, out, torch.zeros_like(out))
    value = int(topk)
    if value < 1:
        raise ValueError(f'topk must be at least 1 (got {value})')
    if k is not None and value > k:
        raise ValueError(f'topk must be at most k={k} (got {value})')
    return deg.clamp(max=value)


def _raise_row_error(
    err: np.ndarray,
    rowptr: np.ndarray,
    col: np.ndarray,
    dense: bool,
) -> None:
    bad = np.flatnonzero(err)
    if bad.size == 0:
        return
    i = int(bad[0])
    code = int(err[i])
    row = col[rowptr[i] : rowptr[i + 1]].tolist()
    shown = row if len(row) <= 12 else row[:12] + ['...']
    where = f'neighbour list of node {i} ({shown})'
    if code == kernels.OUT_OF_RANGE:
        msg = f'{where} holds ids outside [0, {len(rowptr) - 1})'
    elif code == kernels.SELF and dense:
        msg = (
            f'{where} does not start with the node itself; kNN lists must '
            f'hold self at rank 0'
        )
    elif code == kernels.SELF:
        msg = f'{where} holds the node itself at a rank other than 0'
    elif code == kernels.DUPLICATE:
        msg = f'{where} lists a neighbour twice'
    elif code == kernels.UNSORTED:
        msg = f'{where} is not sorted by descending similarity'
    else:
        msg = f'{where} has a NaN similarity'
    raise ValueError(f'Inconsistent graph: {msg}')


def _edge_to_csr(
    edge_index: Tensor,
    sim: Tensor | None,
    rank: Tensor | None,
    num_nodes: int | None,
    flow: str,
) -> tuple[int, Tensor, Tensor, Tensor | None, Tensor]:
    r"""Sorts edges into per-target lists ordered by rank (by default
    :func:`~torch_geometric_sdt.utils.edge_rank` of :obj:`sim`).

    Returns :obj:`(num_nodes, rowptr, col, sim, pos)` where :obj:`pos[e]` is
    the position of input edge :obj:`e` in the CSR arrays.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f'edge_index must have shape [2, E] (got {list(edge_index.shape)})'
        )
    if edge_index.is_floating_point():
        raise ValueError('edge_index must be an integer tensor')
    edge_index = edge_index.detach().to('cpu', torch.int64)
    num_edges = edge_index.size(1)
    if flow == 'source_to_target':
        src, dst = edge_index[0], edge_index[1]
    else:
        dst, src = edge_index[0], edge_index[1]
    if num_edges > 0 and int(edge_index.min()) < 0:
        raise ValueError('edge_index holds negative node ids')
    num_nodes = maybe_num_nodes(edge_index, num_nodes)
    if num_edges > 0 and int(edge_index.max()) >= num_nodes:
        raise ValueError(
            f'edge_index holds node ids >= num_nodes={num_nodes} '
            f'(max id {int(edge_index.max())})'
        )
    if sim is not None:
        if sim.dim() != 1 or sim.numel() != num_edges:
            raise ValueError(
                f'sim must have one value per edge, shape [{num_edges}] '
                f'(got {list(sim.shape)})'
            )
        sim = sim.detach().cpu()
    deg = torch.bincount(dst, minlength=num_nodes)
    rowptr = torch.zeros(num_nodes + 1, dtype=torch.int64)
    torch.cumsum(deg, 0, out=rowptr[1:])
    if rank is None:
        assert sim is not None  # the kNN form is chosen otherwise
        rank = edge_rank(edge_index, sim, num_nodes, flow)
    if rank.dim() != 1 or rank.numel() != num_edges:
        raise ValueError(
            f'rank must have one value per edge, shape [{num_edges}] '
            f'(got {list(rank.shape)})'
        )
    if rank.is_floating_point():
        raise ValueError('rank must be an integer tensor')
    rank = rank.detach().to('cpu', torch.int64)
    if num_edges > 0 and bool(((rank < 0) | (rank >= deg[dst])).any()):
        raise ValueError(
            "rank must lie in [0, degree) for each edge's target; every "
            'neighbour list must be ranked 0, 1, ..., degree - 1'
        )
    pos = rowptr[dst] + rank
    if num_edges > 0 and int(torch.bincount(pos, minlength=num_edges).max()) > 1:
        raise ValueError('rank repeats within a neighbour list')
    col = torch.empty_like(src)
    col[pos] = src
    if sim is not None:
        sim_csr = torch.empty_like(sim)
        sim_csr[pos] = sim
        sim = sim_csr
    return num_nodes, rowptr, col, sim, pos


# Public API ##################################################################


def topk_jaccard(
    index: Tensor | tuple[Tensor, Tensor],
    sim: Tensor | None = None,
    topk: int | Tensor | None = None,
    *,
    rank: Tensor | None = None,
    num_nodes: int | None = None,
    flow: str = 'source_to_target',
    transform: str = 'sigmoid',
    distance: str = 'sqeuclidean',
    normalize: str = 'topk',
    mode: str = 'weighted',
    delta: float = 7.5,
    eps: float = -5.0,
    sigma: float = 0.5,
    rows: tuple[int, int] | None = None,
    positions: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    r"""Scores every edge :math:`(i, j)` of a neighbour graph with the Top-K
    Jaccard coefficient of `"Enhancing Noise Resilience in Face Clustering via
    Sparse Differential Transformer" <https://arxiv.org/abs/2512.22612>`_.

    Node :math:`i` owns a neighbour list sorted by descending similarity
    :math:`s_{ij}`; :math:`\mathcal{N}_i(K_i)` denotes its first :math:`K_i`
    entries (self included for kNN lists). Similarities become distances and
    then probabilities,

    .. math::
        d_{ij} = 2 - 2 s_{ij} \ \text{(sqeuclidean)} \quad\text{or}\quad
        d_{ij} = 1 - s_{ij} \ \text{(cosine)},

    .. math::
        \tilde{p}_{ij} = \frac{1}{1 + \exp(\delta d_{ij} + \epsilon)}
        \ \text{(sigmoid)} \quad\text{or}\quad
        \tilde{p}_{ij} = \exp(-d_{ij} / \sigma) \ \text{(exp)},

    row-normalised over the Top-K set (:obj:`normalize='topk'`) or over the
    whole list (:obj:`normalize='knn'`),
    :math:`p_{ij} = \tilde{p}_{ij} / \sum_m \tilde{p}_{im}`. The weighted
    coefficient of every edge in the list of :math:`i` (all of them, not only
    those inside :math:`\mathcal{N}_i(K_i)`, so that boundary edges are scored
    too) is

    .. math::
        J_{ij} = \frac{1}{2} \sum_{m \in \mathcal{N}_i(K_i) \cap
        \mathcal{N}_j(K_j)} \left( p_{im} + p_{jm} \right),

    and with :obj:`mode='set'` it is the plain Jaccard index
    :math:`|\mathcal{N}_i(K_i) \cap \mathcal{N}_j(K_j)| /
    |\mathcal{N}_i(K_i) \cup \mathcal{N}_j(K_j)|`. With :math:`K_i = k`,
    :obj:`transform='exp'` and :obj:`normalize='knn'` this is the
    neighbour-based edge probability of FC-ES / FC-ESER.

    The graph comes in one of two forms:

    * **kNN form** -- :obj:`index` and :obj:`sim` of shape :obj:`[N, k]` (or a
      :class:`~torch_geometric_sdt.nn.knn.KNN` tuple as :obj:`index`): row
      :math:`i` lists its neighbours by descending similarity, and must start
      with :math:`i` itself. The result has shape :obj:`[N, k]`.
    * **edge form** -- :obj:`index` is an :obj:`edge_index` of shape
      :obj:`[2, E]` (edge :math:`j \to i` puts :math:`j` in the list of
      :math:`i` for :obj:`flow='source_to_target'`) with a per-edge
      :obj:`sim` and/or :obj:`rank` (the position of the edge in its target's
      list). Nodes may have different degrees, and need not list themselves;
      a node that does must do so at rank 0. Without :obj:`rank`, lists are
      ordered by :func:`~torch_geometric_sdt.utils.edge_rank`: the self-loop
      first, then descending :obj:`sim`, ties by ascending neighbour id, then
      edge order (the order of kNN lists, and that of the Top-K mask of
      :class:`~torch_geometric_sdt.nn.conv.SparseDiffAttention`). The result has
      shape :obj:`[E]`, aligned with the input edges.

    Lists must hold distinct ids sorted by non-increasing :obj:`sim` (self at
    rank 0 is exempt, so that a duplicate point whose similarity exceeds the
    self-similarity by rounding, or a self-loop of
    :class:`~torch_geometric.transforms.AddSelfLoops` with
    :obj:`fill_value='mean'`, is accepted); inconsistent graphs raise a
    :class:`ValueError`. The cost is
    :math:`O(\sum_i \sum_{j \in \mathcal{N}_i} K_j)`, *i.e.*
    :math:`O(NkK)`, with one :math:`O(N)` scratch array per worker thread
    and no dense :math:`N \times N` matrix. The kernel runs on the CPU:
    inputs on another device are copied to the CPU and the result is returned
    on the input's device.

    Args:
        index (torch.Tensor or KNN): Neighbour ids :obj:`[N, k]`, a
            :class:`~torch_geometric_sdt.nn.knn.KNN` tuple, or an
            :obj:`edge_index` :obj:`[2, E]`.
        sim (torch.Tensor, optional): Similarities (cosine for unit
            embeddings), :obj:`[N, k]` or :obj:`[E]`. Only :obj:`mode='set'`
            may leave it out. (default: :obj:`None`)
        topk (int or torch.Tensor, optional): The Top-K, either one integer
            for all nodes or a :obj:`LongTensor[N]`, each value in
            :math:`[1, \textrm{degree}]`. In the edge form an integer is
            capped at each node's degree. :obj:`None` uses every node's full
            list. (default: :obj:`None`)
        rank (torch.Tensor, optional): Edge form only: each edge's position
            in its target's list, :obj:`LongTensor[E]`. (default: :obj:`None`)
        num_nodes (int, optional): Edge form only: the number of nodes.
            (default: :obj:`None`)
        flow (str, optional): Edge form only: :obj:`'source_to_target'` (the
            list of :math:`i` holds the sources of edges into :math:`i`) or
            :obj:`'target_to_source'`. (default: :obj:`'source_to_target'`)
        transform (str, optional): :obj:`'sigmoid'` or :obj:`'exp'`.
            (default: :obj:`'sigmoid'`)
        distance (str, optional): :obj:`'sqeuclidean'` (:math:`2 - 2s`) or
            :obj:`'cosine'` (:math:`1 - s`). (default: :obj:`'sqeuclidean'`)
        normalize (str, optional): Row-normalise over the Top-K set
            (:obj:`'topk'`) or the full list (:obj:`'knn'`).
            (default: :obj:`'topk'`)
        mode (str, optional): :obj:`'weighted'` or :obj:`'set'`.
            (default: :obj:`'weighted'`)
        delta (float, optional): Sigmoid slope :math:`\delta`.
            (default: :obj:`7.5`)
        eps (float, optional): Sigmoid offset :math:`\epsilon`.
            (default: :obj:`-5.0`)
        sigma (float, optional): Scale :math:`\sigma` of the exp transform.
            (default: :obj:`0.5`)
        rows (tuple, optional): kNN form only: score the lists of rows
            :math:`[r_0, r_1)` alone and return :obj:`[r_1 - r_0, k]`. A
            row's scores read only its own list and its neighbours' lists,
            so they equal the same rows of the full result (the map stages
            of the Ray engine split the work this way). (default:
            :obj:`None`)
        positions (torch.Tensor, optional): kNN form only: score the entries
            at flat positions :math:`i k + r` alone and return them,
            :obj:`[P]` in the same order, equal to the same entries of the
            full result. The cost is :math:`O(\sum_i K_i + \sum_{(i, j)}
            K_j)` over the rows and entries given, beside one :math:`O(Nk)`
            check of the lists. (default: :obj:`None`)
        progress (bool, optional): Show a progress bar. (default: :obj:`False`)

    Returns:
        torch.Tensor: :obj:`[N, k]` or :obj:`[E]` scores, in :math:`[0, 1]`,
        of dtype :obj:`float64` if :obj:`sim` is, else :obj:`float32`.

    Example:
        >>> index = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
        >>> sim = torch.tensor([[1.0, 0.9, 0.2], [1.0, 0.9, 0.3],
        ...                     [1.0, 0.3, 0.2]])
        >>> topk_jaccard(index, sim, topk=2)
        tensor([[1.0000, 1.0000, 0.2492],
                [1.0000, 1.0000, 0.2549],
                [1.0000, 0.2549, 0.2492]])
    """
    lists, pos, out_shape, device = _lists_of(
        index,
        sim,
        topk,
        rank=rank,
        num_nodes=num_nodes,
        flow=flow,
        transform=transform,
        distance=distance,
        normalize=normalize,
        mode=mode,
        delta=delta,
        eps=eps,
        sigma=sigma,
    )
    n = lists['rowptr'].size - 1
    row_lo, row_hi = _check_rows(rows, n)
    if rows is not None and pos is not None:
        raise ValueError('rows needs the kNN form [N, k]')
    if positions is not None:
        if pos is not None:
            raise ValueError('positions needs the kNN form [N, k]')
        if rows is not None:
            raise ValueError('Pass rows or positions, not both')
        flat = _check_positions(positions, n * out_shape[1])
        out = _score_entries(lists, flat, out_shape[1], progress=progress)
        return torch.from_numpy(out).to(device)
    rowptr = lists['rowptr']
    if rows is not None:
        order = np.arange(row_lo, row_hi, dtype=np.int64)
        ptr = _compact_ptr(rowptr, order)
        out = _score_rows(lists, order, ptr, int(ptr[-1]), progress=progress)
        return torch.from_numpy(out).view(row_hi - row_lo, out_shape[1]).to(device)
    order = _visit_order(lists)
    out = _score_rows(lists, order, rowptr[order], int(rowptr[-1]), progress=progress)
    result = torch.from_numpy(out)
    if pos is not None:
        result = result[pos]
    return result.view(out_shape).to(device)


def _lists_of(
    index: Tensor | tuple[Tensor, Tensor],
    sim: Tensor | None,
    topk: int | Tensor | None,
    *,
    rank: Tensor | None,
    num_nodes: int | None,
    flow: str,
    transform: str,
    distance: str,
    normalize: str,
    mode: str,
    delta: float,
    eps: float,
    sigma: float,
) -> tuple[dict[str, np.ndarray], Tensor | None, tuple[int, ...], torch.device]:
    r"""Checks the arguments of :func:`topk_jaccard` (whose signature holds
    their defaults) and returns the lists of :func:`_prepare_lists`, the edge
    positions of the edge form (:obj:`None` for the kNN form), the output
    shape and the device."""
    transform_id, distance_id, over_topk, weighted = _check_options(
        transform, distance, normalize, mode, flow, sigma
    )

    if isinstance(index, tuple):
        if len(index) != 2 or sim is not None:
            raise ValueError(
                'Pass either a KNN tuple (index, sim) or index and sim tensors'
            )
        index, sim = index
    if not isinstance(index, Tensor):
        raise ValueError(f'index must be a tensor (got {type(index).__name__})')
    if sim is not None and not isinstance(sim, Tensor):
        raise ValueError(f'sim must be a tensor (got {type(sim).__name__})')
    if sim is not None and not sim.is_floating_point():
        raise ValueError(f'sim must be a floating-point tensor (got {sim.dtype})')
    if weighted and sim is None:
        raise ValueError("mode='weighted' needs similarities (sim)")
    device = index.device
    dtype = (
        torch.float64
        if sim is not None and sim.dtype == torch.float64
        else (torch.float32)
    )

    dense = rank is None and (sim is None or sim.dim() == 2)
    if dense:
        if index.dim() != 2:
            raise ValueError(f'index must have shape [N, k] (got {list(index.shape)})')
        if index.is_floating_point():
            raise ValueError('index must be an integer tensor')
        if sim is not None and sim.shape != index.shape:
            raise ValueError(
                f'index and sim must have the same shape [N, k] '
                f'(got {list(index.shape)} and {list(sim.shape)})'
            )
        n, k = index.shape
        col = index.detach().to('cpu', torch.int64).reshape(-1)
        sim_flat = None if sim is None else sim.detach().cpu().reshape(-1)
        rowptr = torch.arange(n + 1, dtype=torch.int64) * k
        pos = None
        out_shape: tuple[int, ...] = (n, k)
    else:
        n, rowptr, col, sim_flat, pos = _edge_to_csr(index, sim, rank, num_nodes, flow)
        out_shape = (col.numel(),)
    deg = rowptr[1:] - rowptr[:-1]
    topk_t = _resolve_topk(topk, deg, out_shape[1] if dense else None)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    lists = _prepare_lists(
        rowptr,
        col,
        sim_flat,
        topk_t,
        np_dtype,
        self_first=dense,
        weighted=weighted,
        prob_options=(transform_id, distance_id, over_topk, delta, eps, sigma),
    )
    return lists, pos, out_shape, device


def _prepare_lists(
    rowptr: Tensor,
    col: Tensor,
    sim: Tensor | None,
    topk: Tensor,
    np_dtype: type,
    *,
    self_first: bool,
    weighted: bool,
    prob_options: tuple[int, int, bool, float, float, float],
) -> dict[str, np.ndarray]:
    r"""Checks every list and computes the row probabilities :math:`p_{ij}`
    once: the arrays the scoring kernel reads (:func:`_score_rows`), as a
    dict that the Ray engine shares with its tasks as it is. :obj:`p` has
    the output's dtype and is empty in set mode.

    Raises :class:`ValueError` for an inconsistent list (the kernel indexes
    by neighbour id without bounds checks, so no list is scored before every
    list passed).
    """
    n = rowptr.numel() - 1
    rowptr_np = rowptr.numpy()
    # int32 ids halve the memory traffic of the kernel.
    col_np = np.ascontiguousarray(
        col.numpy(), dtype=np.int32 if n < 2**31 else np.int64
    )
    sim_np = np.empty(0, np_dtype) if sim is None else np.ascontiguousarray(sim.numpy())
    topk_np = topk.numpy()
    # Compiled code runs with stop requests held back (utils.interrupt).
    with deferred_interrupts():
        num_threads = numba.get_num_threads()
        err = np.zeros(n, np.int8)
        if n > 0:
            kernels.check_rows(
                rowptr_np,
                col_np,
                sim_np,
                sim is not None,
                self_first,
                max(1, min(n, 4 * num_threads)),
                err,
            )
        _raise_row_error(err, rowptr_np, col_np, self_first)
        p = np.empty(col_np.size if weighted else 0, np_dtype)
        if weighted and n > 0:
            transform_id, distance_id, over_topk, delta, eps, sigma = prob_options
            kernels.row_probs(
                rowptr_np,
                sim_np,
                topk_np,
                transform_id,
                distance_id,
                over_topk,
                float(delta),
                float(eps),
                float(sigma),
                p,
            )
    return dict(
        rowptr=rowptr_np,
        col=col_np,
        p=p,
        topk=topk_np,
    )


def _score_rows(
    lists: dict[str, np.ndarray],
    order: np.ndarray,
    out_ptr: np.ndarray,
    out_size: int,
    progress: bool = False,
    out_stop: np.ndarray | None = None,
    entries: np.ndarray | None = None,
) -> np.ndarray:
    r"""The scores of the lists of rows :obj:`order` from
    :func:`_prepare_lists`'s arrays: the list of row :obj:`order[t]` goes to
    :obj:`out[out_ptr[t]:]`, in list order, in an output of :obj:`out_size`
    entries (the only allocation). With :obj:`entries`, only the CSR
    positions :obj:`entries[out_ptr[t]:out_stop[t]]` of row
    :obj:`order[t]`, into the same places. Each row's scores depend on
    nothing else, so the order only decides which lists stay in cache
    together."""
    p = lists['p']
    rowptr = lists['rowptr']
    out = np.empty(out_size, p.dtype)
    if entries is None:
        entries = np.empty(0, np.int64)
        out_stop = out_ptr[: order.size] + (rowptr[order + 1] - rowptr[order])
    weighted = p.size > 0  # set mode shares no probabilities
    with deferred_interrupts():
        # Blocks of rows (never one long kernel call): a held-back stop
        # request takes effect between two blocks.
        num_rows = order.size
        num_blocks = min(num_rows, 100)
        bounds = np.linspace(0, num_rows, num_blocks + 1).astype(np.int64)
        chunks = max(1, 8 * numba.get_num_threads())
        for b in tqdm(range(num_blocks), disable=not progress, desc='topk_jaccard'):
            interruption_point()
            start, stop = int(bounds[b]), int(bounds[b + 1])
            if stop > start:
                kernels.scores(
                    rowptr,
                    lists['col'],
                    p,
                    lists['topk'],
                    weighted,
                    order,
                    start,
                    stop,
                    max(1, min(stop - start, chunks)),
                    out_ptr,
                    out_stop,
                    entries,
                    out,
                )
    return out


def _score_entries(
    lists: dict[str, np.ndarray], flat: np.ndarray, k: int, progress: bool = False
) -> np.ndarray:
    r"""The scores of the entries at flat positions :obj:`flat` of kNN
    lists of length :obj:`k` (:func:`_prepare_lists`'s arrays), in the
    order given. Each row's Top-K set is marked once for all of its entries,
    and the rows are visited in :func:`_visit_order`'s order, as the full
    scoring does, so that neighbouring lists stay in cache."""
    perm = None
    if flat.size > 1 and bool((flat[1:] < flat[:-1]).any()):
        perm = np.argsort(flat, kind='stable')
        flat = flat[perm]
    row_of = flat // k
    start = np.flatnonzero(np.diff(row_of, prepend=-1))
    stop = np.append(start[1:], flat.size)
    rows = row_of[start]
    rank = np.empty(lists['rowptr'].size - 1, np.int64)
    rank[_visit_order(lists)] = np.arange(rank.size)
    visit = np.argsort(rank[rows])
    out = _score_rows(
        lists,
        rows[visit],
        start[visit],
        flat.size,
        progress,
        out_stop=stop[visit],
        entries=flat,
    )
    if perm is None:
        return out
    unsorted = np.empty_like(out)
    unsorted[perm] = out
    return unsorted


def _check_positions(positions: Tensor, size: int) -> np.ndarray:
    """:obj:`positions` as an :obj:`int64` array, checked to be a 1-D
    integer tensor of flat positions in :math:`[0, Nk)`."""
    if not isinstance(positions, Tensor) or positions.dim() != 1:
        raise ValueError('positions must be a 1-D tensor of flat positions i * k + r')
    if positions.is_floating_point() or positions.dtype == torch.bool:
        raise ValueError(f'positions must be an integer tensor (got {positions.dtype})')
    flat = positions.detach().to('cpu', torch.int64).numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= size):
        raise ValueError(
            f'positions must lie in [0, N * k) = [0, {size}) '
            f'(got {int(flat.min())} to {int(flat.max())})'
        )
    return flat


def _visit_order(lists: dict[str, np.ndarray]) -> np.ndarray:
    r"""Rows in breadth-first order over the lists: consecutive rows then
    share most of their neighbours, whose lists stay in cache."""
    rowptr = lists['rowptr']
    if rowptr.size <= 1:
        return np.empty(0, np.int64)
    with deferred_interrupts():
        return kernels.bfs_order(rowptr, lists['col'])


def _compact_ptr(rowptr: np.ndarray, order: np.ndarray) -> np.ndarray:
    r"""Output offsets that place the lists of rows :obj:`order` one after
    the other."""
    deg = rowptr[order + 1] - rowptr[order]
    out = np.zeros(order.size + 1, np.int64)
    np.cumsum(deg, out=out[1:])
    return out


def _check_rows(rows: tuple[int, int] | None, num_nodes: int) -> tuple[int, int]:
    if rows is None:
        return 0, num_nodes
    if (
        not isinstance(rows, (tuple, list))
        or len(rows) != 2
        or not all(isinstance(r, (int, np.integer)) for r in rows)
        or not 0 <= rows[0] <= rows[1] <= num_nodes
    ):
        raise ValueError(
            f'rows must be a pair (r0, r1) with 0 <= r0 <= r1 <= N = {num_nodes} '
            f'(got {rows!r})'
        )
    return int(rows[0]), int(rows[1])


def topk_target(
    knn_index: Tensor | tuple[Tensor, Tensor],
    y: Tensor,
    beta: float = 0.5,
    *,
    chunk_size: int = 65536,
) -> Tensor:
    r"""Computes the oracle Top-K of every node from labels, the best prefix
    of its kNN list (the target of Ada-NETS, used to train a Top-K predictor
    and to measure what a perfect Top-K is worth).

    For prefix length :math:`t = 1, \ldots, k` of the list of node :math:`i`
    (self at rank 0 counts), with :math:`c_t` the number of its first
    :math:`t` neighbours that share the label :math:`y_i` and :math:`n_i`
    the size of the class of :math:`y_i`,

    .. math::
        P_t = \frac{c_t}{t}, \qquad
        R_t = \frac{c_t}{\min(n_i, k)}, \qquad
        Q_t = \frac{(1 + \beta^2) P_t R_t}{\beta^2 P_t + R_t},

    and :math:`K^*_i = \arg\max_t Q_t` (the smallest such :math:`t` on ties),
    where :math:`Q_t = (1 + \beta^2) c_t / (\beta^2 \min(n_i, k) + t)` is
    evaluated in this simplified form, so that equal fractions compare
    equal.
    Recall is capped at :math:`\min(n_i, k)` so that every target is
    reachable within the list.

    Args:
        knn_index (torch.Tensor or KNN): Neighbour ids :obj:`[N, k]`, or a
            :class:`~torch_geometric_sdt.nn.knn.KNN` tuple.
        y (torch.Tensor): Integer labels :obj:`[N]`.
        beta (float, optional): :math:`\beta` of the F-score; below 1 favours
            precision. (default: :obj:`0.5`)
        chunk_size (int, optional): Rows processed at once, bounding memory
            to :obj:`O(chunk_size * k)`. (default: :obj:`65536`)

    Returns:
        torch.Tensor: :obj:`LongTensor[N]` with values in :math:`[1, k]`, on
        the device of :obj:`knn_index`.
    """
    if isinstance(knn_index, tuple):
        knn_index = knn_index[0]
    if not isinstance(knn_index, Tensor) or knn_index.dim() != 2:
        raise ValueError('knn_index must be a tensor of shape [N, k]')
    if knn_index.is_floating_point():
        raise ValueError('knn_index must be an integer tensor')
    if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError('y must be an integer tensor of labels')
    num_nodes, k = knn_index.shape
    if y.dim() != 1 or y.numel() != num_nodes:
        raise ValueError(f'y must have shape [{num_nodes}] (got {list(y.shape)})')
    if not beta > 0:
        raise ValueError(f'beta must be positive (got {beta})')
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be at least 1 (got {chunk_size})')
    device = knn_index.device
    out = torch.empty(num_nodes, dtype=torch.int64, device=device)
    if num_nodes == 0:
        return out
    if k == 0:
        raise ValueError('knn_index must have at least one column')
    if int(knn_index.min()) < 0 or int(knn_index.max()) >= num_nodes:
        raise ValueError(f'knn_index holds ids outside [0, {num_nodes})')
    y = y.to(device)
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    cap = counts[inverse].clamp(max=k).to(torch.float64)
    t = torch.arange(1, k + 1, device=device, dtype=torch.float64)
    b2 = float(beta) ** 2
    for lo in range(0, num_nodes, chunk_size):
        hi = min(num_nodes, lo + chunk_size)
        same = y[knn_index[lo:hi]] == y[lo:hi, None]
        c = same.cumsum(dim=1, dtype=torch.float64)
        # Q_t simplifies to (1 + b2) c_t / (b2 n + t): exact ties stay ties.
        q = c / (b2 * cap[lo:hi, None] + t)
        out[lo:hi] = q.argmax(dim=1) + 1
    return out


# The options of topk_jaccard that _lists_of takes, with their defaults.
_OPTIONS = {
    name: param.default
    for name, param in inspect.signature(topk_jaccard).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
    and name not in ('rows', 'positions', 'progress')
}


def _rows_task(lists: dict[str, np.ndarray], lo: int, hi: int) -> np.ndarray:
    # Ray task: the scores of rows order[lo:hi] of the shared, checked lists
    # (the driver's visit order), one list after the other.
    limit_threads()
    rows = lists['order'][lo:hi]
    ptr = _compact_ptr(lists['rowptr'], rows)
    return _score_rows(lists, rows, ptr, int(ptr[-1]))


def topk_jaccard_ray(
    index: Tensor,
    sim: Tensor,
    topk: int | Tensor | None = None,
    *,
    address: str | None = None,
    block_rows: int | None = None,
    stats: EngineStats | None = None,
    name: str = 'topk_jaccard',
    progress: bool = False,
    **options: Any,
) -> Tensor:
    r""":func:`topk_jaccard` of a kNN graph :obj:`[N, k]` as a map stage on
    a Ray cluster, equal to :func:`topk_jaccard` of the whole graph.

    The driver checks every list and computes the row probabilities
    :math:`p_{ij}` once, and puts them into the object store with the ids
    (as :obj:`int32` below :math:`2^{31}` nodes) and the Top-K. One task
    per block of :obj:`block_rows` rows (default:
    :func:`~torch_geometric_sdt.utils.distributed.auto_block_rows`), taken
    in the breadth-first order of the local engine (so that a block's rows
    share most of their neighbours), then scores its rows: it reads its
    rows' lists and their neighbours' lists
    from the object store and allocates only its block's output,
    :math:`O(\textrm{block\_rows} \cdot k)`. The other arguments are
    :func:`topk_jaccard`'s (:obj:`options`) and those of
    :func:`~torch_geometric_sdt.utils.distributed.map_stage`.
    """
    connect(address)
    if block_rows is None:
        block_rows = auto_block_rows(index.size(0))
    # The driver checks every list, computes the probabilities and the visit
    # order once; tasks read them and allocate only their rows' output.
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f'unknown options of topk_jaccard: {sorted(unknown)}')
    lists, pos, shape, _ = _lists_of(index, sim, topk, **{**_OPTIONS, **options})
    if pos is not None:
        raise ValueError('topk_jaccard_ray needs the kNN form [N, k]')
    n, k = shape
    lists['order'] = _visit_order(lists)
    lists_ref = share(**lists)
    parts = map_stage(
        _rows_task,
        [(lists_ref, lo, hi) for lo, hi in blocks(n, block_rows)],
        name=name,
        stats=stats,
        shared_bytes=nbytes(lists),
        progress=progress,
    )
    out = np.empty((n, k), lists['p'].dtype)
    if n:
        out[lists['order']] = np.concatenate(parts).reshape(n, k)
    return torch.from_numpy(out)
