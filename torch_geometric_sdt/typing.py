"""Optional packages, detected once at import time.

Mirrors :mod:`torch_geometric.typing`: every optional accelerator is probed
here and nowhere else, so the rest of the library branches on a constant.
Required packages (``numba``, ``pynndescent``, ``infomap``, ...) have no flag:
they are always there.
"""

from __future__ import annotations

import importlib.util

from torch_geometric.typing import WITH_TORCH_SCATTER, WITH_TORCH_SPARSE


def _has(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


#: faiss (``pip install torch_geometric_sdt[faiss]``): the ``faiss``,
#: ``faiss-hnsw`` and ``faiss-ivf`` kNN backends.
WITH_FAISS: bool = _has('faiss')

#: Ray (``pip install torch_geometric_sdt[ray]``): :obj:`engine='ray'`, the
#: pipeline's stages as tasks on a Ray cluster.
WITH_RAY: bool = _has('ray')

__all__ = [
    'WITH_FAISS',
    'WITH_RAY',
    'WITH_TORCH_SCATTER',
    'WITH_TORCH_SPARSE',
]
