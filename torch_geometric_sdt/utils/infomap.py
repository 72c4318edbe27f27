r"""Infomap (Map Equation) clustering of a graph given in PyG's COO form."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

import infomap as infomap_lib
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from torch_geometric_sdt.utils.atomic import process_alive

# Infomap keeps its seed and trial count in C unsigned ints: a larger seed
# wraps (2**32 + 1 runs as seed 1) and larger counts fail to parse.
MAX_SEED = 2**32 - 1
MAX_NUM_TRIALS = 2**32 - 1
# Scratch folders for reading the modules back: sdt-infomap-<pid>-<random>.
_SCRATCH_PREFIX = 'sdt-infomap-'
_SCRATCH_NAME = re.compile(r'sdt-infomap-(\d+)-[A-Za-z0-9_]+')


def check_infomap_options(seed: int, num_trials: int) -> None:
    r"""Raises :class:`ValueError` unless :obj:`seed` and :obj:`num_trials`
    are integers in :math:`[1, 2^{32} - 1]`, the range Infomap takes without
    wrapping or failing (callers can check them before any work).
    """
    for name, value, high in (
        ('seed', seed, MAX_SEED),
        ('num_trials', num_trials, MAX_NUM_TRIALS),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 1 <= value <= high
        ):
            raise ValueError(
                f"'{name}' must be an integer in [1, {high}] (got {value!r})"
            )


def _validate(
    edge_index: Tensor,
    edge_weight: Tensor | None,
    num_nodes: int | None,
) -> tuple[np.ndarray, np.ndarray | None, int]:
    if not isinstance(edge_index, Tensor):
        edge_index = torch.as_tensor(np.asarray(edge_index))
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"'edge_index' must have shape [2, num_edges] "
            f'(got {list(edge_index.shape)})'
        )
    if edge_index.dtype.is_floating_point or edge_index.dtype in (
        torch.bool,
        torch.complex64,
        torch.complex128,
    ):
        raise ValueError(
            f"'edge_index' must have an integer dtype (got {edge_index.dtype})"
        )
    edge_index = edge_index.detach().cpu().long()
    num_edges = edge_index.size(1)
    if num_edges > 0 and int(edge_index.min()) < 0:
        raise ValueError("'edge_index' contains negative node indices")
    max_index = int(edge_index.max()) + 1 if num_edges > 0 else 0
    if num_nodes is None:
        num_nodes = max_index
    elif num_nodes < 0:
        raise ValueError(f"'num_nodes' must be non-negative (got {num_nodes})")
    elif max_index > num_nodes:
        raise ValueError(
            f"'edge_index' refers to node {max_index - 1}, out of range for "
            f"'num_nodes={num_nodes}'"
        )

    weight = None
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor):
            edge_weight = torch.as_tensor(np.asarray(edge_weight))
        if edge_weight.dim() != 1 or edge_weight.numel() != num_edges:
            raise ValueError(
                f"'edge_weight' must have shape [{num_edges}] to match "
                f"'edge_index' (got {list(edge_weight.shape)})"
            )
        # float32 weights stay so (8 bytes per edge less than a float64 copy
        # of all of them); each chunk handed to Infomap is float64.
        weight = edge_weight.detach().cpu()
        if weight.dtype not in (torch.float32, torch.float64):
            weight = weight.to(torch.float64)
        weight = weight.numpy()
        if not np.isfinite(weight).all():
            raise ValueError("'edge_weight' contains NaN or infinite values")
        if num_edges > 0 and weight.min() < 0:
            raise ValueError("'edge_weight' must be non-negative")
    return edge_index.numpy(), weight, int(num_nodes)


def consecutive_cluster_ids(labels: np.ndarray) -> np.ndarray:
    r"""Relabels cluster ids to :math:`0, \ldots, C - 1` in order of first
    occurrence: the cluster of node 0 gets id 0, the next new cluster met when
    scanning the nodes in order gets id 1, and so on.

    Args:
        labels (numpy.ndarray): Integer cluster ids, shape :obj:`[N]`.

    Returns:
        numpy.ndarray: :obj:`int64` ids, shape :obj:`[N]`.
    """
    if labels.size == 0:
        return labels.astype(np.int64)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind='stable')] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


def infomap(
    edge_index: Tensor,
    edge_weight: Tensor | None = None,
    num_nodes: int | None = None,
    *,
    directed: bool = True,
    seed: int = 123,
    num_trials: int = 1,
    two_level: bool = True,
    silent: bool = True,
    chunk_size: int = 1 << 22,
    progress: bool = False,
    **kwargs: Any,
) -> Tensor:
    r"""Clusters a graph by minimising the Map Equation with Infomap
    (`"Maps of random walks on complex networks reveal community structure"
    <https://arxiv.org/abs/0707.0609>`_).

    Infomap looks for the partition under which a random walker on the graph
    is described most briefly: flow that stays inside modules is cheap to
    encode, so modules are regions the walker rarely leaves. Face-clustering
    methods build a sparse graph of likely same-identity pairs and read the
    identities off as Infomap modules.

    **Link direction.** Every column :math:`(s, t)` of :obj:`edge_index`
    becomes the Infomap link :math:`s \to t`: the walker steps from
    :obj:`edge_index[0]` to :obj:`edge_index[1]` with probability
    proportional to :obj:`edge_weight`. A kNN graph in PyG's
    :obj:`flow='source_to_target'` form holds edges neighbour
    :math:`j \to` node :math:`i`; the face-clustering methods
    (face-cluster-by-infomap, FC-ES) link node :math:`\to` neighbour
    instead, i.e. :obj:`edge_index.flip(0)` or
    :obj:`KNN.to_edge_index(flow='target_to_source')`.
    With :obj:`directed=False` the direction is irrelevant.

    The edges are handed to Infomap in bulk, in chunks of
    :obj:`chunk_size` (a :obj:`float64` array of rows
    :obj:`(source, target, weight)`), never edge by edge. Parallel edges are
    summed by Infomap; self-loops are kept. Nodes that no edge touches
    (isolated nodes, or all nodes when :obj:`edge_index` is empty) become
    singleton clusters.

    Args:
        edge_index (torch.Tensor): The edge indices, :obj:`LongTensor[2, E]`.
        edge_weight (torch.Tensor, optional): Non-negative finite edge
            weights, shape :obj:`[E]`. Unit weights if :obj:`None`.
            (default: :obj:`None`)
        num_nodes (int, optional): The number of nodes :math:`N`; inferred as
            :obj:`edge_index.max() + 1` if :obj:`None`. (default: :obj:`None`)
        directed (bool, optional): Directed flow (with teleportation, as in
            Infomap's :obj:`--directed`); :obj:`False` for undirected flow.
            (default: :obj:`True`)
        seed (int, optional): Infomap's random seed, in
            :math:`[1, 2^{32} - 1]`; the same seed and input give the same
            partition. (default: :obj:`123`)
        num_trials (int, optional): Independent trials, in
            :math:`[1, 2^{32} - 1]`; the partition of shortest description
            length is kept. (default: :obj:`1`)
        two_level (bool, optional): Optimise a flat two-level partition
            (:obj:`True`) rather than a hierarchy; with :obj:`False` the
            top-level modules are returned. (default: :obj:`True`)
        silent (bool, optional): Suppress Infomap's log. (default: :obj:`True`)
        chunk_size (int, optional): Edges handed over per bulk call, bounding
            the extra memory. (default: :obj:`4194304`)
        progress (bool, optional): Show a progress bar over the chunks.
            (default: :obj:`False`)
        **kwargs (optional): Further options of :class:`infomap.Infomap`,
            e.g. :obj:`markov_time` or :obj:`teleportation_probability`.

    Returns:
        torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0,
        numbered in order of each cluster's first node.

    Raises:
        ValueError: If :obj:`edge_index` is not an integer tensor of shape
            :obj:`[2, E]` with indices in :math:`[0, N)`, or :obj:`edge_weight`
            is not :math:`E` finite non-negative values, or :obj:`seed` or
            :obj:`num_trials` lies outside :math:`[1, 2^{32} - 1]`.
    """
    check_infomap_options(seed, num_trials)
    if chunk_size < 1:
        raise ValueError(f"'chunk_size' must be at least 1 (got {chunk_size})")
    index, weight, num_nodes = _validate(edge_index, edge_weight, num_nodes)
    num_edges = index.shape[1]

    labels = np.arange(num_nodes, dtype=np.int64)
    if num_edges > 0:
        engine = infomap_lib.Infomap(
            silent=silent,
            two_level=two_level,
            directed=directed,
            seed=seed,
            num_trials=num_trials,
            **kwargs,
        )
        starts = range(0, num_edges, chunk_size)
        for start in tqdm(starts, desc='Infomap input', disable=not progress):
            end = min(start + chunk_size, num_edges)
            links = np.empty((end - start, 3), dtype=np.float64)
            links[:, 0] = index[0, start:end]
            links[:, 1] = index[1, start:end]
            links[:, 2] = 1.0 if weight is None else weight[start:end]
            engine.add_links(links)
        engine.run()
        node, module = _read_modules(engine)
        # Isolated nodes keep their own id, shifted past every module id:
        labels += int(module.max()) + 1
        labels[node] = module
    return torch.from_numpy(consecutive_cluster_ids(labels))


def cluster_links(
    edge_index: Tensor,
    weight: Tensor,
    num_nodes: int,
    *,
    seed: int = 123,
    num_trials: int = 1,
    progress: bool = False,
) -> Tensor:
    r"""Clusters links node :math:`\to` neighbour with directed two-level
    Infomap, the last step of every method in this package.

    As in the reference implementations, a node without an outgoing link is
    a singleton, even when other nodes link to it.

    Args:
        edge_index (torch.Tensor): Links :obj:`LongTensor[2, M]`, row 0 the
            node, row 1 its neighbour.
        weight (torch.Tensor): Link weights :obj:`[M]`, non-negative.
        num_nodes (int): :math:`N`.
        seed (int, optional): Infomap's seed, in :math:`[1, 2^{32} - 1]`.
            (default: :obj:`123`)
        num_trials (int, optional): Infomap trials, in
            :math:`[1, 2^{32} - 1]`. (default: :obj:`1`)
        progress (bool, optional): Progress bars. (default: :obj:`False`)

    Returns:
        torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0.
    """
    labels = infomap(
        edge_index,
        weight,
        num_nodes,
        directed=True,
        two_level=True,
        seed=seed,
        num_trials=num_trials,
        progress=progress,
    ).numpy()
    unlinked = np.ones(num_nodes, dtype=bool)
    unlinked[edge_index[0].numpy()] = False
    labels[unlinked] = labels.max(initial=-1) + 1 + np.flatnonzero(unlinked)
    return torch.from_numpy(consecutive_cluster_ids(labels))


def _read_modules(engine: infomap_lib.Infomap) -> tuple[np.ndarray, np.ndarray]:
    r"""Reads the top-level module of every node through a :obj:`.clu` file
    written by Infomap itself.

    Infomap's accessors (:obj:`get_modules`, :obj:`Result.modules`, the node
    data columns) hand out SWIG-wrapped C++ containers, which crash the
    process when another SWIG module (faiss) was imported after infomap; the
    file route avoids them, and is the fastest (1.4 s for 1M nodes, against
    2.5 s for the node data columns and 12 s for :obj:`Result.modules`).
    Infomap writes the file through a temporary and a rename, so it needs a
    real folder: one of its own, named after this process
    (:obj:`sdt-infomap-<pid>-<random>`), so that the folder of a process
    killed outright can be told apart and is removed by the next run.
    """
    remove_stale_scratch()
    tmp = tempfile.mkdtemp(prefix=f'{_SCRATCH_PREFIX}{os.getpid()}-')
    try:
        path = os.path.join(tmp, 'modules.clu')
        engine.write_clu(path)
        table = np.loadtxt(path, comments='#', usecols=(0, 1), dtype=np.int64, ndmin=2)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return table[:, 0], table[:, 1]


def remove_stale_scratch(directory: str | None = None) -> list[str]:
    r"""Removes the scratch folders (:obj:`sdt-infomap-<pid>-<random>`) that
    processes killed during Infomap left in :obj:`directory` (the temporary
    directory by default): those of this user whose process is gone. Folders
    of live processes and every other entry are left alone.

    Returns:
        list: The removed paths.
    """
    directory = tempfile.gettempdir() if directory is None else directory
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    uid = getattr(os, 'getuid', lambda: None)()
    for entry in entries:
        match = _SCRATCH_NAME.fullmatch(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


__all__ = [
    'infomap',
    'cluster_links',
    'consecutive_cluster_ids',
    'check_infomap_options',
    'remove_stale_scratch',
]
