r"""Training of :class:`~torch_geometric_sdt.SDTClusterer`.

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

from torch_geometric_sdt.metrics import evaluate, roc_auc
from torch_geometric_sdt.nn.models.sdt_clusterer import (
    KNNContext,
    SDTClusterer,
    band_positions,
    topk_positions,
)
from torch_geometric_sdt.nn.models.topk_predictor import TopKPredictor
from torch_geometric_sdt.utils.topk_jaccard import topk_target

STATE_FILE = 'train_state.safetensors'
STATE_FORMAT = 'torch_geometric_sdt.train_state'
STATE_VERSION = 1
DEFAULT_ETA_GRID = tuple(round(0.05 * i, 2) for i in range(2, 20))
#: Pairwise F-scores within this of the best count as equally good in
#: :func:`choose_eta`.
ETA_TOLERANCE = 1e-3


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


@torch.no_grad()
def choose_eta(
    model: SDTClusterer,
    ctx: KNNContext,
    topk: Tensor,
    jaccard: Tensor,
    y: Tensor,
    grid: tuple[float, ...],
) -> tuple[float, list[dict[str, Any]]]:
    r"""Clusters labelled items at every :math:`\eta` of :obj:`grid` (the
    network runs once, only the final links change) and returns the chosen
    value and every value's metrics.

    The choice is the median of the values whose pairwise F-score is within
    :obj:`ETA_TOLERANCE` of the best. A validation split is small and often
    saturates over a wide plateau of :math:`\eta`, while the data the model
    meets later is larger and denser in look-alike identities; the centre of
    the plateau is the value least sensitive to that shift (on held-out
    synthetic faces it beat both ends of the plateau).
    """
    from torch_geometric_sdt.baselines import cluster_links

    h = model.node_states(ctx, topk, jaccard)
    band, prob = model.score_band(ctx, topk, jaccard, h)
    sweep = []
    for eta in grid:
        links, weight = model.final_links(ctx, topk, jaccard, band, prob, eta)
        pred = cluster_links(links, weight, ctx.num_nodes)
        sweep.append({'eta': float(eta), **evaluate(pred, y)})
    best = max(m['pairwise_fscore'] for m in sweep)
    near = sorted(
        m['eta'] for m in sweep if m['pairwise_fscore'] >= best - ETA_TOLERANCE
    )
    return near[(len(near) - 1) // 2], sweep


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


def _state_path(checkpoint_dir: str | Path | None) -> Path | None:
    return None if checkpoint_dir is None else Path(checkpoint_dir) / STATE_FILE


def _save_state(
    path: Path,
    model: SDTClusterer,
    optimizer: torch.optim.Optimizer,
    best: dict[str, Tensor],
    progress: dict[str, Any],
) -> None:
    from safetensors.torch import save

    from torch_geometric_sdt.io import atomic_write

    tensors = {
        f'model.{k}': v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    tensors.update({f'best.{k}': v.cpu().contiguous() for k, v in best.items()})
    opt = optimizer.state_dict()
    for idx, state in opt['state'].items():
        for name, value in state.items():
            tensors[f'optim.{idx}.{name}'] = torch.as_tensor(value).cpu().contiguous()
    tensors['rng.torch'] = torch.get_rng_state()
    meta = {
        'format': STATE_FORMAT,
        'format_version': str(STATE_VERSION),
        'progress': json.dumps(progress),
        'param_groups': json.dumps(opt['param_groups']),
        'config': json.dumps(model.config),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_bytes(save(tensors, metadata=meta))


def _load_state(
    path: Path, model: SDTClusterer
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    # Only tensors and a JSON header are read, never a pickle:
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f'{path} is not a safetensors training state ({e})') from e
    if meta.get('format') != STATE_FORMAT:
        raise ValueError(f'{path} is not a training state of this library')
    if meta.get('format_version') != str(STATE_VERSION):
        raise ValueError(
            f'{path} has training state format version '
            f'{meta.get("format_version")}; this library reads version '
            f'{STATE_VERSION} (start again without resume)'
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
    progress: bool = False,
) -> dict[str, Any]:
    r"""Trains :obj:`model` in place (see the module docstring).

    Args:
        model (SDTClusterer): The model.
        x (torch.Tensor or numpy.ndarray): Embeddings :obj:`[N, D]`.
        y (torch.Tensor or numpy.ndarray): Identity labels :obj:`[N]`
            (non-negative).
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
        progress (bool, optional): Progress bars with losses.
            (default: :obj:`False`)

    Returns:
        dict: The training history and summary (per-epoch losses and
        validation metrics, the chosen :math:`\eta`, data summary, seconds).
    """
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
    for name, value, low in (
        ('topk_epochs', topk_epochs, 0),
        ('sdt_epochs', sdt_epochs, 0),
        ('topk_batch_size', topk_batch_size, 1),
        ('pair_batch_size', pair_batch_size, 1),
        ('patience', patience, 1),
        ('max_steps_per_epoch', max_steps_per_epoch, 1),
    ):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < low
        ):
            raise ValueError(f'{name} must be an integer >= {low} (got {value!r})')
    if not lr > 0:
        raise ValueError(f'lr must be positive (got {lr})')
    if len(eta_grid) == 0 or not all(0.0 <= eta <= 1.0 for eta in eta_grid):
        raise ValueError(f'eta_grid must hold values in [0, 1] (got {eta_grid})')
    if model.mode == 'embedding' and x.size(1) != model.config['embedding_channels']:
        raise ValueError(
            f'the model expects {model.config["embedding_channels"]}-d embeddings, '
            f'got {x.size(1)}-d'
        )
    state_path = _state_path(checkpoint_dir)
    if resume and (state_path is None or not state_path.exists()):
        raise FileNotFoundError(f'no training state to resume in {checkpoint_dir}')
    if not resume and not overwrite and state_path is not None and state_path.exists():
        raise FileExistsError(
            f'{state_path} exists: pass resume=True to continue that run or '
            'overwrite=True (--resume / --overwrite) to start afresh'
        )

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model.reset_parameters()
    k = model.k
    train_idx, val_idx = split_identities(y, val_fraction, seed)
    for name, idx in (('training', train_idx), ('validation', val_idx)):
        if idx.numel() <= k:
            raise ValueError(
                f'the {name} split has {idx.numel()} items, needs more than k = {k}'
            )
    keep_x = model.mode == 'embedding'
    ctx_tr = KNNContext.build(
        x[train_idx], k, keep_x=keep_x, backend=backend, progress=progress
    )
    ctx_va = KNNContext.build(
        x[val_idx], k, keep_x=keep_x, backend=backend, progress=progress
    )
    y_tr, y_va = y[train_idx], y[val_idx]
    target_tr = topk_target(ctx_tr.knn.index, y_tr)
    target_va = topk_target(ctx_va.knn.index, y_va)

    progress_state: dict[str, Any] = {
        'stage': 1,
        'epoch': 0,
        'best': None,
        'bad': 0,
        'history': [],
        'epochs_done': 0,
    }
    best: dict[str, Tensor] = {}
    optim_state = None
    if resume:
        best, optim_state, progress_state = _load_state(state_path, model)  # type: ignore[arg-type]

    def params(stage: int) -> list[torch.nn.Parameter]:
        if stage == 1:
            return list(model.topk_predictor.parameters())
        return list(model.encoder.parameters()) + list(model.edge_head.parameters())

    def snapshot(stage: int) -> dict[str, Tensor]:
        prefix = 'topk_predictor.' if stage == 1 else ('encoder.', 'edge_head.')
        return {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if k.startswith(prefix)
        }

    def restore(state: dict[str, Tensor]) -> None:
        model.load_state_dict({**model.state_dict(), **state})

    def should_stop() -> bool:
        return (
            stop_after_epochs is not None
            and progress_state['epochs_done'] >= stop_after_epochs
        )

    def end_epoch(
        stage: int,
        score: float,
        record: dict[str, float],
        num_epochs: int,
        optimizer: torch.optim.Optimizer,
    ) -> bool:
        # Records the epoch, keeps the best weights (lower score is better),
        # applies early stopping, writes the resumable state; returns whether
        # to stop here (stop_after_epochs).
        nonlocal best
        epoch = progress_state['epoch']
        progress_state['history'].append({'stage': stage, 'epoch': epoch, **record})
        if progress_state['best'] is None or score < progress_state['best']:
            progress_state['best'], progress_state['bad'] = score, 0
            best = snapshot(stage)
        else:
            progress_state['bad'] += 1
        progress_state['epoch'] += 1
        progress_state['epochs_done'] += 1
        if progress_state['bad'] >= patience:
            progress_state['epoch'] = num_epochs
        if state_path is not None:
            _save_state(state_path, model, optimizer, best, progress_state)
        return should_stop()

    # ---------------------------------------------------------------- stage 1
    if progress_state['stage'] == 1:
        optimizer = torch.optim.Adam(params(1), lr=lr)
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
        while progress_state['epoch'] < topk_epochs:
            epoch = progress_state['epoch']
            model.train()
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(ctx_tr.num_nodes, generator=g)
            steps = list(range(0, perm.numel(), topk_batch_size))[:max_steps_per_epoch]
            total = 0.0
            bar = tqdm(steps, desc=f'Top-K epoch {epoch}', disable=not progress)
            for lo in bar:
                nodes = perm[lo : lo + topk_batch_size]
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
            if end_epoch(1, mae, record, topk_epochs, optimizer):
                return {'stopped': True, **progress_state}
        restore(best)
        progress_state.update(stage=2, epoch=0, best=None, bad=0)
        best, optim_state = {}, None

    # ---------------------------------------------------------------- stage 2
    topk_tr = model.predict_topk(ctx_tr, progress=progress)
    topk_va = model.predict_topk(ctx_va, progress=progress)
    jac_tr = model.jaccard(ctx_tr, topk_tr)
    jac_va = model.jaccard(ctx_va, topk_va)
    pos_tr = band_positions(topk_tr, k, model.band)
    same_tr = y_tr[pos_tr // k] == y_tr[ctx_tr.knn.index.view(-1)[pos_tr]]
    pos_va = band_positions(topk_va, k, model.band)
    same_va = y_va[pos_va // k] == y_va[ctx_va.knn.index.view(-1)[pos_va]]
    batcher = _Batcher(model, ctx_tr, topk_tr, jac_tr)
    optimizer = torch.optim.Adam(params(2), lr=lr)
    if optim_state is not None:
        optimizer.load_state_dict(optim_state)
    while progress_state['epoch'] < sdt_epochs and pos_tr.numel() > 0:
        epoch = progress_state['epoch']
        model.train()
        g = torch.Generator().manual_seed(seed * 100_003 + 50_000 + epoch)
        perm = torch.randperm(pos_tr.numel(), generator=g)
        steps = list(range(0, perm.numel(), pair_batch_size))[:max_steps_per_epoch]
        total = 0.0
        bar = tqdm(steps, desc=f'SDT epoch {epoch}', disable=not progress)
        for lo in bar:
            sel = perm[lo : lo + pair_batch_size]
            logits, aux = model(*batcher(pos_tr[sel]))
            loss = F.binary_cross_entropy_with_logits(logits, same_tr[sel].float())
            loss = loss + aux_weight * aux
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            bar.set_postfix(loss=f'{float(loss.detach()):.3f}')
        h_va = model.node_states(ctx_va, topk_va, jac_va)
        _, prob_va = model.score_band(ctx_va, topk_va, jac_va, h_va)
        val_loss = float(
            F.binary_cross_entropy(prob_va.clamp(1e-7, 1 - 1e-7), same_va.float())
        )
        record = {
            'loss': total / max(1, len(steps)),
            'val_loss': val_loss,
            'val_auc': roc_auc(prob_va, same_va),
        }
        if end_epoch(2, val_loss, record, sdt_epochs, optimizer):
            return {'stopped': True, **progress_state}
    if best:
        restore(best)

    # ------------------------------------------------- choose eta on validation
    model.config['eta'], sweep = choose_eta(
        model, ctx_va, topk_va, jac_va, y_va, eta_grid
    )
    model.eval()
    return {
        'stopped': False,
        'history': progress_state['history'],
        'eta_sweep': sweep,
        'eta': model.config['eta'],
        'val_topk_mae': float((topk_va - target_va).abs().float().mean()),
        'data': {
            'num_items': int(y.numel()),
            'num_identities': int(torch.unique(y).numel()),
            'dim': int(x.size(1)),
            'train_items': int(train_idx.numel()),
            'val_items': int(val_idx.numel()),
        },
        'seconds': time.perf_counter() - t0,
    }
