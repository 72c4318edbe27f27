r"""The SDT pipeline against the training-free baselines, on held-out data.

Two data sets, each with a training side and an evaluation side that share
no identity:

* **LFW** (``$SDT_SHARED/data/lfw_mobilefacenet192``): the identities are
  split in two halves (seeded, :func:`~torch_geometric_sdt.train.split_identities`);
  everything that is learned or tuned (the SDT models, the baselines'
  thresholds, the SDT's :math:`\eta`) sees only the training half.
* **synthetic faces at 10K and 100K** (256-d, seed 2000;
  ``--synthetic-sizes``), with the synthetic training draw of the shipped
  model (20K, seed 0) as the training side. (At 1M the scale benchmark
  compares the SDT with ``infomap-knn``.)

Methods: ``infomap-knn`` and ``fc-es`` with thresholds tuned on the training
side; the shipped relational SDT model (trained on synthetic faces only);
on LFW also relational and embedding-mode SDT models trained on the LFW
training identities. Rows marked *upper bound* tune a baseline on the
evaluation labels themselves and are for reference only.

Also measured: the threshold sensitivity of every method on the evaluation
side (pairwise and BCubed F across the whole threshold grid), a cosine-scale
shift (a shared offset vector added before normalising, which squeezes all
cosines upward) with every threshold kept from the unshifted training side,
and the time and peak memory of training.

Writes ``benchmarks/results/sdt_quality.{md,json}``::

    PYTHONPATH=. python -m benchmarks.sdt_quality            # full
    PYTHONPATH=. python -m benchmarks.sdt_quality --quick    # smoke run

Trained models are cached in ``benchmarks/.cache`` (``--retrain`` ignores
the cache).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import (
    LFW,
    METRIC_COLUMNS,
    ROOT,
    Measure,
    results_dir,
    write_results,
)
from torch_geometric_sdt.baselines import (
    THRESHOLD_GRIDS,
    cluster_knn,
    tune_threshold,
)
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.defaults import BASELINE_METHODS
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.nn.models.sdt_clusterer import DEFAULT_ETA_GRID
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.train import fit, split_identities
from torch_geometric_sdt.utils.infomap import cluster_links

CACHE = ROOT / 'benchmarks' / '.cache'
KEYS = ('pairwise_fscore', 'bcubed_fscore', 'nmi', 'num_clusters', 'num_singletons')
BASELINES = BASELINE_METHODS
#: Training budget of the models trained here (both stages capped per epoch).
TRAIN = dict(topk_epochs=6, sdt_epochs=6, max_steps_per_epoch=100, patience=2)
#: A wider grid for the shifted embeddings, whose cut-off moves upward.
WIDE_GRID = tuple(round(0.3 + 0.025 * i, 3) for i in range(28))
ETA_SWEEP = tuple(round(0.05 * i, 2) for i in range(1, 20))


def metrics(pred: Tensor, y: Tensor) -> dict[str, Any]:
    m = evaluate(pred, y)
    return {key: m[key] for key in KEYS}


def lfw_split(seed: int = 0) -> dict[str, Tensor]:
    r"""The LFW embeddings split by identity into two halves."""
    x = torch.from_numpy(np.load(LFW / 'features.npy')).float()
    y = torch.from_numpy(np.load(LFW / 'labels.npy')).long()
    train, test = split_identities(y, 0.5, seed)
    return {
        'x_train': x[train],
        'y_train': y[train],
        'x_test': x[test],
        'y_test': y[test],
    }


def cosine_shift(x: Tensor, alpha: float, seed: int = 0) -> Tensor:
    r"""Adds :obj:`alpha` times a fixed random unit vector to every row and
    normalises again, which moves every cosine similarity towards 1."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x.size(1), generator=g)
    u = u / u.norm()
    return torch.nn.functional.normalize(x + alpha * u, dim=1)


