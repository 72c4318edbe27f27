r"""Training of :class:`~torch_geometric_sdt.SDTClusterer`: :func:`fit`, the
one training entry point (``sdt train`` calls it too).

Two stages on labelled embeddings, with an identity-disjoint validation split
taken from the training data (never from evaluation data):

1. the Top-K predictor, by cross-entropy against the oracle Top-K
   :math:`K^*` (:func:`~torch_geometric_sdt.utils.topk_target`), early-stopped
   on the validation mean absolute error of :math:`K`;
2. the SDT encoder and edge head, by binary cross-entropy on the band pairs
   :math:`(i, j)` (label :math:`y_i = y_j`), in mini-batches of pairs over
   the subgraph their states depend on (the :math:`L`-hop Top-K
   neighbourhood), early-stopped on the validation loss. Then :math:`\eta`
   is chosen by the pairwise F-score of the clustering of the validation
   identities.

Training is deterministic for a seed on the CPU, also across processes, and
resumable: after every epoch a checkpoint (safetensors; no pickle) holds the
weights, the optimiser state, the random state and the progress;
:obj:`resume=True` continues from it and reaches the same weights as an
uninterrupted run. :func:`fit` runs with
:func:`torch.use_deterministic_algorithms` on (``warn_only=True``) and
restores the caller's setting afterwards: without it, two processes given the
same seed and data trained different SDT weights (the Top-K predictor agreed;
the scatter-based attention of the SDT blocks did not).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from torch_geometric_sdt.metrics import roc_auc
from torch_geometric_sdt.nn.models.diagnostics import data_statistics, training_range
from torch_geometric_sdt.nn.models.knn_context import (
    KNNContext,
    band_positions,
    topk_positions,
)
from torch_geometric_sdt.nn.models.sdt_clusterer import (
    DEFAULT_ETA_GRID,
    SDTClusterer,
    choose_eta,
)
from torch_geometric_sdt.nn.models.topk_predictor import TopKPredictor
from torch_geometric_sdt.utils.checkpoint import load_tensors, save_tensors
from torch_geometric_sdt.utils.topk_jaccard import topk_target

#: The file in :obj:`checkpoint_dir` that holds the resumable training state.
STATE_FILE = 'train_state.safetensors'
STATE_FORMAT = 'torch_geometric_sdt.train_state'
STATE_VERSION = 1


def split_identities(
    y: Tensor, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Splits node ids into train / validation by identity (seeded)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f'val_fraction must lie in (0, 1) (got {val_fraction})')
    ids = torch.unique(y)
    g = torch.Generator().manual_seed(seed)
    ids = ids[torch.randperm(ids.numel(), generator=g)]
    num_val = max(1, int(round(val_fraction * ids.numel())))
    val_mask = torch.isin(y, ids[:num_val])
    return (~val_mask).nonzero().view(-1), val_mask.nonzero().view(-1)


class _Batcher:
    """Builds the subgraph a batch of pairs depends on."""

    def __init__(self, model: SDTClusterer, ctx: KNNContext, topk: Tensor, jac: Tensor):
        self.model, self.ctx, self.topk, self.jac = model, ctx, topk, jac
        self.local = torch.full((ctx.num_nodes,), -1, dtype=torch.long)

    def __call__(self, pair_pos: Tensor) -> tuple[Tensor, ...]:
        model, ctx, k = self.model, self.ctx, self.model.k
        i = pair_pos // k
        j = ctx.knn.index.view(-1)[pair_pos]
        nodes = torch.unique(torch.cat([i, j]))
        frontier = nodes
        parts, edge_pos = [nodes], []
        self.local[nodes] = 0
        for _ in range(model.encoder.num_layers):
            pos = topk_positions(frontier, self.topk, k)
            edge_pos.append(pos)
            src = torch.unique(ctx.knn.index.view(-1)[pos])
            frontier = src[self.local[src] < 0]
            self.local[frontier] = 0
            parts.append(frontier)
        nodes = torch.cat(parts)
        self.local[nodes] = torch.arange(nodes.numel())
        pos = torch.cat(edge_pos)
        edge_index = torch.stack(
            [self.local[ctx.knn.index.view(-1)[pos]], self.local[pos // k]]
        )
        out = (
            model.node_features(ctx, nodes, self.topk),
            edge_index,
            model.pair_features(ctx, pos, self.jac),
            self.topk[nodes],
            pos % k,
            torch.stack([self.local[i], self.local[j]]),
            model.pair_features(ctx, pair_pos, self.jac),
        )
        self.local[nodes] = -1
        return out


def _save_state(
    path: Path,
    model: SDTClusterer,
    optimizer: torch.optim.Optimizer,
    best: dict[str, Tensor],
    progress: dict[str, Any],
) -> None:
    tensors = {f'model.{k}': v for k, v in model.state_dict().items()}
    tensors.update({f'best.{k}': v for k, v in best.items()})
    opt = optimizer.state_dict()
    for idx, state in opt['state'].items():
        for name, value in state.items():
            tensors[f'optim.{idx}.{name}'] = torch.as_tensor(value)
    tensors['rng.torch'] = torch.get_rng_state()
    meta = {
        'progress': json.dumps(progress),
        'param_groups': json.dumps(opt['param_groups']),
        'config': json.dumps(model.config),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(
        path,
        tensors,
        format=STATE_FORMAT,
        version=STATE_VERSION,
        metadata=meta,
        overwrite=True,
    )


def _load_state(
    path: Path, model: SDTClusterer
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    tensors, meta = load_tensors(
        path,
        format=STATE_FORMAT,
        version=STATE_VERSION,
        kind='training state',
        description='a training state of this library',
        version_hint=' (start again without resume)',
    )
    if json.loads(meta['config']) != model.config:
        raise ValueError(
            f'{path} was written for a model with another configuration; '
            'remove it or resume with the same model settings'
        )
    model.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith('model.')}, strict=True
    )
    torch.set_rng_state(tensors['rng.torch'])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith('best.')}
    optim: dict[str, Any] = {
        'state': {},
        'param_groups': json.loads(meta['param_groups']),
    }
    for key, value in tensors.items():
        if key.startswith('optim.'):
            _, idx, name = key.split('.', 2)
            optim['state'].setdefault(int(idx), {})[name] = value
    return best, optim, json.loads(meta['progress'])


def _deterministic(fn: Callable[..., Any]) -> Callable[..., Any]:
    r"""Runs :obj:`fn` with :func:`torch.use_deterministic_algorithms` on
    (warning, not failing, where an operator has no deterministic
    implementation) and restores the caller's setting."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        enabled = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)

    return wrapper


