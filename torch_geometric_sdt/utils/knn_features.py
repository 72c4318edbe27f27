r"""Scale-free features of a kNN graph, for models that must travel between
embedding models and data regimes.

Embedding models differ in their cosine scale: one puts random pairs near 0
and same-identity pairs above 0.4, another squeezes everything above 0.8.
A shared offset added to every embedding before normalisation maps the
cosines :math:`s` to roughly :math:`a s + b`. The features here are built
from standardised similarities :math:`z = (s - c) / d`, invariant to any
such affine change of scale, with one of two references :math:`(c, d)`:

* :obj:`'random_pairs'` (:func:`noise_scale`): the **noise level** of the
  data set, from the cosines of random pairs of items, which are almost all
  pairs of different identities whatever the identity sizes,

  .. math::
      c = q_{0.5}(s^{\mathrm{rand}}), \qquad
      d = \frac{q_{0.5}(s^{\mathrm{rand}}) - q_{0.05}(s^{\mathrm{rand}})}
      {\Phi^{-1}(0.95)},

  so :math:`z` counts noise standard deviations above the typical
  unrelated pair. The spread comes from the lower half only: same-identity
  pairs, a few per cent of random pairs when identities are large, sit in
  the upper tail and move neither :math:`c` much nor :math:`d` at all.
* :obj:`'knn'` (:func:`similarity_scale`, the reference of version 0.1
  checkpoints): the median and the 10-90 % range of the non-self kNN
  similarities. It needs no embeddings, but it depends on identity sizes:
  when most of a node's :math:`k` neighbours share its identity, the median
  is the same-identity level, not the noise level, and a model trained on
  small identities misreads the data.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.mapped import release_rows

#: The similarity references, see the module docstring.
REFERENCES = ('random_pairs', 'knn')
#: :math:`\Phi^{-1}(0.95)`, the 95 % quantile of the standard normal.
_Z95 = 1.6448536269514722

#: Number of relational features per neighbour token, see
#: :func:`token_features`.
NUM_TOKEN_FEATURES = 3
#: Number of relational features per kNN edge, see :func:`edge_features`.
NUM_EDGE_FEATURES = 4


class SimilarityScale(NamedTuple):
    r"""Robust location and scale of a data set's similarities.

    Both fields are floats (one data set) or :obj:`Tensor[N]` (one value per
    node, for the union of several data sets, see :meth:`per_node`).
    """

    center: float | Tensor
    scale: float | Tensor

    def standardize(self, sim: Tensor, nodes: Tensor | None = None) -> Tensor:
        r"""Returns :math:`(s - \text{center}) / \text{scale}`.

        Args:
            sim (torch.Tensor): Similarities :obj:`[B]` or :obj:`[B, k]`.
            nodes (torch.Tensor, optional): The node of every row of
                :obj:`sim` :obj:`[B]`; needed with per-node values.
                (default: :obj:`None`)
        """
        if not isinstance(self.center, Tensor):
            return (sim - self.center) / self.scale
        if nodes is None:
            raise ValueError('a per-node SimilarityScale needs the nodes')
        center, scale = self.center[nodes], self.scale[nodes]  # type: ignore[index]
        if sim.dim() == 2:
            center, scale = center.unsqueeze(1), scale.unsqueeze(1)
        return (sim - center) / scale

    def per_node(self, num_nodes: int) -> SimilarityScale:
        """The same scale as :obj:`Tensor[num_nodes]` fields."""
        if isinstance(self.center, Tensor):
            return self
        return SimilarityScale(
            torch.full((num_nodes,), float(self.center)),
            torch.full((num_nodes,), float(self.scale)),
        )


def check_scale(scale: object, num_nodes: int) -> SimilarityScale:
    r"""Returns :obj:`scale` if it is a usable :class:`SimilarityScale` for
    :obj:`num_nodes` nodes: finite centres, finite positive scales, and
    per-node fields of length :obj:`num_nodes`; else raises
    :class:`ValueError`."""
    if not isinstance(scale, SimilarityScale):
        raise ValueError(
            f'scale must be a SimilarityScale (got {type(scale).__name__}), '
            'e.g. noise_scale(x) of the set whose noise level to use'
        )
    center = torch.as_tensor(scale.center, dtype=torch.float64)
    spread = torch.as_tensor(scale.scale, dtype=torch.float64)
    for name, value in (('center', center), ('scale', spread)):
        if value.dim() > 1 or (value.dim() == 1 and value.numel() != num_nodes):
            raise ValueError(
                f'scale.{name} must be a float or one value per node '
                f'({num_nodes}); got shape {list(value.shape)}'
            )
    if not bool(torch.isfinite(center).all()):
        raise ValueError('scale.center must be finite')
    if not bool((torch.isfinite(spread) & (spread > 0)).all()):
        raise ValueError('scale.scale must be finite and positive')
    return scale


def noise_scale(
    x: Tensor | np.ndarray, *, num_rows: int = 2048, seed: int = 0
) -> SimilarityScale:
    r"""Estimates the noise level of a data set from the cosines of random
    pairs (the :obj:`'random_pairs'` reference of the module docstring).

    :obj:`num_rows` rows are drawn without replacement (seeded, so the
    result is deterministic) and every distinct pair among them enters:
    :math:`m (m - 1) / 2` cosines from an :math:`m \times m` Gram matrix of
    the sample, never of the data set. Only the sampled rows are read, so
    a memory-mapped :obj:`x` is not loaded (the pages mapped to read them
    are handed back: :func:`~torch_geometric_sdt.utils.mapped.release_rows`).

    Args:
        x (torch.Tensor or numpy.ndarray): Embeddings :obj:`[N, D]`, any
            norm (rows are normalised here).
        num_rows (int, optional): Rows sampled, :math:`m`.
            (default: :obj:`2048`)
        seed (int, optional): Seed of the sample. (default: :obj:`0`)

    Returns:
        :class:`SimilarityScale`.
    """
    n = int(x.shape[0])
    if x.ndim != 2 or n < 2:
        raise ValueError(f'x must have shape [N, D] with N >= 2 (got {list(x.shape)})')
    if num_rows < 2:
        raise ValueError(f'num_rows must be >= 2 (got {num_rows})')
    if n > num_rows:
        rows = noise_sample_rows(n, num_rows, seed)
        if isinstance(x, Tensor):
            sample = x[rows]
        else:
            sample = np.array(x[rows.numpy()])
            # Every row read from a mapped file maps the pages the kernel
            # read around it (megabytes of read-ahead): hand them back, or
            # most of the file stays resident.
            release_rows(x, 0, n)
    else:
        sample = x
    s = torch.nn.functional.normalize(
        torch.as_tensor(np.asarray(sample)).double(), dim=1
    )
    m = s.size(0)
    iu = torch.triu_indices(m, m, 1)
    values = (s @ s.T)[iu[0], iu[1]]
    q = torch.quantile(values, torch.tensor([0.05, 0.5], dtype=torch.float64))
    scale = float(q[1] - q[0]) / _Z95
    if not scale > 1e-12:
        scale = float(values.std()) if values.numel() > 1 else 0.0
    if not scale > 1e-12:
        scale = 1.0
    return SimilarityScale(float(q[1]), scale)


def noise_sample_rows(num_nodes: int, num_rows: int = 2048, seed: int = 0) -> Tensor:
    r"""The sorted rows :func:`noise_scale` samples from :obj:`num_nodes`
    (all of them when :math:`N \le` :obj:`num_rows`): a sharded data set
    reads these rows alone and passes them to :func:`noise_scale`."""
    if num_nodes <= num_rows:
        return torch.arange(num_nodes)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_nodes, generator=g)[:num_rows].sort().values


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
    nodes: Tensor | None = None,
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
        nodes (torch.Tensor, optional): The nodes of the rows, for a
            per-node :obj:`scale`. (default: :obj:`None`)

    Returns:
        torch.Tensor: :obj:`[B, k, NUM_TOKEN_FEATURES]`.
    """
    z = scale.standardize(sim.float(), nodes)
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
    nodes: Tensor | None = None,
) -> Tensor:
    r"""Relational features of kNN edges :math:`j \to i`: the standardised
    similarity, the relative rank :math:`r / k`, the Top-K Jaccard score and
    the set Jaccard index of the full lists (:obj:`nodes`: the target
    :math:`i` of every edge, for a per-node :obj:`scale`).

    Returns:
        torch.Tensor: :obj:`[E, NUM_EDGE_FEATURES]`.
    """
    return torch.stack(
        [
            scale.standardize(sim.float(), nodes),
            rank.float() / k,
            jaccard.float(),
            shared.float(),
        ],
        dim=-1,
    )
