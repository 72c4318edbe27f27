r"""Clustering time of the shipped model against another checkpoint, in one
process, on one kNN graph.

A timing on this shared machine means something only as a ratio against a
baseline run at the same time: both models cluster the same synthetic faces
(LFW-like, 256-d, seed 7) from the same precomputed kNN graph, interleaved
``--repeats`` times; the report gives each run, the median ratio and the
Top-K each model predicts (the SDT step's cost grows with the Top-K). Each
repeat also times :meth:`SDTClusterer.predict_topk` alone on the same kNN
context (the Top-K predictor's share of the run), with its own ratio.

Writes ``benchmarks/results/model_speed.{md,json}``::

    python -m benchmarks.model_speed --baseline OLD.safetensors --nodes 100000
    python -m benchmarks.model_speed --quick --baseline OLD.safetensors
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.pretrained import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--baseline', type=Path, required=True, help='checkpoint')
    parser.add_argument('--nodes', type=int, default=100_000)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='10K nodes, 1 repeat')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    n, repeats = (10_000, 1) if args.quick else (args.nodes, args.repeats)
    models = {
        'shipped': SDTClusterer.load(default_model_path()),
        'baseline': SDTClusterer.load(args.baseline),
    }
    x, _ = synthetic_faces(n, 256, seed=7)
    graph = knn(x, 80)
    contexts = {name: model.context(x, graph=graph) for name, model in models.items()}
    runs: dict[str, list[float]] = {name: [] for name in models}
    predict: dict[str, list[float]] = {name: [] for name in models}
    topk: dict[str, float] = {}
    for _ in range(repeats):
        for name, model in models.items():
            t = time.perf_counter()
            _, details = model.cluster(x, graph=graph, return_details=True)
            runs[name].append(time.perf_counter() - t)
            topk[name] = float(details['topk'].float().mean())
            t = time.perf_counter()
            model.predict_topk(contexts[name])
            predict[name].append(time.perf_counter() - t)
            print(
                name,
                f'{runs[name][-1]:.1f} s, predict_topk {predict[name][-1]:.1f} s',
                flush=True,
            )
    ratios = [a / b for a, b in zip(runs['shipped'], runs['baseline'])]
    ratio = statistics.median(ratios)
    predict_ratios = [a / b for a, b in zip(predict['shipped'], predict['baseline'])]
    predict_ratio = statistics.median(predict_ratios)
    payload: dict[str, Any] = {
        'num_nodes': n,
        'baseline': str(args.baseline),
        'seconds': runs,
        'ratios': ratios,
        'median_ratio': ratio,
        'predict_topk_seconds': predict,
        'predict_topk_ratios': predict_ratios,
        'predict_topk_median_ratio': predict_ratio,
        'mean_topk': topk,
    }
    lines = [
        f'`SDTClusterer.cluster` on {n:,} synthetic LFW-like faces (256-d, seed 7) '
        'from one precomputed exact kNN graph (k = 80), the two models '
        f'interleaved {repeats} time(s) in one process.',
        '',
        '| model | seconds per run | `predict_topk` seconds | mean Top-K |',
        '|---|---|---|---|',
    ]
    for name in models:
        secs = ', '.join(f'{s:.1f}' for s in runs[name])
        pred = ', '.join(f'{s:.1f}' for s in predict[name])
        lines.append(f'| {name} | {secs} | {pred} | {topk[name]:.1f} |')
    lines += [
        '',
        f'Median ratio shipped / baseline: **{ratio:.2f}** '
        f'(per repeat: {", ".join(f"{r:.2f}" for r in ratios)}); '
        f'`predict_topk` alone: **{predict_ratio:.2f}** '
        f'(per repeat: {", ".join(f"{r:.2f}" for r in predict_ratios)}).',
        '',
    ]
    write_results(
        'model_speed',
        'Clustering time: shipped model against a baseline checkpoint',
        payload,
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
