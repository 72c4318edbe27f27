r"""The faiss backends (optional: ``pip install torch_geometric_sdt[faiss]``):
the exact flat index and the approximate HNSW and IVF indices."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

import torch_geometric_sdt.typing as sdt_typing

from .common import check_no_options, float32_numpy

FAISS_BACKENDS = ('faiss', 'faiss-hnsw', 'faiss-ivf')


def faiss_search(
    x: Tensor,
    k: int,
    metric: str,
    backend: str,
    chunk_size: int | None,
    progress: bool,
    kwargs: dict[str, Any],
) -> tuple[Tensor, Tensor]:
    r"""Candidate lists :math:`[N, \min(k + 1, N)]` (ids, similarities) from
    the faiss index :obj:`backend`, queried :obj:`chunk_size` rows at a time
    (default :obj:`65536`)."""
    if not sdt_typing.WITH_FAISS:
        raise ImportError(
            f'backend {backend!r} requires faiss: '
            'pip install torch_geometric_sdt[faiss]'
        )
    import faiss

    num_nodes, dim = x.shape
    data = float32_numpy(x)
    cosine = metric == 'cosine'
    faiss_metric = faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2
    k_search = min(k + 1, num_nodes)
    if backend == 'faiss':
        check_no_options(backend, kwargs)
        index = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
    elif backend == 'faiss-hnsw':
        m = int(kwargs.pop('M', 32))
        ef_construction = int(kwargs.pop('ef_construction', 80))
        ef_search = int(kwargs.pop('ef_search', max(128, 2 * k_search)))
        check_no_options(backend, kwargs)
        index = faiss.IndexHNSWFlat(dim, m, faiss_metric)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif backend == 'faiss-ivf':
        default_nlist = min(math.ceil(4 * math.sqrt(num_nodes)), num_nodes // 39)
        nlist = int(kwargs.pop('nlist', max(1, default_nlist)))
        nprobe = int(kwargs.pop('nprobe', 32))
        check_no_options(backend, kwargs)
        nlist = max(1, min(nlist, num_nodes))
        quantizer = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        index.cp.seed = 1234
        index.train(data)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(
            f'unknown faiss backend {backend!r} (expected one of {FAISS_BACKENDS})'
        )
    index.add(data)

    step = chunk_size or 65_536
    ids = np.empty((num_nodes, k_search), dtype=np.int64)
    dist = np.empty((num_nodes, k_search), dtype=np.float32)
    starts = range(0, num_nodes, step)
    for r0 in tqdm(starts, disable=not progress, desc='knn', unit='chunk'):
        r1 = min(r0 + step, num_nodes)
        dist[r0:r1], ids[r0:r1] = index.search(data[r0:r1], k_search)
    sim = torch.from_numpy(dist if cosine else -dist)
    return torch.from_numpy(ids), sim
