r"""Softmax over the edges of every target, with fully masked targets."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter


def masked_softmax(src: Tensor, index: Tensor, num_targets: int) -> Tensor:
    r"""Softmax over the edges of every target,

    .. math::
        \alpha_{e} = \frac{\exp(s_e - m_{i_e})}
        {\sum_{e' : i_{e'} = i_e} \exp(s_{e'} - m_{i_e})},
        \qquad m_i = \max_{e : i_e = i} s_e,

    where :obj:`-inf` entries get probability 0 and a target whose entries
    are all :obj:`-inf` gets all zeros (not :obj:`NaN`, unlike
    :func:`torch_geometric.utils.softmax`), so that a mask can empty a
    target. All shapes are static.

    Args:
        src (torch.Tensor): Logits :obj:`[E, *]`.
        index (torch.Tensor): Target of every edge :obj:`[E]`.
        num_targets (int): Number of targets.

    Returns:
        torch.Tensor: Probabilities of the shape of :obj:`src`.
    """
    src_max = scatter(src.detach(), index, 0, num_targets, reduce='max')
    src_max = src_max.masked_fill(~torch.isfinite(src_max), 0.0)
    out = (src - src_max.index_select(0, index)).exp()
    out_sum = scatter(out, index, 0, num_targets, reduce='sum')
    out_sum = out_sum.clamp_min(torch.finfo(out.dtype).tiny)
    return out / out_sum.index_select(0, index)
