r"""Self-diagnosis of :class:`~torch_geometric_sdt.nn.models.SDTClusterer`:
statistics of a data set's kNN graph that tell whether it looks like the
data the model was trained on, and the warnings they raise.

The statistics of a data set (:func:`data_statistics`), with :math:`z` the
standardised similarity (:mod:`~torch_geometric_sdt.utils.knn_features`):

* :obj:`z_first`: the median over nodes of :math:`z` of the nearest other
  item (rank 1): how far the closest neighbour stands above the noise;
* :obj:`z_last`: the median of :math:`z` at the last rank :math:`k - 1`;
* :obj:`full_share`: the share of nodes whose Top-K is the whole list
  (:math:`K_i = k`), *i.e.* lists that look same-identity to their end
  (a warning above one half, unless the training data went further: the
  shipped model was trained on identities larger than :math:`k`);
* :obj:`topk_mean`: the mean Top-K;
* :obj:`reference`: the similarity reference actually used.

Training (:func:`~torch_geometric_sdt.train.fit`) records the range of each
statistic over its data sets (:func:`training_range`, with the oracle Top-K
there); :func:`diagnose` compares a data set with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torch_geometric_sdt.nn.models.knn_context import KNNContext

#: Statistics compared with the training range, and the slack allowed
#: beyond its ends before a warning (in the statistic's own unit).
RANGE_SLACK: dict[str, float] = {'z_first': 1.0, 'z_last': 1.0}
#: Share of whole-list Top-Ks above which identities look larger than k, for
#: a model whose training range is unknown or never reached it.
FULL_SHARE_WARNING = 0.5


def data_statistics(ctx: KNNContext, topk: Tensor) -> dict[str, Any]:
    r"""The statistics of the module docstring for one data set.

    Args:
        ctx (KNNContext): The data set's context (one similarity scale).
        topk (torch.Tensor): Its Top-K :obj:`[N]`.
    """
    nodes = torch.arange(ctx.num_nodes)
    ends = ctx.knn.sim[:, [1, ctx.k - 1]].float()
    z = ctx.scale.standardize(ends, nodes)
    scale = ctx.scale
    return {
        'reference': ctx.reference,
        'noise_center': _scalar(scale.center),
        'noise_scale': _scalar(scale.scale),
        'z_first': float(z[:, 0].median()),
        'z_last': float(z[:, 1].median()),
        'full_share': float((topk >= ctx.k).float().mean()),
        'topk_mean': float(topk.float().mean()),
    }


def training_range(stats: list[dict[str, Any]]) -> dict[str, list[float]]:
    """The :obj:`[min, max]` of every numeric statistic over the training
    data sets."""
    keys = [k for k, v in stats[0].items() if isinstance(v, float)]
    return {k: [min(s[k] for s in stats), max(s[k] for s in stats)] for k in keys}


def diagnose(
    stats: dict[str, Any],
    k: int,
    expected_reference: str,
    train_range: dict[str, list[float]] | None,
) -> list[str]:
    r"""The problems a data set's :obj:`stats` show, one sentence each, with
    what to do (empty when it looks like the training data).

    Args:
        stats (dict): From :func:`data_statistics`.
        k (int): The model's list length.
        expected_reference (str): The model's similarity reference.
        train_range (dict, optional): From :func:`training_range`;
            :obj:`None` (a model trained before it was recorded) skips the
            range checks.
    """
    out = []
    if stats['reference'] != expected_reference:
        out.append(
            'no embeddings were given, so similarities are standardised by the '
            'kNN lists instead of random pairs, which misreads data with large '
            'identities: pass the embeddings as well as the graph'
        )
    for key, slack in RANGE_SLACK.items():
        if train_range is None or key not in train_range:
            continue
        lo, hi = train_range[key]
        if not lo - slack <= stats[key] <= hi + slack:
            out.append(
                f'the kNN similarities look unlike the training data ({key} = '
                f'{stats[key]:.2f} noise deviations, trained on '
                f'[{lo:.2f}, {hi:.2f}]): check the features are L2-comparable '
                'embeddings, or train on a labelled sample (sdt train)'
            )
    full_max = 0.0 if train_range is None else train_range.get('full_share', [0, 0])[1]
    if stats['full_share'] > max(FULL_SHARE_WARNING, full_max):
        out.append(
            f'{stats["full_share"]:.0%} of the kNN lists look same-identity to '
            f'their end: identities are likely larger than k = {k}, and hold '
            'together only through chains of lists; a model with a larger k '
            '(sdt train -k ...) on a labelled sample sees them whole'
        )
    return out


def _scalar(value: float | Tensor) -> float:
    return float(value) if not isinstance(value, Tensor) else float(value.median())


__all__ = [
    'data_statistics',
    'training_range',
    'diagnose',
    'RANGE_SLACK',
    'FULL_SHARE_WARNING',
]
