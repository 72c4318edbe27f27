r"""A persistent index of clustered faces that takes additions and removals
without clustering everything again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.baselines import DEFAULT_THRESHOLDS
from torch_geometric_sdt.defaults import DEFAULT_K, METHODS
from torch_geometric_sdt.index.graph import offer_reverse, refill, search_both_ways
from torch_geometric_sdt.index.links import (
    TOLERANCE,
    EarlyStopLinker,
    Linker,
    SDTLinker,
    State,
)
from torch_geometric_sdt.index.relabel import (
    changed_rows,
    link_targets,
    recluster,
)
from torch_geometric_sdt.index.store import IndexStore
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.nn.knn.api import prepare
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.utils.infomap import check_infomap_options, cluster_links
from torch_geometric_sdt.utils.interrupt import deferred_interrupts
from torch_geometric_sdt.utils.knn_features import SimilarityScale
from torch_geometric_sdt.utils.validation import check_choice

_MODEL_FILE = 'model.safetensors'


class ClusterIndex:
    r"""A persistent index of clustered embeddings (faces first) that takes
    additions and removals without clustering everything again.

    .. code-block:: python

        from torch_geometric_sdt.index import ClusterIndex

        index = ClusterIndex.create('photos.sdtindex', x, ids=names)
        cluster = index.add(x_today, ids=names_today)  # their cluster ids
        index.remove(['img_0042.jpg'])                # forgotten for good
        index.labels()                                # cluster of every face

    **What an update does.** :meth:`add` searches the new faces' exact
    :math:`k`-NN lists among all live faces and offers each new face to the
    old faces it lists (:mod:`~torch_geometric_sdt.index.graph`); the method's
    links are brought up to date where lists changed
    (:mod:`~torch_geometric_sdt.index.links`: for the SDT model, Top-K,
    Top-K Jaccard, node states and band scores of the affected nodes only);
    Infomap runs again on the clusters whose links changed and their
    neighbours, never on everything
    (:mod:`~torch_geometric_sdt.index.relabel`). :meth:`remove` drops the
    faces from every list, refills those lists and updates the same way.

    **Stable cluster ids.** A cluster no update touched keeps its id, and so
    does a touched cluster that stays whole; merges, splits, new and vanished
    clusters are recorded in :meth:`history` (which ids became which).

    **Storage** (:mod:`~torch_geometric_sdt.index.store`): SQLite for ids,
    cluster ids, settings and history, an append-only file of vectors and
    one folder of arrays per version. Every update is atomic: a process
    killed during :meth:`add` or :meth:`remove` leaves the previous state,
    and the next writer clears what it left. One process at a time opens an
    index for writing; another gets
    :class:`~torch_geometric_sdt.index.store.IndexLockedError` (a
    :class:`ValueError`). An index of a newer format than this library
    knows is refused.

    Use :meth:`create` or :meth:`open`, not the constructor; close with
    :meth:`close` or a :obj:`with` block.
    """

    def __init__(self, store: IndexStore, linker: Linker) -> None:
        self._store = store
        self._linker = linker
        #: What the last :meth:`add` or :meth:`remove` of this object did:
        #: :obj:`op`, :obj:`changed_lists` (kNN lists that changed),
        #: :obj:`changed_links` (rows whose links changed),
        #: :obj:`region_size` (faces Infomap ran on), :obj:`touched` (the
        #: cluster ids it re-clustered) and :obj:`events`.
        self.last_update: dict[str, Any] = {}

    # ------------------------------------------------------------------
    # Opening
    # ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        x: Tensor | np.ndarray,
        ids: Sequence[Any] | None = None,
        method: str = 'sdt',
        *,
        model: SDTClusterer | str | os.PathLike[str] | None = None,
        threshold: float | None = None,
        k: int | None = None,
        backend: str = 'auto',
        seed: int = 123,
        tolerance: float = TOLERANCE,
        progress: bool = False,
    ) -> ClusterIndex:
        r"""Clusters :obj:`x` and stores the result as a new index at
        :obj:`path` (a directory that must not exist, or be empty).

        Args:
            path (str or os.PathLike): The index directory.
            x (torch.Tensor or numpy.ndarray): Embeddings :obj:`[N, D]`
                (compared by cosine).
            ids (sequence, optional): One distinct id per row (stored as
                text); default :obj:`'0'`, :obj:`'1'`, ... .
            method (str, optional): :obj:`'sdt'`, :obj:`'infomap-knn'` or
                :obj:`'fc-es'`. (default: :obj:`'sdt'`)
            model (SDTClusterer or path, optional): The SDT model (default:
                the shipped one); copied into the index.
            threshold (float, optional): The method's threshold (SDT:
                :math:`\eta`; default: the model's or the baseline's
                reference value).
            k (int, optional): List length (SDT: the model's;
                baselines: :obj:`80`).
            backend (str, optional): kNN backend of this first clustering;
                updates search exactly. (default: :obj:`'auto'`)
            seed (int, optional): Infomap's seed. (default: :obj:`123`)
            tolerance (float, optional): SDT only: how far an input must move
                before what depends on it is computed again
                (:data:`~torch_geometric_sdt.index.links.TOLERANCE`; :obj:`0`:
                every update equals computing everything again).
                (default: :obj:`0.02`)
            progress (bool, optional): Progress bars. (default: :obj:`False`)
        """
        check_choice('method', method, METHODS)
        check_infomap_options(seed, 1)
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f'threshold must lie in [0, 1] (got {threshold})')
        linker: Linker
        sdt_model = None
        if method == 'sdt':
            sdt_model = _as_model(model)
            if k is not None and k != sdt_model.k:
                raise ValueError(f'the SDT model needs k = {sdt_model.k} (got {k})')
            k = sdt_model.k
            if not 0.0 <= float(tolerance) <= 1.0:
                raise ValueError(f'tolerance must lie in [0, 1] (got {tolerance})')
            linker = SDTLinker(sdt_model, eta=threshold, tolerance=tolerance)
        else:
            if model is not None:
                raise ValueError(f'method {method!r} takes no model')
            k = DEFAULT_K if k is None else k
            value = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
            linker = EarlyStopLinker(method, value)
        final = Path(path)
        if final.exists() and (not final.is_dir() or any(final.iterdir())):
            raise ValueError(f'{final} exists and is not an empty directory')
        xt = _unit_rows(x)
        if xt.size(0) < k:
            raise ValueError(
                f'an index needs at least k = {k} faces (got {xt.size(0)})'
            )
        names = _check_ids(ids, xt.size(0), 0)
        graph = knn(xt, k, backend=backend, progress=progress)
        state = linker.compute(xt, graph, progress)
        labels = _cluster_all(graph, state['links'], seed, progress)

        # Built beside the final path and renamed into place: a create that
        # is killed leaves no index behind, only a hidden folder.
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f'.{final.name}.{os.getpid()}.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            store = IndexStore.create(
                tmp, dict(method=method, k=k, dim=int(xt.size(1)), seed=seed)
            )
            try:
                if sdt_model is not None:
                    sdt_model.save(store.path / _MODEL_FILE)
                store.set_meta(linker=linker.settings())
                cls(store, linker)._commit(
                    'create',
                    xt.numpy(),
                    graph,
                    state,
                    names,
                    labels.numpy(),
                    np.empty(0, dtype=np.int64),
                    int(labels.numpy().max(initial=-1)) + 1,
                    [('create', [], [], int(xt.size(0)))],
                    num_rows_before=0,
                )
            finally:
                store.close()
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(final)

    @classmethod
    def open(cls, path: str | os.PathLike[str], writable: bool = True) -> ClusterIndex:
        """Opens an index; :obj:`writable` takes the writer's lock."""
        store = IndexStore.open(path, writable=writable)
        try:
            meta = store.meta()
            settings = meta['linker']
            linker: Linker
            if meta['method'] == 'sdt':
                model = SDTClusterer.load(store.path / _MODEL_FILE)
                center, scale = settings['scale']
                linker = SDTLinker(
                    model,
                    settings['eta'],
                    SimilarityScale(center, scale),
                    settings['tolerance'],
                )
            else:
                linker = EarlyStopLinker(
                    meta['method'], settings['threshold'], settings['sigma']
                )
        except BaseException:
            store.close()
            raise
        return cls(store, linker)

    def close(self) -> None:
        """Releases the database and the writer's lock."""
        self._store.close()

    def __enter__(self) -> ClusterIndex:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def method(self) -> str:
        return self._linker.method

    def info(self) -> dict[str, Any]:
        """Format, method, settings, version and sizes."""
        meta = self._store.meta()
        faces, clusters = self._store.db.execute(
            'SELECT COUNT(*), COUNT(DISTINCT cluster) FROM faces WHERE alive = 1'
        ).fetchone()
        return dict(meta, num_faces=faces, num_clusters=clusters)

    def ids(self) -> list[str]:
        """The ids of the live faces, in the order they were added."""
        rows = self._store.db.execute(
            'SELECT id FROM faces WHERE alive = 1 ORDER BY row'
        ).fetchall()
        return [r[0] for r in rows]

    def labels(self) -> Tensor:
        """The cluster id of every live face, :obj:`LongTensor`, in the order
        of :meth:`ids`."""
        rows = self._store.db.execute(
            'SELECT cluster FROM faces WHERE alive = 1 ORDER BY row'
        ).fetchall()
        return torch.tensor([r[0] for r in rows], dtype=torch.long)

    def history(self) -> list[dict[str, Any]]:
        r"""Every recorded event, oldest first: dicts with :obj:`version`,
        :obj:`time`, :obj:`op` (:obj:`'create'`, :obj:`'add'`,
        :obj:`'remove'`), :obj:`event` (:obj:`'create'`, :obj:`'merge'`,
        :obj:`'split'`, :obj:`'new'`, :obj:`'vanish'`), :obj:`source` and
        :obj:`target` (cluster ids) and :obj:`size` (faces)."""
        return self._store.history()

    # ------------------------------------------------------------------
    # Updating
    # ------------------------------------------------------------------
    def add(
        self,
        x: Tensor | np.ndarray,
        ids: Sequence[Any] | None = None,
        *,
        progress: bool = False,
    ) -> Tensor:
        """Adds faces; returns their cluster ids, :obj:`LongTensor[Q]`.

        Args:
            x (torch.Tensor or numpy.ndarray): Embeddings :obj:`[Q, D]`.
            ids (sequence, optional): One new distinct id per row (default:
                the next row numbers as text).
            progress (bool, optional): Progress bars. (default: :obj:`False`)
        """
        self._check_writable()
        meta = self._store.meta()
        xq = _unit_rows(x)
        if xq.size(1) != meta['dim']:
            raise ValueError(
                f'the index holds {meta["dim"]}-d embeddings; got {xq.size(1)}-d'
            )
        n_old = int(meta['num_rows'])
        names = _check_ids(ids, xq.size(0), n_old)
        self._check_new_ids(names)
        if xq.size(0) == 0:
            return torch.empty(0, dtype=torch.long)
        x_all, graph, state, labels, alive = self._load(meta)
        x_all = torch.cat([x_all, xq])
        new_rows = torch.arange(n_old, n_old + xq.size(0))
        alive = torch.cat([alive, torch.ones(xq.size(0), dtype=torch.bool)])
        k = graph.k
        new_index, new_sim, *offers = search_both_ways(
            x_all, alive.nonzero().view(-1), new_rows, k, graph.sim[:, -1]
        )
        index = torch.cat([graph.index, new_index])
        sim = torch.cat([graph.sim, new_sim.to(graph.sim.dtype)])
        changed = torch.zeros(index.size(0), dtype=torch.bool)
        changed[new_rows] = True
        changed[offer_reverse(index, sim, alive, *offers)] = True
        labels = np.concatenate([labels, np.full(xq.size(0), -1, dtype=np.int64)])
        labels = self._update(
            'add',
            meta,
            x_all,
            graph,
            state,
            KNN(index, sim),
            changed,
            alive,
            labels,
            xq.numpy(),
            names,
            progress,
        )
        return torch.from_numpy(labels[n_old:])

    def remove(self, ids: Sequence[Any], *, progress: bool = False) -> None:
        """Removes faces by id; the rest are clustered as if they had never
        been added (up to the locality of the update). Unknown or repeated
        ids raise :class:`ValueError` and change nothing. :obj:`progress`
        shows progress bars."""
        self._check_writable()
        names = [str(i) for i in ids]
        if len(set(names)) != len(names):
            raise ValueError('ids to remove must be distinct')
        rows = self._rows_of(names)
        meta = self._store.meta()
        if not rows.size:
            return
        x_all, graph, state, labels, alive = self._load(meta)
        if int(alive.sum()) - rows.size < graph.k:
            raise ValueError(
                f'an index keeps at least k = {graph.k} faces '
                f'({int(alive.sum())} live, {rows.size} to remove)'
            )
        dead = ~alive
        dead[torch.from_numpy(rows)] = True
        index, sim = graph.index.clone(), graph.sim.clone()
        changed = torch.zeros(index.size(0), dtype=torch.bool)
        changed[refill(x_all, index, sim, dead)] = True
        changed[torch.from_numpy(rows)] = True
        self._update(
            'remove',
            meta,
            x_all,
            graph,
            state,
            KNN(index, sim),
            changed,
            ~dead,
            labels,
            None,
            [],
            progress,
        )

    # ------------------------------------------------------------------
    def _update(
        self,
        op: str,
        meta: dict[str, Any],
        x_all: Tensor,
        old_graph: KNN,
        old_state: State,
        graph: KNN,
        changed: Tensor,
        alive: Tensor,
        labels: np.ndarray,
        new_x: np.ndarray | None,
        names: list[str],
        progress: bool,
    ) -> np.ndarray:
        state = self._linker.update(
            x_all, graph, old_graph, old_state, changed, progress=progress
        )
        # Removed rows link nowhere (no live list holds them: see refill).
        links = state['links']
        links[~alive] = float('nan')
        link_changed = changed_rows(
            old_graph.index,
            old_state['links'],
            graph.index,
            links,
            self._linker.tolerance,
        )
        relabel = recluster(
            labels,
            int(meta['next_cluster']),
            link_targets(old_graph.index, old_state['links']),
            graph.index,
            links,
            link_changed | (~alive & torch.from_numpy(labels >= 0)),
            ~alive,
            seed=int(meta['seed']),
            progress=progress,
        )
        n_old = int(meta['num_rows'])
        moved = np.flatnonzero(relabel.labels[:n_old] != labels[:n_old])
        self.last_update = dict(
            op=op,
            changed_lists=int(changed.sum()),
            changed_links=int(link_changed.sum()),
            region_size=relabel.region_size,
            touched=relabel.touched,
            events=len(relabel.events),
        )
        self._commit(
            op,
            new_x,
            graph,
            state,
            names,
            relabel.labels,
            moved,
            relabel.next_id,
            relabel.events,
            num_rows_before=n_old,
        )
        return relabel.labels

    def _commit(
        self,
        op: str,
        new_x: np.ndarray | None,
        graph: KNN,
        state: State,
        names: list[str],
        labels: np.ndarray,
        moved: np.ndarray,
        next_id: int,
        events: list,
        num_rows_before: int,
    ) -> None:
        """Writes one update: vectors, then arrays, then one transaction."""
        store = self._store
        version = int(store.meta()['version']) + 1
        num_new = 0 if new_x is None else new_x.shape[0]
        arrays = {'knn_index': graph.index.numpy(), 'knn_sim': graph.sim.numpy()}
        arrays.update({name: value.numpy() for name, value in state.items()})
        # A signal now would leave a half-done update; deferred to the end.
        with deferred_interrupts():
            if num_new:
                store.append_vectors(new_x, num_rows_before)  # type: ignore[arg-type]
            store.write_arrays(version, arrays)
            with store.transaction():
                new_rows = range(num_rows_before, num_rows_before + num_new)
                store.db.executemany(
                    'INSERT INTO faces (row, id, cluster, alive) VALUES (?, ?, ?, 1)',
                    [(r, n, int(labels[r])) for r, n in zip(new_rows, names)],
                )
                old = moved[moved < num_rows_before]
                store.db.executemany(
                    'UPDATE faces SET cluster = ?, alive = ? WHERE row = ?',
                    [
                        (
                            None if labels[r] < 0 else int(labels[r]),
                            int(labels[r] >= 0),
                            int(r),
                        )
                        for r in old
                    ],
                )
                store.add_history(version, op, events)
                store.set_meta(
                    version=version,
                    num_rows=num_rows_before + num_new,
                    next_cluster=next_id,
                )
            store.discard_uncommitted()

    def _load(
        self, meta: dict[str, Any]
    ) -> tuple[Tensor, KNN, State, np.ndarray, Tensor]:
        """Vectors, graph, state, cluster ids and live rows of the committed
        version."""
        store = self._store
        n = int(meta['num_rows'])
        x = torch.from_numpy(np.array(store.read_vectors(n, int(meta['dim']))))
        arrays = store.read_arrays(int(meta['version']))
        graph = KNN(
            torch.from_numpy(arrays.pop('knn_index')),
            torch.from_numpy(arrays.pop('knn_sim')),
        )
        state = {name: torch.from_numpy(value) for name, value in arrays.items()}
        labels = np.full(n, -1, dtype=np.int64)
        alive = torch.zeros(n, dtype=torch.bool)
        rows = store.db.execute(
            'SELECT row, cluster FROM faces WHERE alive = 1'
        ).fetchall()
        if rows:
            rc = np.array(rows, dtype=np.int64)
            labels[rc[:, 0]] = rc[:, 1]
            alive[torch.from_numpy(rc[:, 0])] = True
        return x, graph, state, labels, alive

    def _rows_of(self, names: list[str]) -> np.ndarray:
        rows = []
        for lo in range(0, len(names), 500):
            part = names[lo : lo + 500]
            found = dict(
                self._store.db.execute(
                    'SELECT id, row FROM faces WHERE alive = 1 AND id IN '
                    f'({",".join("?" * len(part))})',
                    part,
                ).fetchall()
            )
            missing = [n for n in part if n not in found]
            if missing:
                raise ValueError(
                    f'{len(missing)} id(s) not in the index (first: {missing[0]!r})'
                )
            rows.extend(found[n] for n in part)
        return np.array(rows, dtype=np.int64)

    def _check_new_ids(self, names: list[str]) -> None:
        for lo in range(0, len(names), 500):
            part = names[lo : lo + 500]
            hit = self._store.db.execute(
                f'SELECT id FROM faces WHERE id IN ({",".join("?" * len(part))})',
                part,
            ).fetchone()
            if hit is not None:
                raise ValueError(f'id {hit[0]!r} is already in the index')

    def _check_writable(self) -> None:
        if not self._store.writable:
            raise ValueError(f'{self.path} was opened read-only')


