r"""Clustering again only where the links changed, with stable cluster ids.

**The region.** A row's links are its set of (neighbour, weight) pairs. The
clusters *touched* by an update are those holding a row whose links changed
(new or removed rows, a link added, dropped or moved, or a weight moved by
more than the linker's tolerance) or the old or new neighbour of such a
link.
Infomap runs on the links among the members of the touched clusters and the
new rows; every other cluster keeps its members and its id. Links from the
region to untouched clusters are left out of that run: Infomap then cannot
move a node into an untouched cluster, which is the locality the update
trades for speed (the benchmark measures its cost in F-score).

**Stable ids.** Old ids pass to new modules by largest overlap, greedily
(each old id to at most one module and each module at most one old id);
modules left without one get fresh ids, never used before. A cluster whose
members are all in one module and that module's only old cluster keeps its
id. The history records what ids became:

* :obj:`'merge'`: a module holds members of several old clusters
  (:obj:`source` those ids, :obj:`target` the id it keeps);
* :obj:`'split'`: an old cluster's members spread over several modules;
* :obj:`'new'`: a module with no old member;
* :obj:`'vanish'`: an old cluster without any member left.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.utils.infomap import cluster_links

#: A history event: (kind, source ids, target ids, faces in the target).
Event = tuple[str, list[int], list[int], int]


class Relabeling(NamedTuple):
    """The outcome of :func:`recluster`."""

    labels: np.ndarray  #: Cluster id of every row, :obj:`-1` for removed rows.
    next_id: int  #: The first id never used.
    events: list[Event]
    region_size: int  #: Rows Infomap ran on.
    touched: list[int]  #: The old cluster ids of the region.


def link_targets(index: Tensor, links: Tensor) -> Tensor:
    """The neighbour of every link, :obj:`-1` where there is none."""
    return index.masked_fill(torch.isnan(links), -1)


def changed_rows(
    old_index: Tensor,
    old_links: Tensor,
    index: Tensor,
    links: Tensor,
    tolerance: float = 0.0,
) -> Tensor:
    r"""Rows whose links differ (:obj:`BoolTensor[N]`): a link added,
    dropped or moved to another neighbour, or a weight that moved by more
    than :obj:`tolerance`. The old tensors may have fewer rows (rows past
    them count as changed)."""
    n_old = old_index.size(0)
    out = torch.ones(index.size(0), dtype=torch.bool)
    before = link_targets(old_index, old_links)
    after = link_targets(index[:n_old], links[:n_old])
    close = (old_links - links[:n_old]).abs() <= tolerance
    same = (before == after) & (close | (after < 0))
    out[:n_old] = ~same.all(dim=1)
    return out


def recluster(
    labels: np.ndarray,
    next_id: int,
    old_targets: Tensor,
    index: Tensor,
    links: Tensor,
    changed: Tensor,
    dead: Tensor,
    *,
    seed: int = 123,
    progress: bool = False,
) -> Relabeling:
    r"""Re-clusters the region an update touched (see the module docstring).

    Args:
        labels (numpy.ndarray): Cluster ids before the update, :obj:`[N]`
            (:obj:`-1` for new and removed rows).
        next_id (int): The first id never used.
        old_targets (torch.Tensor): The links' neighbours before the update
            (:func:`link_targets`), possibly fewer rows.
        index (torch.Tensor): The kNN lists now :obj:`[N, k]`.
        links (torch.Tensor): The link weights now :obj:`[N, k]` (:obj:`NaN`
            no link; none from or to removed rows).
        changed (torch.Tensor): Rows whose links changed, :obj:`BoolTensor[N]`.
        dead (torch.Tensor): Removed rows, :obj:`BoolTensor[N]`.
        seed (int, optional): Infomap's seed. (default: :obj:`123`)
        progress (bool, optional): Progress bars. (default: :obj:`False`)
    """
    n = index.size(0)
    labels = labels.copy()
    lab = torch.from_numpy(labels)
    targets = link_targets(index, links)
    rows = changed.nonzero().view(-1)
    near = torch.cat(
        [
            rows,
            targets[rows].view(-1),
            old_targets[rows[rows < old_targets.size(0)]].view(-1),
        ]
    )
    near = near[near >= 0]
    touched = torch.unique(lab[near])
    touched = touched[touched >= 0]
    in_region = torch.isin(lab, touched) | changed
    in_region &= ~dead
    region = in_region.nonzero().view(-1)
    local = torch.full((n,), -1, dtype=torch.long)
    local[region] = torch.arange(region.numel())
    src = region.view(-1, 1).expand_as(targets[region])
    dst = targets[region]
    keep = dst >= 0
    keep[keep.clone()] = local[dst[keep]] >= 0
    edge_index = torch.stack([local[src[keep]], local[dst[keep]]])
    weight = links[region][keep]
    modules = cluster_links(
        edge_index, weight, region.numel(), seed=seed, progress=progress
    ).numpy()

    old = labels[region.numpy()]
    new, next_id, events = _stable_ids(old, modules, next_id)
    labels[region.numpy()] = new
    gone = np.setdiff1d(touched.numpy(), new)
    # Touched old clusters left without a member (not merged elsewhere):
    merged = {c for e in events if e[0] in ('merge', 'split') for c in e[1]}
    for c in gone:
        if int(c) not in merged:
            events.append(('vanish', [int(c)], [], 0))
    labels[dead.numpy()] = -1
    return Relabeling(labels, next_id, events, int(region.numel()), touched.tolist())


def _stable_ids(
    old: np.ndarray, modules: np.ndarray, next_id: int
) -> tuple[np.ndarray, int, list[Event]]:
    """Ids for the region's modules from the old ids by largest overlap."""
    num_modules = int(modules.max(initial=-1)) + 1
    has_old = old >= 0
    pairs, count = np.unique(
        np.stack([modules[has_old], old[has_old]]), axis=1, return_counts=True
    )
    order = np.lexsort((pairs[1], pairs[0], -count))  # Largest overlap first.
    module_id = np.full(num_modules, -1, dtype=np.int64)
    used: set[int] = set()
    for m, c in pairs[:, order].T:
        if module_id[m] < 0 and int(c) not in used:
            module_id[m] = c
            used.add(int(c))
    fresh = module_id < 0
    module_id[fresh] = next_id + np.arange(int(fresh.sum()))
    next_id += int(fresh.sum())

    events: list[Event] = []
    sizes = np.bincount(modules, minlength=num_modules)
    # (module, old id) pairs are distinct and sorted by module: each module's
    # old ids are one contiguous run.
    starts = np.searchsorted(pairs[0], np.arange(num_modules + 1))
    for m in np.flatnonzero(np.diff(starts) >= 2):
        sources = pairs[1, starts[m] : starts[m + 1]]
        events.append(('merge', sources.tolist(), [int(module_id[m])], int(sizes[m])))
    for m in np.flatnonzero(np.diff(starts) == 0):
        events.append(('new', [], [int(module_id[m])], int(sizes[m])))
    by_old = np.lexsort((pairs[0], pairs[1]))
    olds, first, num_dest = np.unique(
        pairs[1, by_old], return_index=True, return_counts=True
    )
    for c, lo, num in zip(olds, first, num_dest):
        if num >= 2:
            at = by_old[lo : lo + num]
            dest = np.sort(module_id[pairs[0, at]])
            events.append(('split', [int(c)], dest.tolist(), int(count[at].sum())))
    return module_id[modules], next_id, events


__all__ = ['Event', 'Relabeling', 'changed_rows', 'link_targets', 'recluster']