def _check_int(name: str, value: Any, low: int) -> None:
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
    ):
        raise ValueError(f'{name} must be an integer >= {low} (got {value!r})')


def _check_data(model: SDTClusterer, x: Any, y: Any) -> tuple[Tensor, Tensor]:
    if isinstance(x, np.ndarray):
        # Training reads every row many times: a memory-mapped (read-only)
        # array is copied into memory once.
        x = np.array(x, dtype=np.float32)
    x = torch.as_tensor(x).float()
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise ValueError(f'y must hold integer labels (got dtype {y.dtype})')
    y = y.long()
    if x.dim() != 2 or y.dim() != 1 or x.size(0) != y.size(0):
        raise ValueError(
            f'x must be [N, D] and y [N] (got {list(x.shape)} and {list(y.shape)})'
        )
    if bool((y < 0).any()):
        raise ValueError('training labels must be non-negative (no unlabeled items)')
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        # Rows counted in the caller's x (as knn() counts them), not in a split.
        bad = (~finite).nonzero().view(-1)
        raise ValueError(
            f'x has {bad.numel()} row(s) with NaN or Inf values '
            f'(first: row {int(bad[0])})'
        )
    if model.mode == 'embedding' and x.size(1) != model.config['embedding_channels']:
        raise ValueError(
            f'the model expects {model.config["embedding_channels"]}-d embeddings, '
            f'got {x.size(1)}-d'
        )
    return x, y


def _data_sets(model: SDTClusterer, x: Any, y: Any) -> list[tuple[Tensor, Tensor]]:
    # One data set (x, y) or several ([x_1, ...], [y_1, ...]), each checked.
    if isinstance(x, (list, tuple)) != isinstance(y, (list, tuple)):
        raise ValueError('give x and y both as arrays or both as lists of data sets')
    if not isinstance(x, (list, tuple)):
        return [_check_data(model, x, y)]
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f'x and y must list the same number (>= 1) of data sets '
            f'(got {len(x)} and {len(y)})'
        )
    return [_check_data(model, xs, ys) for xs, ys in zip(x, y)]


