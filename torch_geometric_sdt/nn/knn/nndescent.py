r"""The approximate nearest-neighbour descent backend (:obj:`pynndescent`).

Building a :class:`pynndescent.NNDescent` is a series of calls into
:mod:`numba` code (and its compilation), inside which a stop request
(Ctrl-C, ``SIGTERM``) cannot be handled safely (see
:mod:`torch_geometric_sdt.utils.interrupt`): the construction runs with stop
requests held back, and a stop takes effect when it returns. pynndescent runs
its whole descent in one compiled call, so that can take as long as the
search itself (about 30 s at 50K points of dimension 64 on two cores, minutes
at :math:`10^6` points); the run then ends with exit status 130 and no
output.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.interrupt import deferred_interrupts

from .common import float32_numpy


def nndescent_search(
    x: Tensor,
    k: int,
    metric: str,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    r"""Candidate lists (ids, similarities) from
    :class:`pynndescent.NNDescent` with :obj:`kwargs` as its options
    (:obj:`random_state=0` unless given)."""
    # Imported here: importing pynndescent (and numba) takes seconds.
    import numba
    from pynndescent import NNDescent

    num_nodes = x.size(0)
    data = float32_numpy(x)
    if 'metric' in kwargs or 'n_neighbors' in kwargs:
        raise ValueError(
            "pass 'metric' and 'k' to knn() itself, not as pynndescent options"
        )
    kwargs.setdefault('random_state', 0)
    name = 'cosine' if metric == 'cosine' else 'euclidean'
    k_search = max(2, min(k + 1, num_nodes - 1))
    num_threads = numba.get_num_threads()
    try:
        with deferred_interrupts():
            nnd = NNDescent(data, metric=name, n_neighbors=k_search, **kwargs)
            ids, dist = nnd.neighbor_graph
    finally:
        # NNDescent restores the thread count it sets for n_jobs only when it
        # finishes.
        numba.set_num_threads(num_threads)
    dist = torch.from_numpy(np.asarray(dist, dtype=np.float32))
    # pynndescent reports 1 - cos, or the (not squared) Euclidean distance.
    sim = 1.0 - dist if metric == 'cosine' else -(dist * dist)
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)), sim
