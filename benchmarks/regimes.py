r"""The shipped SDT against the baselines across data regimes: identity-size
laws and cosine scales other than the LFW-like data it was trained on.

Every cell is a pair of labelled draws of
:func:`~torch_geometric_sdt.datasets.regime_draw` (an evaluation draw, seeds
3000, 3001, ... per cell, and a separate tuning draw of the same cell, seed
+ 500), plus, when ``$SDT_SHARED/data/lfw_mobilefacenet192`` exists, LFW
split by identity into a tuning half and a held-out half. On each evaluation
draw, with one exact kNN graph (:math:`k = 80`) shared by all methods:

* **sdt**: the shipped model, untuned (its own :math:`\eta`);
* **sdt (oracle Top-K)**: the same model given the label-derived Top-K
  (:func:`~torch_geometric_sdt.utils.topk_target`): the ceiling of a
  perfect Top-K predictor;
* **infomap-knn** and **fc-es** at their default thresholds, and tuned on
  the tuning draw (:func:`~torch_geometric_sdt.baselines.tune_threshold`
  over every other value of the default grid), the threshold then applied;
* **hdbscan**: scikit-learn's ``HDBSCAN`` with its defaults on the unit
  vectors (euclidean distance on unit vectors orders pairs as cosine does);
  every noise point is its own cluster. Skipped with a note when
  scikit-learn is missing.

It also reports the mean absolute (and signed) error of the model's
predicted Top-K against the oracle, and the wall time of every method (the
kNN graph excluded, except for hdbscan, which builds its own).

Writes ``benchmarks/results/regimes.{md,json}`` (``--quick``: a temporary
folder)::

    python -m benchmarks.regimes
    python -m benchmarks.regimes --sizes 5000 --cells lfw:arcface large:squeezed
    python -m benchmarks.regimes --quick
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import LFW, results_dir, write_results
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.baselines import THRESHOLD_GRIDS, cluster_knn, tune_threshold
from torch_geometric_sdt.datasets import COSINES, REGIMES, regime_draw
from torch_geometric_sdt.datasets.regimes import random_pair_cosine
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn import knn
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.train import split_identities
from torch_geometric_sdt.utils import topk_target

FIRST_SEED = 3000
TUNE_OFFSET = 500
BASELINES = ('infomap-knn', 'fc-es')
#: The default cells: every size law at the face cosine scale, then the
#: squeezed and shifted scales on the laws where the Top-K matters most.
CELLS = (
    'lfw:arcface',
    'msceleb:arcface',
    'photo_library:arcface',
    'crowd:arcface',
    'large:arcface',
    'gaussian:arcface',
    'lfw:squeezed',
    'msceleb:squeezed',
    'photo_library:squeezed',
    'large:squeezed',
    'lfw:shifted',
    'msceleb:shifted',
)
METHODS = (
    'sdt',
    'sdt (oracle Top-K)',
    'infomap-knn',
    'infomap-knn (tuned)',
    'fc-es',
    'fc-es (tuned)',
    'hdbscan',
)


def _hdbscan() -> Any:
    try:
        from sklearn.cluster import HDBSCAN
    except ImportError:
        return None
    return HDBSCAN


def _scores(pred: Tensor, y: Tensor, seconds: float) -> dict[str, Any]:
    m = evaluate(pred, y)
    return {
        'pairwise_fscore': m['pairwise_fscore'],
        'bcubed_fscore': m['bcubed_fscore'],
        'num_clusters': m['num_clusters'],
        'seconds': seconds,
    }


def _stats(x: Tensor, y: Tensor) -> dict[str, Any]:
    counts = torch.bincount(y)
    counts = counts[counts > 0]
    return {
        'num_nodes': int(y.numel()),
        'dim': int(x.size(1)),
        'identities': int(counts.numel()),
        'mean_size': float(counts.float().mean()),
        'max_size': int(counts.max()),
        'singleton_share': float((counts == 1).float().mean()),
        'items_above_k': float((counts[y] > 80).float().mean()),
        'random_pair_cosine': random_pair_cosine(x),
    }


def run_cell(
    model: SDTClusterer,
    x: Tensor,
    y: Tensor,
    x_tune: Tensor,
    y_tune: Tensor,
) -> dict[str, Any]:
    r"""Scores every method on (:obj:`x`, :obj:`y`), tuning the baselines'
    thresholds on (:obj:`x_tune`, :obj:`y_tune`)."""
    t = time.perf_counter()
    graph = knn(x, model.k)
    knn_s = time.perf_counter() - t
    graph_tune = knn(x_tune, model.k)
    out: dict[str, Any] = {'stats': _stats(x, y), 'knn_seconds': knn_s}
    methods: dict[str, Any] = {}

    t = time.perf_counter()
    pred, details = model.cluster(graph=graph, return_details=True)
    methods['sdt'] = _scores(pred, y, time.perf_counter() - t)
    oracle = topk_target(graph.index, y)
    t = time.perf_counter()
    pred = model.cluster(graph=graph, topk=oracle)
    methods['sdt (oracle Top-K)'] = _scores(pred, y, time.perf_counter() - t)
    diff = details['topk'].double() - oracle.double()
    out['topk'] = {
        'predicted_mean': float(details['topk'].double().mean()),
        'oracle_mean': float(oracle.double().mean()),
        'mae': float(diff.abs().mean()),
        'signed_error': float(diff.mean()),
    }

    thresholds: dict[str, float] = {}
    for method in BASELINES:
        t = time.perf_counter()
        pred = cluster_knn(graph, method)
        methods[method] = _scores(pred, y, time.perf_counter() - t)
        grid = THRESHOLD_GRIDS[method][::2]
        thr, _ = tune_threshold(graph_tune, y_tune, method, grid=grid)
        thresholds[method] = thr
        t = time.perf_counter()
        pred = cluster_knn(graph, method, threshold=thr)
        methods[f'{method} (tuned)'] = _scores(pred, y, time.perf_counter() - t)
    out['tuned_thresholds'] = thresholds

    hdbscan = _hdbscan()
    if hdbscan is not None:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            lab = hdbscan().fit_predict(x.numpy())
        lab = np.asarray(lab).copy()
        noise = lab < 0
        lab[noise] = lab.max() + 1 + np.arange(int(noise.sum()))
        methods['hdbscan'] = _scores(
            torch.from_numpy(lab).long(), y, time.perf_counter() - t
        )
        out['hdbscan_noise_share'] = float(noise.mean())
    out['metrics'] = methods
    return out


def verdict(cell: dict[str, Any]) -> str:
    r"""Where the untuned SDT stands against the best baseline of a cell."""
    m = cell['metrics']
    sdt = m['sdt']['pairwise_fscore']
    others = {k: v['pairwise_fscore'] for k, v in m.items() if not k.startswith('sdt')}
    best = max(others, key=others.get)
    untuned = {k: v for k, v in others.items() if k in BASELINES}
    lost_untuned = [k for k, v in untuned.items() if v > sdt]
    gap = sdt - others[best]
    if gap >= 0:
        return f'SDT wins ({gap:+.4f} over {best})'
    extra = f'; also loses to untuned {", ".join(lost_untuned)}' if lost_untuned else ''
    return f'**SDT loses** ({gap:+.4f} to {best}){extra}'


def lfw_cell(model: SDTClusterer) -> dict[str, Any] | None:
    if not (LFW / 'features.npy').exists():
        return None
    x = torch.from_numpy(np.load(LFW / 'features.npy')).float()
    x = torch.nn.functional.normalize(x, dim=1)
    y = torch.from_numpy(np.load(LFW / 'labels.npy')).long()
    tune, test = split_identities(y, 0.5, 0)

    def relabel(v: Tensor) -> Tensor:
        return torch.unique(v, return_inverse=True)[1]

    return run_cell(model, x[test], relabel(y[test]), x[tune], relabel(y[tune]))


def tables(result: dict[str, Any]) -> list[str]:
    cells = result['cells']
    methods = [m for m in METHODS if any(m in c['metrics'] for c in cells)]
    lines = []
    for score, label in (
        ('pairwise_fscore', 'Pairwise F'),
        ('bcubed_fscore', 'BCubed F'),
    ):
        lines += [
            f'## {label}',
            '',
            '| cell | N | ' + ' | '.join(methods) + ' |',
            '|---|---|' + '---|' * len(methods),
        ]
        for c in cells:
            row = [
                f'{c["metrics"][m][score]:.4f}' if m in c['metrics'] else '-'
                for m in methods
            ]
            lines.append(
                f'| {c["cell"]} | {c["stats"]["num_nodes"]:,} | '
                + ' | '.join(row)
                + ' |'
            )
        lines.append('')
    lines += [
        '## Verdict (pairwise F, untuned SDT against every baseline)',
        '',
        '| cell | verdict | SDT minus oracle-Top-K SDT |',
        '|---|---|---|',
    ]
    for c in cells:
        m = c['metrics']
        gap = m['sdt']['pairwise_fscore'] - m['sdt (oracle Top-K)']['pairwise_fscore']
        lines.append(f'| {c["cell"]} | {verdict(c)} | {gap:+.4f} |')
    lines += [
        '',
        '## Top-K of the shipped model against the oracle',
        '',
        '| cell | predicted mean | oracle mean | MAE | signed error |',
        '|---|---|---|---|---|',
    ]
    for c in cells:
        t = c['topk']
        lines.append(
            f'| {c["cell"]} | {t["predicted_mean"]:.1f} | {t["oracle_mean"]:.1f} | '
            f'{t["mae"]:.1f} | {t["signed_error"]:+.1f} |'
        )
    lines += [
        '',
        '## The cells',
        '',
        '| cell | N | D | identities | mean size | max size | singleton share '
        '| items in identities > k | random-pair cosine | tuned thresholds '
        '(infomap-knn, fc-es) | hdbscan noise share |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for c in cells:
        s, th = c['stats'], c['tuned_thresholds']
        noise = c.get('hdbscan_noise_share')
        lines.append(
            f'| {c["cell"]} | {s["num_nodes"]:,} | {s["dim"]} | {s["identities"]:,} | '
            f'{s["mean_size"]:.1f} | {s["max_size"]:,} | {s["singleton_share"]:.3f} | '
            f'{s["items_above_k"]:.3f} | {s["random_pair_cosine"]:.3f} | '
            f'{th["infomap-knn"]}, {th["fc-es"]} | '
            + ('-' if noise is None else f'{noise:.3f}')
            + ' |'
        )
    lines += [
        '',
        '## Seconds per method (kNN graph excluded, except for hdbscan)',
        '',
        '| cell | kNN | ' + ' | '.join(methods) + ' |',
        '|---|---|' + '---|' * len(methods),
    ]
    for c in cells:
        row = [
            f'{c["metrics"][m]["seconds"]:.1f}' if m in c['metrics'] else '-'
            for m in methods
        ]
        lines.append(
            f'| {c["cell"]} | {c["knn_seconds"]:.1f} | ' + ' | '.join(row) + ' |'
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[3000])
    parser.add_argument(
        '--cells',
        nargs='+',
        default=list(CELLS),
        help=f'name:cosine pairs; names {sorted(REGIMES)}, cosines {sorted(COSINES)}',
    )
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--no-lfw', action='store_true', help='skip real LFW')
    parser.add_argument('--quick', action='store_true', help='2 cells of 1,000')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    sizes, cell_names = args.sizes, args.cells
    if args.quick:
        sizes, cell_names = [1000], ['lfw:arcface', 'large:squeezed']
    for c in cell_names:
        name, _, cos = c.partition(':')
        if name not in REGIMES or (cos or 'arcface') not in COSINES:
            parser.error(f'unknown cell {c!r}')

    start = time.perf_counter()
    model = SDTClusterer.load(default_model_path())
    notes = []
    cells = []
    for n in sizes:
        for i, c in enumerate(cell_names):
            name, _, cos = c.partition(':')
            cos = cos or 'arcface'
            seed = FIRST_SEED + i
            x, y = regime_draw(name, n, args.dim, seed=seed, cosine=cos)
            xt, yt = regime_draw(name, n, args.dim, seed=seed + TUNE_OFFSET, cosine=cos)
            cell = run_cell(model, x, y, xt, yt)
            cell.update(cell=f'{name}:{cos}', seed=seed)
            cells.append(cell)
            m = cell['metrics']
            print(
                f'{name}:{cos} N={n:,}: '
                + ', '.join(f'{k} {v["pairwise_fscore"]:.4f}' for k, v in m.items()),
                flush=True,
            )
    if args.no_lfw or args.quick:
        notes.append('Real LFW was not run (--no-lfw or --quick).')
    else:
        real = lfw_cell(model)
        if real is None:
            notes.append(f'Real LFW skipped: {LFW} is absent.')
        else:
            real.update(cell='LFW held-out (real)', seed=0)
            cells.append(real)
    if _hdbscan() is None:
        notes.append('hdbscan skipped: scikit-learn is not installed.')
    total = time.perf_counter() - start

    lines = [
        'The shipped SDT (trained on LFW-like data), untuned, against the '
        'training-free baselines on draws from other regimes '
        '(`torch_geometric_sdt.datasets.regime_draw`: identity-size law : '
        'cosine scale). One evaluation draw per cell and a separate tuning '
        'draw of the same cell for the tuned thresholds; for real LFW, one '
        'half of the identities tunes and the other half is scored. Exact kNN, '
        f'k = {model.k}; SDT eta {model.config["eta"]}. "oracle Top-K" is the '
        'same model given the label-derived Top-K. hdbscan runs on the unit '
        'vectors with scikit-learn defaults, noise points as singletons.',
        '',
        f'Total run time: {total:.0f} s.',
        '',
    ]
    lines += [f'- {n}' for n in notes] + ([''] if notes else [])
    losses = [c['cell'] for c in cells if verdict(c).startswith('**SDT loses')]
    lines += [
        f'**SDT loses to at least one baseline (pairwise F) in {len(losses)} of '
        f'{len(cells)} cells**' + (f': {", ".join(losses)}.' if losses else '.'),
        '',
    ]
    lines += tables({'cells': cells})
    write_results(
        'regimes',
        'SDT against the baselines across data regimes',
        {
            'sizes': sizes,
            'cells_requested': cell_names,
            'notes': notes,
            'total_seconds': total,
            'cells': cells,
        },
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
