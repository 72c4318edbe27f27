r"""k-nearest-neighbour graphs in the fixed-width ``[N, k]`` form.

:func:`knn` returns a :class:`KNN` (neighbour ids and similarities, self at
rank 0), the form the rest of the pipeline works on; :func:`knn_graph` is a
drop-in replacement for :func:`torch_geometric.nn.knn_graph` that needs
neither :obj:`torch-cluster` nor :obj:`pyg-lib`.

Backends:

* :obj:`'exact'`: pure PyTorch on the input's device, chunked matrix products
  followed by an exact top-:math:`k` selection.
* :obj:`'faiss'`: exact flat index (:obj:`IndexFlatIP` / :obj:`IndexFlatL2`).
* :obj:`'faiss-hnsw'`, :obj:`'faiss-ivf'`: approximate faiss indices.
* :obj:`'pynndescent'`: approximate nearest-neighbour descent.

The faiss backends need the optional faiss
(``pip install torch_geometric_sdt[faiss]``).
"""

from . import api
from .api import KNN, METRICS, knn, knn_graph, resolve_backend
from .exact import (
    DEFAULT_BLOCK_NUMEL,
    DEFAULT_COL_CHUNK_SIZE,
    SCREEN_GROUP,
    exact_knn,
    pack_rows,
    screen,
)

# Bound here, not imported, so that autodoc finds their doc comments under
# `torch_geometric_sdt.nn.knn`:

#: The backends of :func:`knn`; the faiss ones need the optional faiss.
BACKENDS = api.BACKENDS
#: :obj:`backend='auto'` uses the exact backend up to this many points.
AUTO_EXACT_MAX_NODES = api.AUTO_EXACT_MAX_NODES
#: The :class:`pynndescent.NNDescent` options of :obj:`backend='auto'` above
#: :obj:`AUTO_EXACT_MAX_NODES` points, chosen by end-to-end clustering
#: quality and time (``benchmarks/knn.py --sweep 100000 --e2e``).
AUTO_NNDESCENT_OPTIONS = api.AUTO_NNDESCENT_OPTIONS

__all__ = [
    'KNN',
    'knn',
    'knn_graph',
    'BACKENDS',
    'AUTO_EXACT_MAX_NODES',
    'AUTO_NNDESCENT_OPTIONS',
    'METRICS',
    'resolve_backend',
    'exact_knn',
    'pack_rows',
    'screen',
    'DEFAULT_BLOCK_NUMEL',
    'DEFAULT_COL_CHUNK_SIZE',
    'SCREEN_GROUP',
]
