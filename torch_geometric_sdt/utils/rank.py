r"""The rank of every edge in its target's neighbour list.

:func:`edge_rank` is the one definition of the neighbour order used by
:class:`~torch_geometric_sdt.nn.conv.SparseDiffAttention` (its Top-K mask),
:func:`~torch_geometric_sdt.utils.topk_jaccard` and
:class:`~torch_geometric_sdt.transforms.TopKJaccard`: the self-loop first,
then descending similarity, then ascending source id, then edge order. On the
lists of :func:`~torch_geometric_sdt.nn.knn.knn` (self at rank 0, ties by
ascending id) it gives back the list positions of
:meth:`~torch_geometric_sdt.nn.knn.KNN.to_edge_index`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import degree
from torch_geometric.utils.num_nodes import maybe_num_nodes

from torch_geometric_sdt.utils.validation import check_flow

# Floating-point types whose values map exactly, order-preserving, to 32-bit
# integer keys.
_KEY32_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _packed_key(score: Tensor, owner: Tensor) -> Tensor:
    r"""Packs the owner :obj:`[E]` and the float32-representable scores
    :obj:`[C, E]` of every edge into one int64 key :obj:`[C, E]` whose
    ascending order is ascending owner, then descending score (NaN first, as
    in :func:`torch.sort`; equal scores give equal keys).
    """
    # `+ 0.0` turns -0.0 into +0.0, so that the two zeros tie; every NaN gets
    # the bits of the positive quiet NaN, above +inf.
    score = score.to(torch.float32) + 0.0
    score = score.masked_fill(score.isnan(), float('nan'))
    bits = score.view(torch.int32)
    # Flipping the magnitude bits of negative floats orders the int32 bit
    # patterns as the floats; `~` reverses that order.
    descending = ~(bits ^ ((bits >> 31) & 0x7FFFFFFF))
    return (owner * 2**32).view(1, -1) + descending.to(torch.int64)


def position_in_target(
    score: Tensor,
    index: Tensor,
    num_targets: int,
    tiebreak: Tensor | None = None,
) -> Tensor:
    r"""Ranks every edge among the edges of its target by descending
    :obj:`score`: 0 for the highest score of a target, 1 for the next, ...

    With :math:`i_e` the target, :math:`s_e` the score and :math:`t_e` the
    tie-break key of edge :math:`e`, the rank is

    .. math::
        r_e = \big| \{ e' : i_{e'} = i_e, \;
        (s_{e'}, -t_{e'}, -e') > (s_e, -t_e, -e) \} \big|,

    comparing tuples lexicographically: ties in :obj:`score` go to the
    smaller :obj:`tiebreak` value, then to the earlier edge. Every trailing
    column of :obj:`score` is ranked on its own.

    All shapes are static (usable under :func:`torch.compile` with
    :obj:`fullgraph=True`). A float32, float16 or bfloat16 score and its
    target are packed into one exact 64-bit key, so that each column takes
    one sort (plus one for :obj:`tiebreak`); float64 scores take two.

    Args:
        score (torch.Tensor): Scores :obj:`[E, *]`.
        index (torch.Tensor): Target of every edge :obj:`[E]`.
        num_targets (int): Number of targets.
        tiebreak (torch.Tensor, optional): Secondary key :obj:`[E]`,
            ascending. (default: :obj:`None`)

    Returns:
        :obj:`LongTensor` of the shape of :obj:`score`.
    """
    score = score.detach()
    num_edges = score.size(0)
    # One row per ranked column, contiguous along the sorted dimension:
    cols = score.view(num_edges, 1) if score.dim() == 1 else score.flatten(1)
    cols = cols.t().contiguous()
    owner = index
    first: Tensor | None = None
    if tiebreak is not None:
        first = tiebreak.argsort(stable=True)
        cols = cols.index_select(1, first)
        owner = index.index_select(0, first)
    if cols.dtype in _KEY32_DTYPES and num_targets < 2**31:
        key, perm = _packed_key(cols, owner).sort(dim=-1, stable=True)
        target = (key + 2**31) // 2**32  # the owner, unpacked
    else:
        perm = cols.argsort(dim=-1, descending=True, stable=True)
        perm = perm.gather(-1, owner[perm].argsort(dim=-1, stable=True))
        target = owner[perm]
    if first is not None:
        perm = first[perm]
    count = degree(index, num_targets, dtype=torch.long)
    start = count.cumsum(0) - count
    pos = torch.arange(num_edges, device=score.device) - start[target]
    out = torch.empty_like(pos).scatter_(-1, perm, pos)
    return out.t().reshape(score.shape)


def edge_rank(
    edge_index: Tensor,
    sim: Tensor,
    num_nodes: int | None = None,
    flow: str = 'source_to_target',
    *,
    self_first: bool = True,
) -> Tensor:
    r"""Ranks the edges into every node by similarity: the position of each
    edge in its target's neighbour list, the :obj:`rank` that
    :func:`~torch_geometric_sdt.utils.topk_jaccard` and the Top-K mask of
    :class:`~torch_geometric_sdt.nn.conv.SparseDiffAttention` take.

    For the edges :math:`j \to i` into node :math:`i`, with similarity
    :math:`s_{j,i}`, the list of :math:`i` holds the self-loop
    :math:`i \to i` first (if any), then the others by descending
    :math:`s_{j,i}`, then by ascending source id :math:`j`, then in edge
    order; with :math:`\mathbb{1}` the self-loop indicator,

    .. math::
        r_{j,i} = \big| \{ (j', i) : (\mathbb{1}[j' = i], s_{j',i}, -j',
        -e') > (\mathbb{1}[j = i], s_{j,i}, -j, -e) \} \big|.

    This is the order of :func:`~torch_geometric_sdt.nn.knn.knn` lists (self
    at rank 0, ties by ascending id), so the ranks of
    :meth:`~torch_geometric_sdt.nn.knn.KNN.to_edge_index` are reproduced. A
    self-loop of any similarity, *e.g.* one added by
    :class:`torch_geometric.transforms.AddSelfLoops` with
    :obj:`fill_value='mean'`, gets rank 0. Uses :func:`position_in_target`,
    so all shapes are static.

    Args:
        edge_index (torch.Tensor): :obj:`LongTensor[2, E]`.
        sim (torch.Tensor): Per-edge similarity :obj:`[E]`.
        num_nodes (int, optional): The number of nodes (list owners).
            (default: :obj:`None`)
        flow (str, optional): :obj:`'source_to_target'` ranks edges
            :math:`j \to i` within the list of their target :math:`i`,
            :obj:`'target_to_source'` within that of their source.
            (default: :obj:`'source_to_target'`)
        self_first (bool, optional): If set to :obj:`False`, self-loops get
            no precedence (for bipartite graphs, whose source and target ids
            index different node sets). (default: :obj:`True`)

    Returns:
        torch.Tensor: :obj:`LongTensor[E]` on the device of
        :obj:`edge_index`; rank 0 heads every list.
    """
    check_flow(flow)
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f'edge_index must have shape [2, E] (got {list(edge_index.shape)})'
        )
    if not isinstance(sim, Tensor) or not sim.is_floating_point():
        raise ValueError('sim must be a floating-point tensor')
    if sim.dim() != 1 or sim.numel() != edge_index.size(1):
        raise ValueError(
            f'sim must have one value per edge, shape [{edge_index.size(1)}] '
            f'(got {list(sim.shape)})'
        )
    if flow == 'source_to_target':
        neighbour, owner = edge_index[0], edge_index[1]
    else:
        owner, neighbour = edge_index[0], edge_index[1]
    num_nodes = maybe_num_nodes(edge_index, num_nodes)
    sim = sim.detach().to(edge_index.device)
    if self_first:
        sim = sim.masked_fill(neighbour == owner, float('inf'))
    return position_in_target(sim, owner, num_nodes, tiebreak=neighbour)
