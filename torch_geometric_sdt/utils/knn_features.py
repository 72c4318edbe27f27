r"""Scale-free features of a kNN graph, for models that must travel between
embedding models.

Embedding models differ in their cosine scale: one puts random pairs near 0
and same-identity pairs above 0.4, another squeezes everything above 0.8.
A shared offset added to every embedding before normalisation maps the
cosines :math:`s` to roughly :math:`a s + b`. The features here are built
from similarities standardised by the data set's own kNN similarity
distribution,

.. math::
    z_{ir} = \frac{s_{ir} - \mathrm{median}(s)}{q_{0.9}(s) - q_{0.1}(s)},

taken over all non-self kNN similarities, so they are invariant to any such
affine change of scale.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

#: Number of relational features per neighbour token, see
#: :func:`token_features`.
NUM_TOKEN_FEATURES = 3
#: Number of relational features per kNN edge, see :func:`edge_features`.
NUM_EDGE_FEATURES = 4


class SimilarityScale(NamedTuple):
    r"""Robust location and scale of a data set's kNN similarities."""

    center: float
    scale: float

    def standardize(self, sim: Tensor) -> Tensor:
        """Returns :math:`(s - \\text{center}) / \\text{scale}`."""
        return (sim - self.center) / self.scale


def similarity_scale(sim: Tensor, *, max_samples: int = 1_000_000) -> SimilarityScale:
    r"""Estimates the median and the 10-90 % inter-quantile range of the
    non-self kNN similarities :obj:`sim[:, 1:]`.

    Args:
        sim (torch.Tensor): kNN similarities :obj:`[N, k]`, self at rank 0.
        max_samples (int, optional): At most this many similarities (an even
            stride over the rows, so the result is deterministic) enter the
            quantiles. (default: :obj:`1000000`)

    Returns:
        :class:`SimilarityScale`.
    """
    if sim.dim() != 2 or sim.size(1) < 2:
        raise ValueError(
            f'sim must have shape [N, k] with k >= 2 (got {list(sim.shape)})'
        )
    if sim.size(0) == 0:
        raise ValueError('sim must have at least one row')
    rest = sim[:, 1:]
    # Every step-th row, so that at most max_samples values enter (and
    # torch.quantile's input limit is never reached at millions of rows):
    step = max(1, -(-rest.numel() // max_samples))
    values = rest[::step].reshape(-1).double()
    q = torch.quantile(values, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    scale = float(q[2] - q[0])
    if not scale > 1e-12:
        scale = float(values.std()) if values.numel() > 1 else 0.0
    if not scale > 1e-12:
        scale = 1.0
    return SimilarityScale(float(q[1]), scale)


def token_features(
    sim: Tensor,
    shared: Tensor,
    scale: SimilarityScale,
) -> Tensor:
    r"""Relational features of the neighbour tokens of some nodes.

    For node :math:`i` and its neighbour :math:`j` at rank :math:`r`:
    the standardised similarity :math:`z_{ir}`, the standardised gap to the
    next rank :math:`z_{ir} - z_{i,r+1}` (0 at the last rank), and the share
    of neighbours the two lists have in common (the set Jaccard index of the
    full lists, :obj:`shared`).

    Args:
        sim (torch.Tensor): Similarities :obj:`[B, k]` of the nodes' lists.
        shared (torch.Tensor): Set Jaccard index of every list entry
            :obj:`[B, k]`, *e.g.* from
            :func:`~torch_geometric_sdt.utils.topk_jaccard` with
            :obj:`mode='set'` and :obj:`topk=k`.
        scale (SimilarityScale): The data set's similarity scale.

    Returns:
        torch.Tensor: :obj:`[B, k, NUM_TOKEN_FEATURES]`.
    """
    z = scale.standardize(sim.float())
    gap = torch.zeros_like(z)
    gap[:, :-1] = z[:, :-1] - z[:, 1:]
    return torch.stack([z, gap, shared.float()], dim=-1)


def edge_features(
    sim: Tensor,
    rank: Tensor,
    jaccard: Tensor,
    shared: Tensor,
    k: int,
    scale: SimilarityScale,
) -> Tensor:
    r"""Relational features of kNN edges :math:`j \to i`: the standardised
    similarity, the relative rank :math:`r / k`, the Top-K Jaccard score and
    the set Jaccard index of the full lists.

    Returns:
        torch.Tensor: :obj:`[E, NUM_EDGE_FEATURES]`.
    """
    return torch.stack(
        [
            scale.standardize(sim.float()),
            rank.float() / k,
            jaccard.float(),
            shared.float(),
        ],
        dim=-1,
    )