def _as_model(model: SDTClusterer | str | os.PathLike[str] | None) -> SDTClusterer:
    if isinstance(model, SDTClusterer):
        return model
    if model is None:
        from torch_geometric_sdt.pretrained import default_model_path

        model = default_model_path()
    return SDTClusterer.load(model)


def _unit_rows(x: Tensor | np.ndarray) -> Tensor:
    """Checked float32 unit rows (a read-only array, e.g. memory-mapped, is
    copied once)."""
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)
    return prepare(x, 'cosine')[0].float()


def _check_ids(ids: Sequence[Any] | None, count: int, first_row: int) -> list[str]:
    if ids is None:
        return [str(first_row + i) for i in range(count)]
    names = [str(i) for i in ids]
    if len(names) != count:
        raise ValueError(f'got {len(names)} ids for {count} rows')
    bad = next((n for n in names if not n.strip() or '\n' in n or '\r' in n), None)
    if bad is not None:
        raise ValueError(f'ids must be non-empty single lines (got {bad!r})')
    if len(set(names)) != len(names):
        raise ValueError('ids must be distinct')
    return names


def _cluster_all(graph: KNN, links: Tensor, seed: int, progress: bool) -> Tensor:
    """Infomap over every link (the first clustering of an index)."""
    pos = (~torch.isnan(links)).view(-1).nonzero().view(-1)
    edge_index = torch.stack([pos // graph.k, graph.index.view(-1)[pos]])
    return cluster_links(
        edge_index, links.view(-1)[pos], graph.num_nodes, seed=seed, progress=progress
    )


__all__ = ['ClusterIndex']
