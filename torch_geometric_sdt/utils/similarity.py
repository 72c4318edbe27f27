r"""The similarity of the two endpoints of every edge."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_geometric_sdt.utils.validation import check_choice, check_int

METRICS = ('cosine', 'l2')


def edge_similarity(
    x: Tensor | tuple[Tensor, Tensor],
    edge_index: Tensor,
    metric: str = 'cosine',
    *,
    chunk_size: int = 2**16,
) -> Tensor:
    r"""Computes the similarity of the endpoints of every edge
    :math:`j \to i`, the similarity :func:`~torch_geometric_sdt.nn.knn.knn`
    ranks by,

    .. math::
        s_{j,i} = \frac{\mathbf{x}_j^{\top} \mathbf{x}_i}
        {\|\mathbf{x}_j\| \, \|\mathbf{x}_i\|} \quad (\text{cosine}),
        \qquad
        s_{j,i} = -\|\mathbf{x}_j - \mathbf{x}_i\|_2^2 \quad (\text{l2}),

    for graphs whose edges come without it, *e.g.* from
    :func:`~torch_geometric_sdt.nn.knn.knn_graph`. Edges are processed
    :obj:`chunk_size` at a time: :math:`O(|\mathcal{E}| D)` time and
    :math:`O(\textrm{chunk\_size} \cdot D)` extra memory, no dense
    :math:`N \times N` matrix. Cosine similarities are clipped to
    :math:`[-1, 1]`; a zero row has similarity 0 to every node.

    Args:
        x (torch.Tensor or (torch.Tensor, torch.Tensor)): Node features
            :obj:`[N, D]`, or those of the sources and of the targets.
        edge_index (torch.Tensor): :obj:`LongTensor[2, E]`.
        metric (str, optional): :obj:`'cosine'` or :obj:`'l2'`.
            (default: :obj:`'cosine'`)
        chunk_size (int, optional): Edges processed at once.
            (default: :obj:`65536`)

    Returns:
        torch.Tensor: :obj:`[E]`, in the floating-point type of :obj:`x`.
    """
    check_choice('metric', metric, METRICS)
    chunk_size = check_int('chunk_size', chunk_size, minimum=1)
    x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
    if x_src.dim() != 2 or x_dst.dim() != 2 or x_src.size(1) != x_dst.size(1):
        raise ValueError(
            f'x must hold node features of shape [N, D] (got shapes '
            f'{list(x_src.shape)} and {list(x_dst.shape)})'
        )
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f'edge_index must have shape [2, E] (got {list(edge_index.shape)})'
        )
    if not x_src.is_floating_point():
        x_src, x_dst = x_src.float(), x_dst.float()
    if metric == 'cosine':
        x_src, x_dst = F.normalize(x_src, dim=-1), F.normalize(x_dst, dim=-1)
    edge_index = edge_index.to(x_src.device)
    out = torch.empty(edge_index.size(1), dtype=x_src.dtype, device=x_src.device)
    for lo in range(0, edge_index.size(1), chunk_size):
        src = x_src[edge_index[0, lo : lo + chunk_size]]
        dst = x_dst[edge_index[1, lo : lo + chunk_size]]
        if metric == 'cosine':
            out[lo : lo + chunk_size] = (src * dst).sum(dim=-1).clamp(-1.0, 1.0)
        else:
            out[lo : lo + chunk_size] = -(src - dst).pow(2).sum(dim=-1)
    return out