def trained_model(
    name: str,
    x: Tensor,
    y: Tensor,
    retrain: bool,
    seed: int = 0,
    train: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[SDTClusterer, dict[str, Any]]:
    r"""Trains (or loads from the cache) an :class:`SDTClusterer` with
    :obj:`config` on :obj:`(x, y)`; returns it with the training time and
    peak memory."""
    train = dict(TRAIN if train is None else train)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f'{name}.safetensors'
    meta_path = CACHE / f'{name}.json'
    key = {'config': config, 'train': train, 'seed': seed, 'n': int(x.size(0))}
    if not retrain and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get('key') == key:
            print(f'{name}: cached model {path}', flush=True)
            model = SDTClusterer.load(path)
            # eta as fit() chooses it, on the same validation identities, so
            # a cached model follows the current final-graph rule:
            _, val = split_identities(y, 0.2, seed)
            model.tune_eta(x[val], y[val])
            return model, dict(meta['training'], eta=model.config['eta'])
    model = SDTClusterer(**config)
    with Measure() as m:
        summary = fit(model, x, y, seed=seed, progress=False, **train)
    training = {
        'seconds': round(m.seconds, 1),
        'peak_memory_mib': round(m.peak / 2**20, 1),
        'eta': summary['eta'],
        'val_topk_mae': summary.get('val_topk_mae'),
        'epochs': len(summary.get('history', [])),
        'num_train_items': int(x.size(0)),
        **train,
    }
    model.save(path, overwrite=True)
    meta_path.write_text(json.dumps({'key': key, 'training': training}, indent=1))
    print(f'{name}: trained in {m.seconds:.0f} s', flush=True)
    return model, training


def sdt_sweep(
    model: SDTClusterer, graph: KNN, y: Tensor, x: Tensor | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r"""Clusters with the model's own :math:`\eta` and sweeps :math:`\eta`;
    the network runs once, only the final links change."""
    pred, d = model.cluster(x, graph=graph, return_details=True)
    own = metrics(pred, y)
    sweep = []
    for eta in ETA_SWEEP:
        links, weight = model.final_links(
            d['ctx'], d['topk'], d['jaccard'], d['band_pos'], d['band_prob'], eta
        )
        m = metrics(cluster_links(links, weight, graph.index.size(0)), y)
        sweep.append({'threshold': eta, **m})
    return own, sweep


def compare(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    models: dict[str, SDTClusterer],
    k: int,
    grid: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    r"""All methods on one train/evaluation pair: the baselines tuned on the
    training side, every SDT model, the upper-bound rows, the sweeps."""
    grid = grid or THRESHOLD_GRIDS
    with Measure() as m:
        g_train = knn(x_train, k)
        g_test = knn(x_test, k)
    print(f'{name}: kNN graphs in {m.seconds:.1f} s', flush=True)
    rows: list[dict[str, Any]] = []
    sensitivity: list[dict[str, Any]] = []
    tuned = {}
    for method in BASELINES:
        thr, _ = tune_threshold(g_train, y_train, method, grid=grid[method])
        tuned[method] = thr
        pred = cluster_knn(g_test, method, threshold=thr)
        rows.append(
            {
                'method': method,
                'threshold': thr,
                'tuned_on': 'training side',
                **metrics(pred, y_test),
            }
        )
        best, sweep = tune_threshold(g_test, y_test, method, grid=grid[method])
        best_row = next(r for r in sweep if r['threshold'] == best)
        rows.append(
            {
                'method': method,
                'threshold': best,
                'tuned_on': 'evaluation labels (upper bound)',
                **{key: best_row[key] for key in KEYS},
            }
        )
        sensitivity += [
            {
                'data': name,
                'method': method,
                'threshold': r['threshold'],
                **{key: r[key] for key in KEYS},
            }
            for r in sweep
        ]
        print(f'{name}: {method} done', flush=True)
    for label, model in models.items():
        with Measure() as m:
            own, sweep = sdt_sweep(model, g_test, y_test, x_test)
        rows.append(
            {
                'method': label,
                'threshold': model.config['eta'],
                'tuned_on': 'training side',
                'seconds': round(m.seconds, 1),
                **own,
            }
        )
        sensitivity += [{'data': name, 'method': label, **r} for r in sweep]
        print(f'{name}: {label} done', flush=True)
    return {
        'data': name,
        'num_train': int(x_train.size(0)),
        'num_test': int(x_test.size(0)),
        'test_identities': int(torch.unique(y_test).numel()),
        'dim': int(x_test.size(1)),
        'k': k,
        'rows': rows,
        'sensitivity': sensitivity,
        'tuned': tuned,
    }


def verdicts(result: dict[str, Any]) -> list[str]:
    r"""One line per SDT model and baseline: does it beat the tuned baseline on
    pairwise F and on BCubed F?"""
    rows = [r for r in result['rows'] if r['tuned_on'] == 'training side']
    base = {r['method']: r for r in rows if r['method'] in BASELINES}
    out = []
    for r in rows:
        if r['method'] in BASELINES:
            continue
        for method, b in base.items():
            for key, label in (
                ('pairwise_fscore', 'pairwise F'),
                ('bcubed_fscore', 'BCubed F'),
            ):
                d = r[key] - b[key]
                word = 'beats' if d > 0 else ('ties' if d == 0 else '**loses to**')
                out.append(
                    f'{result["data"]}: {r["method"]} {word} {method} on '
                    f'{label} ({r[key]:.4f} vs {b[key]:.4f}, {d:+.4f})'
                )
    return out


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        f'### {result["data"]}: {result["num_train"]:,} training items, '
        f'{result["num_test"]:,} evaluation items '
        f'({result["test_identities"]:,} identities), {result["dim"]}-d, '
        f'k = {result["k"]}',
        '',
        f'| method | threshold | tuned on | {METRIC_COLUMNS} |',
        '|---|---:|---|---:|---:|---:|---:|---:|',
    ]
    for r in result['rows']:
        lines.append(
            f'| {r["method"]} | {r["threshold"]} | {r["tuned_on"]} | '
            f'{r["pairwise_fscore"]:.4f} | {r["bcubed_fscore"]:.4f} | '
            f'{r["nmi"]:.4f} | {r["num_clusters"]:,} | {r["num_singletons"]:,} |'
        )
    return lines + ['']


def sensitivity_table(result: dict[str, Any]) -> list[str]:
    r"""Pairwise F across each method's threshold grid: the best value, the
    width of the threshold range within 0.01 of it, and the value at the
    training-side threshold."""
    lines = [
        f'Threshold sensitivity on {result["data"]} (evaluation side; pairwise F):',
        '',
        '| method | grid | best pairwise F (at) | thresholds within 0.01 of best '
        '| range width | pairwise F at the training-side threshold |',
        '|---|---|---:|---|---:|---:|',
    ]
    chosen = {
        r['method']: r['threshold']
        for r in result['rows']
        if r['tuned_on'] == 'training side'
    }
    methods = dict.fromkeys(s['method'] for s in result['sensitivity'])
    for method in methods:
        s = [r for r in result['sensitivity'] if r['method'] == method]
        best = max(s, key=lambda r: r['pairwise_fscore'])
        near = [
            r['threshold']
            for r in s
            if r['pairwise_fscore'] >= best['pairwise_fscore'] - 0.01
        ]
        at = [r['pairwise_fscore'] for r in s if r['threshold'] == chosen.get(method)]
        lines.append(
            f'| {method} | {s[0]["threshold"]}..{s[-1]["threshold"]} | '
            f'{best["pairwise_fscore"]:.4f} ({best["threshold"]}) | '
            f'{min(near)}..{max(near)} | {max(near) - min(near):.3f} | '
            + (f'{at[0]:.4f}' if at else 'off grid')
            + ' |'
        )
    return lines + ['']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small smoke run')
    parser.add_argument('-k', type=int, default=80)
    parser.add_argument(
        '--synthetic-sizes', type=int, nargs='+', default=[10_000, 100_000]
    )
    parser.add_argument(
        '--shift',
        type=float,
        default=1.0,
        help='norm of the shared offset vector of the shift test',
    )
    parser.add_argument(
        '--skip',
        nargs='*',
        default=[],
        choices=['lfw', 'synthetic', 'shift', 'embedding'],
    )
    parser.add_argument('--retrain', action='store_true')
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    torch.manual_seed(0)

    shipped = SDTClusterer.load(default_model_path())
    train_budget = dict(TRAIN, max_steps_per_epoch=5) if args.quick else dict(TRAIN)
    results: dict[str, Any] = {'train_budget': train_budget, 'sections': []}
    training: dict[str, Any] = {}
    body: list[str] = []

    if 'lfw' not in args.skip and (LFW / 'features.npy').exists():
        s = lfw_split()
        if args.quick:
            s = {key: v[:2000] for key, v in s.items()}
        models = {'sdt (shipped, synthetic-trained)': shipped}
        rel, training['sdt (LFW-trained, relational)'] = trained_model(
            'lfw_relational' + ('_quick' if args.quick else ''),
            s['x_train'],
            s['y_train'],
            args.retrain,
            train=train_budget,
            k=args.k,
        )
        models['sdt (LFW-trained, relational)'] = rel
        if 'embedding' not in args.skip:
            emb, training['sdt (LFW-trained, embedding)'] = trained_model(
                'lfw_embedding' + ('_quick' if args.quick else ''),
                s['x_train'],
                s['y_train'],
                args.retrain,
                train=train_budget,
                k=args.k,
                mode='embedding',
                embedding_channels=int(s['x_train'].size(1)),
            )
            models['sdt (LFW-trained, embedding)'] = emb
        res = compare(
            'LFW', s['x_train'], s['y_train'], s['x_test'], s['y_test'], models, args.k
        )
        results['sections'].append(res)
        if 'shift' not in args.skip:
            xs_tr = cosine_shift(s['x_train'], args.shift)
            xs_te = cosine_shift(s['x_test'], args.shift)
            res_s = compare(
                f'LFW, cosine shift {args.shift}',
                xs_tr,
                s['y_train'],
                xs_te,
                s['y_test'],
                models,
                args.k,
                grid={m: WIDE_GRID for m in BASELINES},
            )
            # The thresholds of the unshifted training side, applied as they are:
            g = knn(xs_te, args.k)
            for method in BASELINES:
                thr = res['tuned'][method]
                res_s['rows'].insert(
                    0,
                    {
                        'method': method,
                        'threshold': thr,
                        'tuned_on': 'unshifted training side',
                        **metrics(cluster_knn(g, method, threshold=thr), s['y_test']),
                    },
                )
            sim = knn(xs_te, 2).sim[:, 1]
            res_s['median_nn_cosine'] = float(sim.median())
            res_s['median_nn_cosine_unshifted'] = float(
                knn(s['x_test'], 2).sim[:, 1].median()
            )
            results['sections'].append(res_s)

    sizes = [] if 'synthetic' in args.skip else args.synthetic_sizes
    if args.quick and sizes:
        sizes = [5000]
    if sizes:
        x_tr, y_tr = synthetic_faces(4000 if args.quick else 20_000, 256, seed=0)
    for n in sizes:
        x_te, y_te = synthetic_faces(n, 256, seed=2000)
        res = compare(
            f'synthetic {n:,}',
            x_tr,
            y_tr,
            x_te,
            y_te,
            {'sdt (shipped)': shipped},
            args.k,
        )
        results['sections'].append(res)

    for res in results['sections']:
        body += table(res)
        if 'median_nn_cosine' in res:
            body += [
                f'Median cosine to the nearest neighbour: '
                f'{res["median_nn_cosine_unshifted"]:.3f} unshifted, '
                f'{res["median_nn_cosine"]:.3f} shifted. Rows tuned on the '
                '"unshifted training side" keep the thresholds of the unshifted '
                'data, as a user who moves to another embedding model without '
                'retuning would; the SDT models are not retrained.',
                '',
            ]
    body += ['## Does SDT beat the tuned baselines?', '']
    for res in results['sections']:
        body += [f'- {v}' for v in verdicts(res)]
    body += ['', '## Threshold sensitivity', '']
    for res in results['sections']:
        body += sensitivity_table(res)
    if training:
        body += [
            '## Training (this machine)',
            '',
            '| model | items | epochs | seconds | peak memory (MiB) | eta '
            '| val Top-K MAE |',
            '|---|---:|---:|---:|---:|---:|---:|',
        ]
        for label, t in training.items():
            mae = t['val_topk_mae']
            body.append(
                f'| {label} | {t["num_train_items"]:,} | {t["epochs"]} | '
                f'{t["seconds"]} | {t["peak_memory_mib"]} | {t["eta"]} | '
                + (f'{mae:.3f}' if mae is not None else '')
                + ' |'
            )
        body += [
            '',
            f'Training budget: `{train_budget}` (the SDT eta grid '
            f'{DEFAULT_ETA_GRID[0]}..{DEFAULT_ETA_GRID[-1]} is searched on '
            'validation identities split off the training side).',
            '',
        ]
    results['training'] = training
    write_results(
        'sdt_quality',
        'SDT pipeline vs. training-free baselines on held-out identities'
        + (' (quick run)' if args.quick else ''),
        results,
        body,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