def _contexts(
    model: SDTClusterer,
    sets: list[tuple[Tensor, Tensor]],
    val_fraction: float,
    seed: int,
    backend: str,
    progress: bool,
) -> tuple[
    KNNContext, KNNContext, Tensor, Tensor, dict[str, Any], tuple[Tensor, Tensor] | None
]:
    # The training and validation contexts: every data set is split by
    # identity and gets its own kNN graphs and similarity scales; several
    # data sets are joined as disjoint unions with disjoint labels.
    k, keep_x = model.k, model.mode == 'embedding'
    parts: dict[str, list] = {
        'ctx_tr': [],
        'ctx_va': [],
        'y_tr': [],
        'y_va': [],
        'g_tr': [],
        'g_va': [],
        'stats': [],
    }
    offset = 0
    for t, (x, y) in enumerate(sets):
        train_idx, val_idx = split_identities(y, val_fraction, seed + t)
        for name, idx in (('training', train_idx), ('validation', val_idx)):
            if idx.numel() <= k:
                where = f' of data set {t}' if len(sets) > 1 else ''
                raise ValueError(
                    f'the {name} split{where} has {idx.numel()} items, '
                    f'needs more than k = {k}'
                )
        for split, idx in (('tr', train_idx), ('va', val_idx)):
            parts[f'ctx_{split}'].append(
                KNNContext.build(
                    x[idx],
                    k,
                    keep_x=keep_x,
                    reference=model.config['reference'],
                    backend=backend,
                    progress=progress,
                )
            )
            parts[f'y_{split}'].append(y[idx] + offset)
            parts[f'g_{split}'].append(torch.full((idx.numel(),), t))
        ctx = parts['ctx_tr'][-1]
        parts['stats'].append(
            data_statistics(ctx, topk_target(ctx.knn.index, parts['y_tr'][-1]))
        )
        offset += int(y.max()) + 1
    data = {
        'num_sets': len(sets),
        'num_items': sum(int(y.numel()) for _, y in sets),
        'num_identities': sum(int(torch.unique(y).numel()) for _, y in sets),
        'dim': sorted({int(x.size(1)) for x, _ in sets}),
        'train_items': sum(c.num_nodes for c in parts['ctx_tr']),
        'val_items': sum(c.num_nodes for c in parts['ctx_va']),
        'train_range': training_range(parts['stats']),
    }
    groups = None
    if len(sets) == 1:
        data['dim'] = data['dim'][0]
    else:
        groups = (torch.cat(parts['g_tr']), torch.cat(parts['g_va']))
    return (
        KNNContext.concat(parts['ctx_tr']),
        KNNContext.concat(parts['ctx_va']),
        torch.cat(parts['y_tr']),
        torch.cat(parts['y_va']),
        data,
        groups,
    )


def _state_file(
    checkpoint_dir: str | Path | None, resume: bool, overwrite: bool
) -> Path | None:
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / STATE_FILE
    if resume and (path is None or not path.exists()):
        raise FileNotFoundError(f'no training state to resume in {checkpoint_dir}')
    if not resume and not overwrite and path is not None and path.exists():
        raise FileExistsError(
            f'{path} exists: pass resume=True to continue that run or '
            'overwrite=True (--resume / --overwrite) to start afresh'
        )
    return path


class _Run:
    """The state of one training run: progress, best weights, early stopping
    and the resumable state file."""

    def __init__(
        self,
        model: SDTClusterer,
        state_path: Path | None,
        patience: int,
        stop_after_epochs: int | None,
    ) -> None:
        self.model, self.state_path = model, state_path
        self.patience, self.stop_after_epochs = patience, stop_after_epochs
        self.progress: dict[str, Any] = {
            'stage': 1,
            'epoch': 0,
            'best': None,
            'bad': 0,
            'history': [],
            'epochs_done': 0,
        }
        self.best: dict[str, Tensor] = {}
        self.optim_state: dict[str, Any] | None = None

    def resume(self) -> None:
        self.best, self.optim_state, self.progress = _load_state(
            self.state_path,  # type: ignore[arg-type]
            self.model,
        )

    def optimizer(self, stage: int, lr: float) -> torch.optim.Optimizer:
        model = self.model
        if stage == 1:
            params = list(model.topk_predictor.parameters())
        else:
            params = list(model.encoder.parameters()) + list(
                model.edge_head.parameters()
            )
        optimizer = torch.optim.Adam(params, lr=lr)
        if self.optim_state is not None:
            optimizer.load_state_dict(self.optim_state)
        return optimizer

    def snapshot(self, stage: int) -> dict[str, Tensor]:
        prefix = 'topk_predictor.' if stage == 1 else ('encoder.', 'edge_head.')
        return {
            k: v.detach().clone()
            for k, v in self.model.state_dict().items()
            if k.startswith(prefix)
        }

    def restore_best(self) -> None:
        if self.best:
            self.model.load_state_dict({**self.model.state_dict(), **self.best})

    def next_stage(self) -> None:
        self.restore_best()
        self.progress.update(stage=2, epoch=0, best=None, bad=0)
        self.best, self.optim_state = {}, None

    def end_epoch(
        self,
        stage: int,
        score: float,
        record: dict[str, float],
        num_epochs: int,
        optimizer: torch.optim.Optimizer,
    ) -> bool:
        """Records the epoch, keeps the best weights (lower score is better),
        applies early stopping, writes the resumable state; returns whether
        to stop here (:obj:`stop_after_epochs`)."""
        progress = self.progress
        progress['history'].append(
            {'stage': stage, 'epoch': progress['epoch'], **record}
        )
        if progress['best'] is None or score < progress['best']:
            progress['best'], progress['bad'] = score, 0
            self.best = self.snapshot(stage)
        else:
            progress['bad'] += 1
        progress['epoch'] += 1
        progress['epochs_done'] += 1
        if progress['bad'] >= self.patience:
            progress['epoch'] = num_epochs
        if self.state_path is not None:
            _save_state(self.state_path, self.model, optimizer, self.best, progress)
        return (
            self.stop_after_epochs is not None
            and progress['epochs_done'] >= self.stop_after_epochs
        )


