r"""How much memory a clustering run needs, and whether this process has it.

:func:`estimate_memory` predicts the bytes alive during every stage of a run
from the sizes of its data structures; :func:`check_memory` compares the
peak with what this process may still use and fails *before* any work
starts, with a message that says what to change.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from pathlib import Path

import torch

from torch_geometric_sdt.defaults import DEFAULT_K, METHODS
from torch_geometric_sdt.nn.knn import (
    BACKENDS,
    DEFAULT_BLOCK_NUMEL,
    SCREEN_GROUP,
    resolve_backend,
)
from torch_geometric_sdt.nn.models import (
    BAND_CHUNK_SIZE,
    DEFAULT_BAND,
    LINK_CHUNK_SIZE,
    NODE_CHUNK_SIZE,
    TOPK_BATCH_SIZE,
    check_max_links,
)
from torch_geometric_sdt.utils.distributed import DEFAULT_BLOCK_ROWS

# Bytes of one kNN entry: an int64 id and a float32 similarity.
KNN_ENTRY = 8 + 4
# Exact kNN (cosine, symmetric): the [B, B] float32 similarity block and, per
# group of nn.knn.SCREEN_GROUP = 16 entries, its float32 maximum and boolean
# test (5 / 16 bytes per entry), B = sqrt(nn.knn.DEFAULT_BLOCK_NUMEL); a block
# whose width is not a multiple of 16 (only the last one) is also copied,
# padded to one.
EXACT_BLOCK_ENTRY = 4 + 5 / SCREEN_GROUP
# faiss HNSW (M = 32): level-0 links (2 M int32) and upper levels, per node.
HNSW_NODE = 2 * 32 * 4 + 64
# Approximate and faiss backends: the [N, k + 1] candidate ids and distances
# the search returns, their sorted, self-first copies (made in row chunks) and
# the result -- measured 50 bytes per candidate at 100K nodes (faiss-ivf).
CANDIDATE_ENTRY = 52
# pynndescent: its heaps, random-projection forest and the candidates it
# returns -- measured 30.5 and 35 bytes per candidate at 1M and 400K nodes
# (k = 80, D = 256), beside the features and the normalised copy it works on
# (the one knn() prepared, normalised in place: nn.knn.nndescent).
NNDESCENT_ENTRY = 34
# Top-K Jaccard scratch per kNN entry: int32 ids, the output and the row
# probabilities (float32); per node: the visit order (int64) and one float32
# mark array per worker thread.
JACCARD_ENTRY = 4 + 4 + 4
JACCARD_NODE = 8
JACCARD_THREAD_NODE = 4
# Top-K predictor: batches of TOPK_BATCH_SIZE nodes of k tokens through a
# transformer of 64 channels and 4 heads (SDTClusterer's default; the shipped
# model's is 32 channels wide, so this bounds it): one [B, 4, k, k] float32
# attention map and 7 [B, k, 64] float32 activations (the fused q/k/v
# projection and its three heads' views, the attention output, the 2x wide
# feed-forward) alive at once -- measured 369, 891 and 2583 MiB per batch of
# 4096 nodes at k = 40, 80, 160 with a 64-channel model (topk_batch_bytes
# gives 380, 960 and 2720). The shipped 32-channel model, the same way
# (benchmarks/topk_memory.py --batch-size 4096, two runs): 428-508, 764-828
# and 2247 MiB, of which 150-250 MiB are not the batch (the context, what the
# allocator kept of the kNN search); at the default batch size 186-209 MiB at
# 20K nodes and 270-284 MiB at 100K (64 channels: 210 and 330).
TOPK_HEADS = 4
TOPK_MAP_COPIES = 1
TOPK_CHANNELS = 64
TOPK_ACTIVATION_COPIES = 7
# Every stage: what the run holds beyond its data structures -- the libraries
# it imports after the check (PyG, the numba kernels, Infomap) and what the
# allocator keeps of earlier stages; measured 140-230 MiB at 20K-100K nodes.
RUNTIME = 192 * 2**20
# The kNN search runs first: nothing is kept of earlier stages and the
# libraries loaded later are not loaded yet (the numba kernels of the Jaccard
# stages alone added 136 MiB at the first set Jaccard of a run). Measured
# beyond the search's data terms below: 86 MiB at 10K and none at 100K
# (exact search, 2 threads, benchmarks/scale.py's mapped faces).
SEARCH_RUNTIME = 64 * 2**20
# SDT encoder inference: NODE_CHUNK_SIZE target nodes per chunk; every Top-K
# edge of a chunk holds the projected messages and attention terms of all heads
# (measured ~1.5 KB per edge with the shipped model, 64 channels, 4 heads).
ENCODER_EDGE = 1600
# Inputs of the encoder per Top-K edge: edge_index (2 x int64), four float32
# features, the rank and the flat position (int64), and the int64 pair of
# the nonzero() that finds them -- made for one chunk of NODE_CHUNK_SIZE
# target nodes at a time (SDTClusterer.node_states).
SUBGRAPH_EDGE = 16 + 16 + 8 + 8 + 16
# Node states: hidden = 64 float32, the input and output of a layer (the
# projected inputs are built chunk by chunk and the output is normalised in
# place: SDTEncoder.inference(embedded=True)).
HIDDEN = 64
STATE_COPIES = 2
# Band scoring: the scored pairs of a node are its Top-K pairs (the veto) and
# the b+ ranks beyond (DEFAULT_BAND[1] = 10; int64 position and float32
# probability), at most k - 1; BAND_CHUNK_SIZE pairs scored per chunk, ~1.7 KB
# each.
BAND_PAIR = 8 + 4
BAND_CHUNK_PAIR = 1800
# Final links while they are made: the int64 pair, the float32 weight, the
# int64 position and the int64 node of each (the candidates of one chunk of
# LINK_CHUNK_SIZE nodes at a time: masks, nonzero() pairs and, with
# max_links, the per-node ranking; about LINK_CHUNK_ENTRY bytes per kNN
# entry of the chunk).
LINK = 16 + 4 + 8 + 8
LINK_CHUNK_ENTRY = 64
# What the run holds of each link while Infomap runs: the int64 pair and the
# float32 weight (each chunk handed over is converted to float64 on its own).
LINK_HELD = 16 + 4
# Infomap's own graph (nodes, links, flow) per link, plus ~0.5 KB per node
# including one chunk of links handed over: measured (with a float64 copy of
# every weight, 8 bytes, then held too) 107 and 130 bytes per link beside
# the links' 44 at 1M and 100K LFW-like synthetic faces, and 109-110 bytes
# per link all told at 100K and 1M MS-Celeb-like faces (7.1M and 69M links;
# benchmarks/scale.py).
INFOMAP_LINK = 86
INFOMAP_NODE = 600
# Cluster ids, metrics' contingency and consecutive relabelling, per node.
METRICS_NODE = 64
# Address space that a run maps without making it resident, held back from
# RLIMIT_AS (ulimit -v) on top of the current size: the libraries loaded
# after the check, and per worker thread its stack (8 MiB) and its glibc
# malloc arena (64 MiB reserved) -- measured 120 + 64-70 MiB per thread
# (torch or numba, whichever has more) above the resident growth.
ADDRESS_SPACE_LIBRARIES = 96 * 2**20
ADDRESS_SPACE_THREAD = 72 * 2**20


def topk_batch_bytes(batch: int, k: int) -> int:
    r"""Bytes of one batch of :obj:`batch` nodes through the shipped Top-K
    predictor: :math:`4 B k (4 k + 7 \cdot 64)`."""
    attention = TOPK_MAP_COPIES * TOPK_HEADS * k
    return 4 * batch * k * (attention + TOPK_ACTIVATION_COPIES * TOPK_CHANNELS)


def _exact_block_bytes(num_nodes: int) -> int:
    # The similarity block of the symmetric exact search, its group maxima
    # and tests, and the padded copy of the last, narrower block if any (it
    # is screened against the blocks before it; a single block is not).
    side = min(num_nodes, max(256, math.isqrt(DEFAULT_BLOCK_NUMEL)))
    last = num_nodes - side * ((num_nodes - 1) // side)
    pad = -last % SCREEN_GROUP
    copy = 4 * side * (last + pad) if pad and num_nodes > side else 0
    return int(EXACT_BLOCK_ENTRY * side * side) + copy


def _mean_links(k: int, mean_topk: float | None) -> float:
    if mean_topk is None:
        return max(1.0, k / 4)
    if not 0 < mean_topk <= k:
        raise ValueError(f'mean_topk must lie in (0, k = {k}] (got {mean_topk})')
    return float(mean_topk)


def estimate_memory(
    num_nodes: int,
    dim: int,
    k: int = DEFAULT_K,
    method: str = 'sdt',
    backend: str = 'auto',
    *,
    mean_topk: float | None = None,
    mapped: bool = False,
    graph_given: bool = False,
    max_links: int | None = None,
) -> dict[str, int]:
    r"""Estimates the memory of every stage of a clustering run on the CPU,
    from the sizes of the data structures each stage keeps alive, so that a
    run that cannot fit is refused before it starts
    (:func:`check_memory`).

    With :math:`N` nodes of dimension :math:`D`, :math:`k` neighbours,
    :math:`\bar{K}` Top-K edges (and final links) per node and :math:`T`
    worker threads, the building blocks are

    .. math::
        F = 4 N D, \quad G = 12 N k, \quad
        J = 12 N k + N (8 + 4 T), \quad E = \bar{K} N,

    the features (float32), the kNN graph (int64 id + float32 similarity per
    entry), the Top-K Jaccard scratch and the Top-K edges. With
    :obj:`mapped=True` (features on a read-only memory-mapped file, as
    :func:`~torch_geometric_sdt.io.load_features` reads ``.npy`` and ``.bin``
    files) :math:`F = 0` in every stage: the kNN search reads them in chunks
    whose pages it hands back
    (:func:`~torch_geometric_sdt.nn.knn.common.prepare`), and nothing else
    reads more than a sample of rows. Each stage counts
    what is alive while it runs, plus :math:`R` = 192 MiB for what the run
    holds beyond its data (the libraries it imports after the check, what
    the allocator keeps of earlier stages; measured 140-230 MiB), 64 MiB in
    the ``knn`` stage, which runs first (nothing earlier is kept, the numba
    kernels of the later stages are not compiled yet):

    * ``knn`` (exact): :math:`F + F' + G + 2 \cdot 12 N (k+1) + 4.3 \min(N,
      B)^2` (:math:`F' = 4 N D` the normalised copy the search works on,
      the running lists of the :math:`k+1` best
      and their sorted copy, :math:`B = 5792` the side of a similarity block,
      with its group maxima; plus a padded copy of the last block when its
      width is not a multiple of 16); the other backends hold :math:`N
      (k+1)` candidates, 52 bytes each (measured; sorted in row chunks), so
      ``faiss-hnsw`` needs :math:`F + 2F' + G + 52 N (k+1) + 320 N` (the index
      holds a copy of the vectors and :math:`2M = 64` int32 links per node),
      ``faiss`` and ``faiss-ivf`` the same without the links, and
      ``pynndescent`` (the default above 200,000 points) :math:`F + F' + 34
      N (k+1)` (the normalised copy it searches, and its heaps, forest and
      candidates; measured at 400K and 1M points; the lists are made after
      its search);
    * ``context``: :math:`F + G + 4Nk + J` (the set Jaccard of the lists);
    * ``topk``: :math:`F + G + 4Nk + 8N + 4 \min(N, 256) \, k \,
      (4 k + 7 \cdot 64)` (one batch of 256 nodes,
      :obj:`~torch_geometric_sdt.nn.models.TOPK_BATCH_SIZE`: a
      :math:`[B, 4, k, k]` attention map and seven :math:`[B, k, 64]`
      activations; measured 891 MiB per batch of 4096 at :math:`k = 80`,
      against 960 MiB here);
    * ``jaccard``: :math:`F + G + 2 \cdot 4Nk + 8N + J`;
    * ``sdt``: node states (:math:`64 \cdot 4 \cdot 2` bytes per node) with
      either one chunk of :math:`\min(N, 8192) \bar{K}` edges through the
      encoder at 1600 bytes, with their inputs at 64 bytes (the node and
      edge inputs are made chunk by chunk), or the scored pairs (:math:`P =
      \min(\bar{K} + 10, k - 1) N` of 12 bytes: every Top-K pair for the
      veto and the 10 ranks beyond) and one chunk of :math:`\min(P,
      2^{15})` pairs at 1800 bytes, on top of :math:`F + G + 8Nk + 8N`;
    * ``links_infomap``: with :math:`M = \min(\bar{K}, L) N` links
      (:math:`L` = :obj:`max_links`, no limit if :obj:`None`), the larger
      of making them, :math:`F + G + 8Nk + 8N + 12 P + 36 M + 64 k
      \min(N, 2^{14})` (beside the context, the Top-K Jaccard and the
      scored pairs; one chunk of :math:`2^{14}` nodes' candidates at a
      time), and Infomap, :math:`F + 8N + 20 M + 86 M + 600 N` (the links'
      pairs and weights; the scores, the context and with it the kNN graph
      that :meth:`SDTClusterer.cluster` built are freed first; Infomap's
      own graph measured at 100K and 1M nodes), plus :math:`G` when the
      graph is the caller's (:obj:`graph_given`);
    * ``metrics``: :math:`F + 64 N`, plus :math:`G` for the baselines or a
      given graph.

    ``infomap-knn`` runs ``knn``, ``links_infomap`` (early-stopped links,
    :math:`\bar{K}` per node) and ``metrics``; ``fc-es`` adds ``jaccard``
    (the full-list coefficient). ``peak`` is the largest stage. The chunked
    stages' constants are those of the library's default chunk sizes and of
    a model with :class:`SDTClusterer`'s default widths (64 channels, 4
    heads; the shipped model's Top-K predictor is 32 channels wide and needs
    less). For the 5.21M faces of the
    MS-Celeb-1M test set (:math:`D = 256`, :math:`k = 80`, ``pynndescent``,
    mapped features) the peak is the kNN stage, 18.4 GiB (36.6 GiB with
    ``faiss-hnsw``); the SDT stage needs 12.3 GiB (11.9 GiB at a mean Top-K
    of 13.8), the links and Infomap 13.4 GiB (11.9 GiB), the others less.
    With the features in memory every stage needs 5 GiB more (23.4 GiB).
    Measured on synthetic faces read from a file (``benchmarks/scale.py``),
    at the mean Top-K the shipped model predicted: at 5.21M faces the model
    gives 18.4 GiB for a 16.6 GiB peak, at 1M 3.6 GiB for 3.4 GiB, at 100K
    (the exact search's estimate is the peak) 577 MiB for 520 MiB, at 10K
    397 MiB for 322 MiB (1.23 times: the fixed :math:`R` dominates). The
    default :math:`\bar{K} = k / 4` overestimates the SDT stage where the
    model predicts fewer: 1.47 times the measured peak at 10K and 1.26 at
    100K, where it predicted 14.2 and 11.4. With large identities (50 to 120
    faces each) the shipped model predicts a mean Top-K near 71, and the
    default :math:`\bar{K}` underestimates: at 100K such faces 0.64 GiB for
    a 1.21 GiB peak, 1.29 GiB with the predicted :math:`\bar{K}` (see
    :func:`after_topk` for a check once it is known); at 1M 7.7 GiB with
    the predicted :math:`\bar{K}` for a 7.4 GiB peak, and with
    :obj:`max_links=16` 3.6 GiB for 3.7 GiB. At 5.21M faces and
    :math:`\bar{K} = 70` the model gives 39 GiB (links and Infomap; SDT
    15 GiB), 18.4 GiB with :obj:`max_links` at most 24.

    Args:
        num_nodes (int): :math:`N`.
        dim (int): :math:`D`.
        k (int, optional): Neighbours per node, self included.
            (default: :obj:`80`)
        method (str, optional): :obj:`'sdt'`, :obj:`'infomap-knn'` or
            :obj:`'fc-es'`. (default: :obj:`'sdt'`)
        backend (str, optional): The kNN backend (:obj:`'auto'` resolves as
            :func:`~torch_geometric_sdt.nn.knn.knn` does on the CPU).
            (default: :obj:`'auto'`)
        mean_topk (float, optional): :math:`\bar{K}`, the Top-K edges and
            final links per node; :obj:`None` for :math:`k / 4`, above the
            10 of the shipped model on synthetic faces. (default: :obj:`None`)
        mapped (bool, optional): The features are a read-only memory-mapped
            file (:func:`~torch_geometric_sdt.io.load_features`), held by no
            stage. (default: :obj:`False`)
        graph_given (bool, optional): The kNN graph is the caller's
            (:obj:`SDTClusterer.cluster(graph=...)`, ``sdt cluster --knn``):
            no ``knn`` stage, and the graph stays alive to the end.
            (default: :obj:`False`)
        max_links (int, optional): :math:`L`, the links per node the SDT
            keeps (:obj:`SDTClusterer.cluster(max_links=...)`, ``sdt cluster
            --max-links``); only with :obj:`method='sdt'`.
            (default: :obj:`None`)

    Returns:
        dict: Bytes per stage, and :obj:`'peak'`, their maximum.
    """
    for name, value in (('num_nodes', num_nodes), ('dim', dim), ('k', k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int (got {value!r})')
    if method not in METHODS:
        raise ValueError(f'unknown method {method!r} (expected one of {METHODS})')
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r} (expected one of {BACKENDS})')
    backend = resolve_backend(backend, num_nodes, torch.device('cpu'))
    if max_links is not None:
        if method != 'sdt':
            raise ValueError("max_links is an option of method='sdt'")
        check_max_links(max_links)
    n, nk = num_nodes, num_nodes * k
    kbar = _mean_links(k, mean_topk)
    edges = int(kbar * n)
    # The links: one per Top-K edge and node, at most max_links per node.
    num_links = edges if max_links is None else int(min(kbar, max_links) * n)
    threads = os.cpu_count() or 1

    # Mapped features are read by chunks whose pages are handed back
    # (nn.knn.common.prepare): no stage holds them.
    feat = 0 if mapped else 4 * n * dim
    copy = 4 * n * dim  # the normalised copy the search works on
    graph = KNN_ENTRY * nk
    scratch = JACCARD_ENTRY * nk + n * (JACCARD_NODE + JACCARD_THREAD_NODE * threads)
    if backend == 'exact':
        search = 2 * KNN_ENTRY * n * (k + 1) + _exact_block_bytes(n)
    elif backend == 'pynndescent':
        search = NNDESCENT_ENTRY * n * (k + 1)
    else:  # faiss: the index keeps its own copy of the vectors
        search = CANDIDATE_ENTRY * n * (k + 1) + copy
        search += HNSW_NODE * n if backend == 'faiss-hnsw' else 0
    # pynndescent's lists are made after its search, not beside it:
    lists = 0 if backend == 'pynndescent' else graph
    out: dict[str, int] = {'knn': feat + copy + lists + search}

    links = LINK * num_links
    infomap = INFOMAP_LINK * num_links + INFOMAP_NODE * n
    if method == 'sdt':
        shared = 4 * nk
        out['context'] = feat + graph + shared + scratch
        batch = topk_batch_bytes(min(n, TOPK_BATCH_SIZE), k)
        out['topk'] = feat + graph + shared + 8 * n + batch
        out['jaccard'] = feat + graph + 2 * shared + 8 * n + scratch
        kept = feat + graph + 2 * shared + 8 * n + 4 * HIDDEN * STATE_COPIES * n
        encode = (SUBGRAPH_EDGE + ENCODER_EDGE) * int(kbar * min(n, NODE_CHUNK_SIZE))
        pairs = int(min(kbar + DEFAULT_BAND[1], k - 1) * n)
        band = BAND_PAIR * pairs
        score = band + BAND_CHUNK_PAIR * min(pairs, BAND_CHUNK_SIZE)
        out['sdt'] = kept + max(encode, score)
        # The links are made beside the context, the Top-K Jaccard and the
        # scores; SDTClusterer.cluster then frees those (and with the
        # context the kNN graph it built) before Infomap:
        making = feat + graph + 2 * shared + 8 * n + band + links
        making += LINK_CHUNK_ENTRY * k * min(n, LINK_CHUNK_SIZE)
        left = feat + (graph if graph_given else 0) + 8 * n
        held = LINK_HELD * num_links
        out['links_infomap'] = max(making, left + held + infomap)
    else:
        if method == 'fc-es':
            out['jaccard'] = feat + graph + 2 * 4 * nk + scratch
        out['links_infomap'] = feat + graph + links + infomap
    out['metrics'] = feat + graph + METRICS_NODE * n
    if method == 'sdt' and not graph_given:
        out['metrics'] -= graph  # freed with the context before Infomap
    if graph_given:
        del out['knn']
    out = {
        stage: value + (SEARCH_RUNTIME if stage == 'knn' else RUNTIME)
        for stage, value in out.items()
    }
    out['peak'] = max(out.values())
    return out


#: What one Ray worker process holds beyond the data of its task (the
#: interpreter, torch and Ray's own client).
RAY_WORKER_RUNTIME = 320 * 2**20


def estimate_ray_memory(
    num_nodes: int,
    dim: int,
    k: int = DEFAULT_K,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    mean_topk: float | None = None,
) -> dict[str, int]:
    r"""Estimates the memory of the SDT pipeline on the Ray engine
    (:mod:`~torch_geometric_sdt.nn.models.sdt_distributed`), in bytes, per
    place where it lives. With the symbols of :func:`estimate_memory`,
    :math:`B` = :obj:`block_rows` nodes per task and :math:`H = 64`:

    * ``object_store``: what the driver shares once, on every node whose
      tasks read it: the parts (:math:`F`), ids and similarities (:math:`G`),
      the set Jaccard (:math:`4 N k`), the Top-K (:math:`8 N`), and the
      larger of what the Jaccard stages share while they run (the checked
      lists: :obj:`int32` ids, probabilities, offsets, Top-K and visit
      order, :math:`8 N k + 24 N`) and what the encoder stages hold later
      (the Top-K Jaccard, :math:`4 N k`, and two generations of node
      states, :math:`2 \cdot 4 N H`);
    * ``worker``: the largest task, plus :math:`R_w` = 320 MiB of runtime
      per worker process: a kNN task holds its query block, one similarity
      block and its running lists (:math:`4 B D + 4 \cdot 2^{25} + 3 \cdot
      12 B k`); a Jaccard task its block's output and offsets (:math:`4 B k
      + 8 B`) and one mark array over all nodes per thread (:math:`4 N`: the
      only term that grows with :math:`N`); a Top-K task one batch of 256 nodes;
      an encoder task one chunk of 8192 nodes' Top-K edges; a band task one
      chunk of :math:`2^{15}` pairs. Arrays read from the object store are
      mapped, not copied, and count in ``object_store``;
    * ``driver``: what the local engine holds after the search (the largest
      of its ``context``, ``jaccard``, ``sdt`` and ``links_infomap`` stages,
      :func:`estimate_memory`) plus one gathered stage output while it is
      concatenated (:math:`4 N k`).

    A node running :math:`W` workers needs ``object_store`` plus :math:`W`
    times ``worker`` (plus ``driver`` on the driver's node).

    Returns:
        dict: :obj:`'object_store'`, :obj:`'worker'`, :obj:`'driver'`, and
        the worker's stages (:obj:`'worker_knn'`, ...).
    """
    for name, value in (
        ('num_nodes', num_nodes),
        ('dim', dim),
        ('k', k),
        ('block_rows', block_rows),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive int (got {value!r})')
    n, nk, b = num_nodes, num_nodes * k, min(block_rows, num_nodes)
    kbar = _mean_links(k, mean_topk)
    jaccard_lists = 8 * nk + 24 * n
    later = 4 * nk + 2 * 4 * HIDDEN * n
    store = 4 * n * dim + KNN_ENTRY * nk + 4 * nk + 8 * n + max(jaccard_lists, later)
    threads = 1  # one thread per task (one CPU each)
    tasks = {
        'worker_knn': 4 * b * dim + 4 * DEFAULT_BLOCK_NUMEL + 3 * KNN_ENTRY * b * k,
        'worker_jaccard': n * JACCARD_THREAD_NODE * threads + 4 * b * k + 8 * b,
        'worker_topk': topk_batch_bytes(min(n, TOPK_BATCH_SIZE), k) + 8 * b,
        'worker_sdt': ENCODER_EDGE * int(kbar * min(n, NODE_CHUNK_SIZE))
        + 4 * HIDDEN * b,
        'worker_band': BAND_CHUNK_PAIR * BAND_CHUNK_SIZE,
    }
    local = estimate_memory(n, dim, k, 'sdt', 'exact', mean_topk=mean_topk)
    driver = max(local[s] for s in ('context', 'jaccard', 'sdt', 'links_infomap'))
    out = {key: value + RAY_WORKER_RUNTIME for key, value in tasks.items()}
    out['worker'] = max(out.values())
    out['object_store'] = store
    out['driver'] = driver + 4 * nk
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == 'max' or not text.lstrip('-').isdigit():
        return None
    return int(text)


def _status_bytes(key: str) -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_limits() -> list[tuple[int, str]]:
    r"""Remaining bytes under this process's cgroup memory limit (v2
    :obj:`memory.max`, v1 :obj:`memory.limit_in_bytes`), where one is set."""
    out = []
    root = Path('/sys/fs/cgroup')
    paths: list[str] = []
    try:
        for line in Path('/proc/self/cgroup').read_text().splitlines():
            parts = line.split(':', 2)
            if len(parts) == 3 and (parts[0] == '0' or 'memory' in parts[1]):
                paths.append(parts[2].lstrip('/'))
    except OSError:
        pass
    seen = set()
    for rel in [*paths, '']:
        for limit, usage, sub in (
            ('memory.max', 'memory.current', ''),
            ('memory.limit_in_bytes', 'memory.usage_in_bytes', 'memory'),
        ):
            folder = root / sub / rel
            if folder in seen:
                continue
            value = _read_int(folder / limit)
            if value is None or value >= 1 << 60:
                continue
            seen.add(folder)
            used = _read_int(folder / usage) or 0
            out.append((max(0, value - used), f'cgroup {folder / limit}'))
    return out


def _worker_threads() -> int:
    """The most threads one library (torch or numba) runs work on."""
    numba = sys.modules.get('numba')
    if numba is not None:
        num_numba = int(numba.config.NUMBA_NUM_THREADS)
    else:
        text = os.environ.get('NUMBA_NUM_THREADS', '')
        num_numba = int(text) if text.isdigit() else (os.cpu_count() or 1)
    return max(1, torch.get_num_threads(), num_numba)


def address_space_reserve() -> int:
    r"""Bytes of address space a run maps beyond what it makes resident, held
    back from the room under :obj:`RLIMIT_AS` (``ulimit -v``) by
    :func:`available_memory`: the libraries loaded after the check
    (96 MiB) and, for every worker thread (the more of torch's and numba's),
    its stack and its glibc malloc arena, 72 MiB (the arenas are capped by
    :obj:`MALLOC_ARENA_MAX`, else 8 per CPU). Measured: 120 MiB plus
    64-70 MiB per thread above the resident growth of a run.
    """
    threads = _worker_threads()
    cpus = os.cpu_count() or 1
    text = os.environ.get('MALLOC_ARENA_MAX', '')
    arenas = int(text) if text.isdigit() and int(text) > 0 else 8 * cpus
    stacks = 8 * 2**20 * threads
    heaps = (ADDRESS_SPACE_THREAD - 8 * 2**20) * min(threads, arenas)
    return ADDRESS_SPACE_LIBRARIES + stacks + heaps


def available_memory() -> tuple[int, str]:
    r"""The memory this process may still use: the smallest of the system's
    :obj:`MemAvailable`, the room left under :obj:`RLIMIT_AS` (address
    space) and :obj:`RLIMIT_DATA`, and under a cgroup memory limit.

    The room under :obj:`RLIMIT_AS` is the limit less the current virtual
    size and less :func:`address_space_reserve`, the address space the run
    will map without using it (thread stacks and malloc arenas, libraries),
    so that the resident estimate of :func:`estimate_memory` compares
    with it.

    Returns:
        (bytes, source): The bytes and the name of the binding limit.
    """
    found: list[tuple[int, str]] = []
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    found.append((int(line.split()[1]) * 1024, 'MemAvailable'))
    except OSError:
        pass
    for rlimit, key, name in (
        (resource.RLIMIT_AS, 'VmSize', 'RLIMIT_AS'),
        (resource.RLIMIT_DATA, 'VmData', 'RLIMIT_DATA'),
    ):
        soft, _ = resource.getrlimit(rlimit)
        if soft != resource.RLIM_INFINITY:
            used = _status_bytes(key) or 0
            if rlimit == resource.RLIMIT_AS:
                reserve = address_space_reserve()
                used += reserve
                name = (
                    f'RLIMIT_AS, less the current {_gib(used - reserve)} and '
                    f'{_gib(reserve)} for thread stacks, malloc arenas and '
                    'libraries'
                )
            found.append((max(0, soft - used), name))
    found += _cgroup_limits()
    if not found:
        return 1 << 62, 'unknown'
    return min(found)


#: The stages of ``method='sdt'`` whose size the Top-K sets, run after it.
TOPK_LATER_STAGES = ('jaccard', 'sdt', 'links_infomap', 'metrics')


def after_topk(estimate: dict[str, int], num_nodes: int, k: int) -> tuple[dict, int]:
    r"""Splits an SDT :func:`estimate_memory` result at the moment the Top-K
    is known: the stages still to run (:obj:`TOPK_LATER_STAGES`, with their
    :obj:`'peak'`) and the bytes the run holds then, the ``topk`` stage less
    its batch (:func:`topk_batch_bytes`), which the later stages' figures
    count too.

    Args:
        estimate (dict): An :func:`estimate_memory` result for
            :obj:`method='sdt'`, best made with the predicted
            :obj:`mean_topk`.
        num_nodes (int): :math:`N`.
        k (int): Neighbours per node.

    Returns:
        (dict, int): The later stages and the bytes held.
    """
    if not isinstance(estimate, dict) or 'topk' not in estimate:
        raise ValueError("estimate must be an SDT estimate with a 'topk' stage")
    later = {stage: estimate[stage] for stage in TOPK_LATER_STAGES}
    later['peak'] = max(later.values())
    held = estimate['topk'] - topk_batch_bytes(min(num_nodes, TOPK_BATCH_SIZE), k)
    return later, held


def _gib(num_bytes: float) -> str:
    return f'{num_bytes / 2**30:.2f} GiB'


def check_memory(
    estimate: dict[str, int],
    available: int | None = None,
    source: str = 'given',
) -> int:
    r"""Raises :class:`MemoryError` when the :obj:`'peak'` of an
    :func:`estimate_memory` result exceeds the memory this process may still
    use (:func:`available_memory`: the least of :obj:`MemAvailable`,
    :obj:`RLIMIT_AS`, :obj:`RLIMIT_DATA` and a cgroup limit), so that a run
    fails at once instead of being killed hours in. The message gives the
    need against the room, every stage's share and what to change.

    Args:
        estimate (dict): Bytes per stage with a :obj:`'peak'` entry.
        available (int, optional): The room in bytes; measured if
            :obj:`None`. (default: :obj:`None`)
        source (str, optional): What a given :obj:`available` is, named in
            the message. (default: :obj:`'given'`)

    Returns:
        int: The available bytes.

    Raises:
        MemoryError: If the peak does not fit.
    """
    if not isinstance(estimate, dict) or 'peak' not in estimate:
        raise ValueError("estimate must be a dict of bytes with a 'peak' entry")
    if available is None:
        available, source = available_memory()
    elif available < 0:
        raise ValueError(f'available must be non-negative (got {available})')
    peak = estimate['peak']
    if peak <= available:
        return available
    stages = {key: value for key, value in estimate.items() if key != 'peak'}
    worst = max(stages, key=stages.get) if stages else 'peak'
    detail = ', '.join(f'{key} {_gib(value)}' for key, value in stages.items())
    raise MemoryError(
        f'this run needs about {_gib(peak)} of memory (largest stage: {worst}) '
        f'but only {_gib(available)} is available ({source}); per stage: '
        f'{detail}. To fit: a smaller k, another kNN backend if the knn stage '
        'is the largest (estimate_memory(..., backend=...) gives the need of '
        'each), smaller chunks (chunk_size / batch_size in the Python API), '
        'or fewer points per run'
        + (
            '; with the SDT, fewer links per node (max_links in the Python API, '
            '--max-links in sdt cluster) shrink the links_infomap stage'
            if worst == 'links_infomap'
            else ''
        )
        + (
            '; under an address-space limit, fewer threads (OMP_NUM_THREADS, '
            'NUMBA_NUM_THREADS) or MALLOC_ARENA_MAX=2 leave more room'
            if source.startswith('RLIMIT_AS')
            else ''
        )
    )


__all__ = [
    'estimate_memory',
    'estimate_ray_memory',
    'check_memory',
    'available_memory',
    'topk_batch_bytes',
    'after_topk',
    'TOPK_LATER_STAGES',
]
