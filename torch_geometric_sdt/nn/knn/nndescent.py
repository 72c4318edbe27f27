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


def nndescent_search(
    x: Tensor,
    k: int,
    metric: str,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    r"""Candidate lists (integer ids, float32 similarities) from
    :class:`pynndescent.NNDescent` with :obj:`kwargs` as its options
    (:obj:`random_state=0` unless given).

    With :obj:`metric='cosine'`, a float32 CPU :obj:`x` is normalised in
    place (its rows are unit-norm already: only rounding can change), so
    the caller passes a tensor it owns.
    """
    # Imported here: importing pynndescent (and numba) takes seconds.
    import numba
    from pynndescent import NNDescent

    # For the cosine, pynndescent normalises the rows itself: in a copy of a
    # C-contiguous float32 NumPy array, in place for anything else it reads
    # without copying. x is the caller's own normalised copy (knn's
    # prepare), so it goes as a tensor, which NumPy views as it is: the
    # features are held once more during the search, not twice (1 GiB at
    # 1M points of dimension 256). The rows are divided by their norms as
    # in the copy, so the lists are the same; x itself may change in its
    # last bit.
    data = x.detach().cpu().to(torch.float32).contiguous()
    if 'metric' in kwargs or 'n_neighbors' in kwargs:
        raise ValueError(
            "pass 'metric' and 'k' to knn() itself, not as pynndescent options"
        )
    kwargs.setdefault('random_state', 0)
    name = 'cosine' if metric == 'cosine' else 'euclidean'
    k_search = max(2, min(k + 1, x.size(0) - 1))
    num_threads = numba.get_num_threads()
    try:
        with deferred_interrupts():
            nnd = NNDescent(data, metric=name, n_neighbors=k_search, **kwargs)
            ids, dist = nnd.neighbor_graph
            del nnd  # Its heaps and trees, before the lists are converted.
    finally:
        # NNDescent restores the thread count it sets for n_jobs only when it
        # finishes.
        numba.set_num_threads(num_threads)
    # The lists are pynndescent's own copies: converted in place, and the
    # ids kept in its int32 (finalize_candidates widens them by chunk).
    sim = torch.from_numpy(np.asarray(dist, dtype=np.float32))
    # pynndescent reports 1 - cos, or the (not squared) Euclidean distance.
    if metric == 'cosine':
        sim.neg_().add_(1.0)
    else:
        sim.mul_(sim).neg_()
    return torch.from_numpy(np.asarray(ids)), sim