def _train_topk(
    run: _Run,
    ctx_tr: KNNContext,
    ctx_va: KNNContext,
    target_tr: Tensor,
    target_va: Tensor,
    *,
    epochs: int,
    batch_size: int,
    max_steps: int | None,
    lr: float,
    seed: int,
    progress: bool,
) -> bool:
    """Stage 1: the Top-K predictor. Returns whether the run stopped early
    (:obj:`stop_after_epochs`)."""
    model = run.model
    optimizer = run.optimizer(1, lr)
    while run.progress['epoch'] < epochs:
        epoch = run.progress['epoch']
        model.train()
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(ctx_tr.num_nodes, generator=g)
        steps = list(range(0, perm.numel(), batch_size))[:max_steps]
        total = 0.0
        bar = tqdm(steps, desc=f'Top-K epoch {epoch}', disable=not progress)
        for lo in bar:
            nodes = perm[lo : lo + batch_size]
            logits = model.topk_predictor(*model.tokens(ctx_tr, nodes))
            loss = TopKPredictor.loss(logits, target_tr[nodes])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f'{float(loss.detach()):.3f}')
        pred_va = model.predict_topk(ctx_va)
        mae = float((pred_va - target_va).abs().float().mean())
        record = {'loss': total / max(1, len(steps)), 'val_topk_mae': mae}
        if run.end_epoch(1, mae, record, epochs, optimizer):
            return True
    run.next_stage()
    return False


def _band_pairs(
    ctx: KNNContext, topk: Tensor, y: Tensor, k: int, band: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    # The band pairs of a graph and whether each joins one identity.
    pos = band_positions(topk, k, band)
    return pos, y[pos // k] == y[ctx.knn.index.view(-1)[pos]]


def _train_sdt(
    run: _Run,
    ctx_tr: KNNContext,
    ctx_va: KNNContext,
    topk_tr: Tensor,
    topk_va: Tensor,
    y_tr: Tensor,
    y_va: Tensor,
    *,
    epochs: int,
    batch_size: int,
    max_steps: int | None,
    lr: float,
    aux_weight: float,
    seed: int,
    progress: bool,
    groups: Tensor | None = None,
) -> tuple[bool, Tensor]:
    """Stage 2: the SDT encoder and edge head on the band pairs. Returns
    whether the run stopped early and the validation Top-K Jaccard.

    With :obj:`groups` (the data set of every training node, for a union of
    several), every batch draws its pairs from one data set, in a random
    order of batches: a batch's subgraph (the L-hop Top-K neighbourhood of
    its pairs) then stays inside one data set instead of spanning all of
    them, which with large identities (:math:`K` near :math:`k`) is most
    of the union."""
    model, k = run.model, run.model.k
    jac_tr = model.jaccard(ctx_tr, topk_tr)
    jac_va = model.jaccard(ctx_va, topk_va)
    pos_tr, same_tr = _band_pairs(ctx_tr, topk_tr, y_tr, k, model.band)
    pos_va, same_va = _band_pairs(ctx_va, topk_va, y_va, k, model.band)
    batcher = _Batcher(model, ctx_tr, topk_tr, jac_tr)
    optimizer = run.optimizer(2, lr)
    while run.progress['epoch'] < epochs and pos_tr.numel() > 0:
        epoch = run.progress['epoch']
        model.train()
        g = torch.Generator().manual_seed(seed * 100_003 + 50_000 + epoch)
        perm = torch.randperm(pos_tr.numel(), generator=g)
        steps = list(range(0, perm.numel(), batch_size))
        if groups is not None:
            group = groups[pos_tr[perm] // k]
            perm = perm[torch.sort(group, stable=True).indices]
            hi = torch.cumsum(torch.bincount(group), 0).tolist()
            lo = [0] + hi[:-1]
            # Batches that never straddle two data sets, in random order:
            batches = [
                (start, min(start + batch_size, end))
                for begin, end in zip(lo, hi)
                for start in range(begin, end, batch_size)
            ]
            order = torch.randperm(len(batches), generator=g).tolist()
            steps = [batches[i] for i in order]
        else:
            steps = [(start, start + batch_size) for start in steps]
        steps = steps[:max_steps]
        total = 0.0
        bar = tqdm(steps, desc=f'SDT epoch {epoch}', disable=not progress)
        for lo, hi in bar:
            sel = perm[lo:hi]
            logits, aux = model(*batcher(pos_tr[sel]))
            loss = F.binary_cross_entropy_with_logits(logits, same_tr[sel].float())
            loss = loss + aux_weight * aux
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f'{float(loss.detach()):.3f}')
        h_va = model.node_states(ctx_va, topk_va, jac_va)
        _, prob_va = model.score_band(ctx_va, topk_va, jac_va, h_va, pos=pos_va)
        val_loss = float(
            F.binary_cross_entropy(prob_va.clamp(1e-7, 1 - 1e-7), same_va.float())
        )
        record = {
            'loss': total / max(1, len(steps)),
            'val_loss': val_loss,
            'val_auc': roc_auc(prob_va, same_va),
        }
        if run.end_epoch(2, val_loss, record, epochs, optimizer):
            return True, jac_va
    run.restore_best()
    return False, jac_va


@_deterministic
def fit(
    model: SDTClusterer,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    val_fraction: float = 0.2,
    topk_epochs: int = 10,
    sdt_epochs: int = 10,
    topk_batch_size: int = 256,
    pair_batch_size: int = 2048,
    max_steps_per_epoch: int | None = None,
    lr: float = 1e-3,
    patience: int = 3,
    aux_weight: float = 0.01,
    eta_grid: tuple[float, ...] = DEFAULT_ETA_GRID,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_epochs: int | None = None,
    backend: str = 'auto',
    train_topk: bool = True,
    train_sdt: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    r"""Trains :obj:`model` in place (see the module docstring).

    Args:
        model (SDTClusterer): The model.
        x (torch.Tensor or numpy.ndarray or list): Embeddings :obj:`[N, D]`,
            or a list of data sets' embeddings (*e.g.* draws from several
            regimes, of any dimensions): each is split by identity and gets
            its own kNN graph and similarity scale, and the model trains on
            their union.
        y (torch.Tensor or numpy.ndarray or list): Identity labels :obj:`[N]`
            (non-negative), or a list of them matching :obj:`x`.
        val_fraction (float, optional): Share of identities held out for
            early stopping and :math:`\eta`. (default: :obj:`0.2`)
        topk_epochs (int, optional): Epochs of stage 1. (default: :obj:`10`)
        sdt_epochs (int, optional): Epochs of stage 2. (default: :obj:`10`)
        topk_batch_size (int, optional): Nodes per stage-1 step.
            (default: :obj:`256`)
        pair_batch_size (int, optional): Band pairs per stage-2 step.
            (default: :obj:`2048`)
        max_steps_per_epoch (int, optional): Caps the steps of an epoch.
            (default: :obj:`None`)
        lr (float, optional): Adam learning rate. (default: :obj:`1e-3`)
        patience (int, optional): Epochs without validation improvement
            before a stage stops. (default: :obj:`3`)
        aux_weight (float, optional): Weight of the MoE load-balancing loss.
            (default: :obj:`0.01`)
        eta_grid (tuple, optional): Candidate :math:`\eta` values.
        seed (int, optional): Seed of the split, the initialisation and the
            batch order. (default: :obj:`0`)
        checkpoint_dir (str or Path, optional): Where the per-epoch training
            state is written. (default: :obj:`None`)
        resume (bool, optional): Continue from the state in
            :obj:`checkpoint_dir`. (default: :obj:`False`)
        overwrite (bool, optional): Start afresh even if :obj:`checkpoint_dir`
            holds a training state, replacing it; without it (and without
            :obj:`resume`) an existing state is an error, never silently
            lost. (default: :obj:`False`)
        stop_after_epochs (int, optional): Stop (resumably) after this many
            epochs in total, counting both stages. (default: :obj:`None`)
        backend (str, optional): kNN backend. (default: :obj:`'auto'`)
        train_topk (bool, optional): :obj:`False` keeps the model's Top-K
            predictor as it is and trains only the SDT step (stage 2), *e.g.*
            an SDT variant on the shipped model's predictor.
            (default: :obj:`True`)
        train_sdt (bool, optional): :obj:`False` (with
            :obj:`train_topk=False`) trains nothing: the model keeps all its
            weights, and only :math:`\eta` and the training range are chosen
            on the validation identities, *e.g.* after a change of the
            final-graph rule (:obj:`veto`). (default: :obj:`True`)
        progress (bool, optional): Progress bars with losses.
            (default: :obj:`False`)

    Returns:
        dict: The training history and summary (per-epoch losses and
        validation metrics, the chosen :math:`\eta`, data summary, seconds).
    """
    sets = _data_sets(model, x, y)
    for name, value, low in (
        ('topk_epochs', topk_epochs, 0),
        ('sdt_epochs', sdt_epochs, 0),
        ('topk_batch_size', topk_batch_size, 1),
        ('pair_batch_size', pair_batch_size, 1),
        ('patience', patience, 1),
        ('max_steps_per_epoch', max_steps_per_epoch, 1),
    ):
        _check_int(name, value, low)
    if not lr > 0:
        raise ValueError(f'lr must be positive (got {lr})')
    if len(eta_grid) == 0 or not all(0.0 <= eta <= 1.0 for eta in eta_grid):
        raise ValueError(f'eta_grid must hold values in [0, 1] (got {eta_grid})')
    if train_topk and not train_sdt:
        raise ValueError('train_sdt=False needs train_topk=False')
    state_path = _state_file(checkpoint_dir, resume, overwrite)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    if train_topk:
        model.reset_parameters()
    elif train_sdt:
        model.encoder.reset_parameters()
        model.edge_head.reset_parameters()
    ctx_tr, ctx_va, y_tr, y_va, data, groups = _contexts(
        model, sets, val_fraction, seed, backend, progress
    )
    g_tr, g_va = (None, None) if groups is None else groups
    target_va = topk_target(ctx_va.knn.index, y_va)
    model.train_range = data['train_range']

    run = _Run(model, state_path, patience, stop_after_epochs)
    if resume:
        run.resume()
    if not train_topk and run.progress['stage'] == 1:
        run.next_stage()
    steps = dict(max_steps=max_steps_per_epoch, lr=lr, seed=seed, progress=progress)
    if run.progress['stage'] == 1:
        target_tr = topk_target(ctx_tr.knn.index, y_tr)
        stopped = _train_topk(
            run,
            ctx_tr,
            ctx_va,
            target_tr,
            target_va,
            epochs=topk_epochs,
            batch_size=topk_batch_size,
            **steps,
        )
        if stopped:
            return {'stopped': True, **run.progress}
    topk_va = model.predict_topk(ctx_va, progress=progress)
    if not train_sdt:
        stopped, jac_va = False, model.jaccard(ctx_va, topk_va)
    else:
        topk_tr = model.predict_topk(ctx_tr, progress=progress)
        stopped, jac_va = _train_sdt(
            run,
            ctx_tr,
            ctx_va,
            topk_tr,
            topk_va,
            y_tr,
            y_va,
            epochs=sdt_epochs,
            batch_size=pair_batch_size,
            aux_weight=aux_weight,
            groups=g_tr,
            **steps,
        )
    if stopped:
        return {'stopped': True, **run.progress}

    # Choose eta on the validation identities:
    model.config['eta'], sweep = choose_eta(
        model, ctx_va, topk_va, jac_va, y_va, eta_grid, groups=g_va
    )
    model.eval()
    return {
        'stopped': False,
        'history': run.progress['history'],
        'eta_sweep': sweep,
        'eta': model.config['eta'],
        'val_topk_mae': float((topk_va - target_va).abs().float().mean()),
        'data': data,
        'seconds': time.perf_counter() - t0,
    }


__all__ = ['fit', 'split_identities', 'STATE_FILE']
