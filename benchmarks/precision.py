r"""The Top-K predictor in bfloat16 against float32
(:attr:`SDTClusterer.precision`): time in one process, and what it changes
per data regime.

**Quality.** The cells of :mod:`benchmarks.link_cap` (the regime cells at
256-d, the four identity-disjoint LFW halvings when the shared LFW data are
there, and the MS-Celeb-like and LFW-like laws at 30,000 faces). Per cell one
exact kNN graph (:math:`k = 80`) and the shipped model, untuned, once per
precision: the share of nodes whose :math:`K_i` differs, the Top-K mean
absolute error against the oracle at both precisions, and pairwise and
BCubed F of both partitions.

**Time.** On ``--nodes`` synthetic LFW-like faces (256-d, seed 7) and one
exact kNN graph, :meth:`SDTClusterer.predict_topk` and the whole
:meth:`SDTClusterer.cluster` at both precisions, interleaved ``--repeats``
times in one process (float32 first in each repeat); the report gives every
run and the median ratio bfloat16 / float32. bfloat16 pays only where the CPU
multiplies it natively (AVX-512 BF16 or AMX); the report says whether this
one does.

Writes ``benchmarks/results/precision.{md,json}``::

    python -m benchmarks.precision
    python -m benchmarks.precision --quick
    python -m benchmarks.precision --report benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import results_dir, write_results
from benchmarks.link_cap import LARGE, cells
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.utils import topk_target
from torch_geometric_sdt.utils.precision import bfloat16_is_fast

#: The two precisions compared, the reference first.
COMPARED = ('float32', 'bfloat16')
TITLE = 'Top-K predictor in bfloat16 against float32: time and quality'
#: A cell counts as changed when its pairwise F moves by more than this.
MARGIN = 0.002


def score_cell(model: SDTClusterer, x: Tensor, y: Tensor) -> dict[str, Any]:
    r"""Per precision: the partition's scores and its Top-K error; and the
    share of nodes whose Top-K differs between the two."""
    graph = knn(x, model.k, backend='exact')
    oracle = topk_target(graph.index, y)
    out: dict[str, Any] = {}
    topk = {}
    for precision in COMPARED:
        model.precision = precision
        labels, d = model.cluster(x, graph=graph, return_details=True)
        topk[precision] = d['topk']
        out[precision] = {
            **evaluate(labels, y),
            'mean_topk': float(d['topk'].float().mean()),
            'topk_mae': float((d['topk'] - oracle).abs().float().mean()),
        }
    diff = topk['bfloat16'] != topk['float32']
    out['topk_differs'] = float(diff.float().mean())
    out['topk_mean_change'] = float(
        (topk['bfloat16'] - topk['float32']).abs().float().mean()
    )
    return out


def timing(model: SDTClusterer, num_nodes: int, repeats: int) -> dict[str, Any]:
    r"""Seconds of the Top-K stage and of the whole clustering per precision
    and repeat, on one graph."""
    x, _ = synthetic_faces(num_nodes, 256, seed=7)
    graph = knn(x, model.k, backend='exact')
    ctx = model.context(x, graph=graph)
    runs: dict[str, dict[str, list[float]]] = {
        stage: {p: [] for p in COMPARED} for stage in ('predict_topk', 'cluster')
    }
    for _ in range(repeats):
        for precision in COMPARED:
            model.precision = precision
            t = time.perf_counter()
            model.predict_topk(ctx)
            runs['predict_topk'][precision].append(time.perf_counter() - t)
            t = time.perf_counter()
            model.cluster(x, graph=graph)
            runs['cluster'][precision].append(time.perf_counter() - t)
            print(
                precision,
                {s: round(r[precision][-1], 1) for s, r in runs.items()},
                flush=True,
            )
    ratios = {
        stage: [b / a for a, b in zip(r['float32'], r['bfloat16'])]
        for stage, r in runs.items()
    }
    return {
        'num_nodes': num_nodes,
        'repeats': repeats,
        'seconds': runs,
        'ratios': ratios,
        'median_ratio': {s: statistics.median(r) for s, r in ratios.items()},
    }


def tables(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        '| cell | N | K differs | mean change of K | Top-K error float32 | '
        'bfloat16 | pairwise F float32 | bfloat16 | change | BCubed F float32 '
        '| bfloat16 | change |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        a, b = r['float32'], r['bfloat16']
        lines.append(
            f'| {r["cell"]} | {r["num_nodes"]:,} | {100 * r["topk_differs"]:.2f}% '
            f'| {r["topk_mean_change"]:.3f} | {a["topk_mae"]:.2f} '
            f'| {b["topk_mae"]:.2f} | {a["pairwise_fscore"]:.4f} '
            f'| {b["pairwise_fscore"]:.4f} '
            f'| {b["pairwise_fscore"] - a["pairwise_fscore"]:+.4f} '
            f'| {a["bcubed_fscore"]:.4f} | {b["bcubed_fscore"]:.4f} '
            f'| {b["bcubed_fscore"] - a["bcubed_fscore"]:+.4f} |'
        )

    def mean(p: str, key: str) -> float:
        return float(np.mean([r[p][key] for r in rows]))

    lines.append(
        '| **mean** | | '
        f'{100 * np.mean([r["topk_differs"] for r in rows]):.2f}% | | '
        f'{mean("float32", "topk_mae"):.2f} | {mean("bfloat16", "topk_mae"):.2f} '
        f'| {mean("float32", "pairwise_fscore"):.4f} '
        f'| {mean("bfloat16", "pairwise_fscore"):.4f} | '
        f'| {mean("float32", "bcubed_fscore"):.4f} '
        f'| {mean("bfloat16", "bcubed_fscore"):.4f} | |'
    )
    return lines + ['']


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=3000)
    parser.add_argument('--large-size', type=int, default=30_000)
    parser.add_argument('--nodes', type=int, default=100_000, help='timing size')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--quick', action='store_true', help='tiny smoke run')
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--report', type=Path, default=None, help='re-render a recorded precision.json'
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        report(args.report)
        return
    start = time.perf_counter()
    size = 1000 if args.quick else args.size
    large = () if args.quick else tuple((c, args.large_size) for c, _ in LARGE)
    nodes, repeats = (3000, 1) if args.quick else (args.nodes, args.repeats)
    model = SDTClusterer.load(default_model_path())
    rows = []
    for name, x, y in cells(size, large, args.quick):
        rows.append(
            {'cell': name, 'num_nodes': int(y.numel()), **score_cell(model, x, y)}
        )
        r = rows[-1]
        print(
            name,
            f'K differs {100 * r["topk_differs"]:.2f}%',
            {p: round(r[p]['pairwise_fscore'], 4) for p in COMPARED},
            flush=True,
        )
    times = timing(model, nodes, repeats)
    moved = [
        r['cell']
        for r in rows
        if abs(r['bfloat16']['pairwise_fscore'] - r['float32']['pairwise_fscore'])
        > MARGIN
    ]
    payload = {
        'bfloat16_is_fast': bfloat16_is_fast(torch.device('cpu')),
        'size': size,
        'margin': MARGIN,
        'total_seconds': time.perf_counter() - start,
        'timing': times,
        'moved_cells': moved,
        'worst_pairwise_change': min(
            r['bfloat16']['pairwise_fscore'] - r['float32']['pairwise_fscore']
            for r in rows
        ),
        'cells': rows,
    }
    write_results(
        'precision',
        TITLE,
        payload,
        markdown(payload),
        out=results_dir(args.quick, args.out),
    )


def markdown(doc: dict[str, Any]) -> list[str]:
    r"""The report of a run's JSON document."""
    times, rows, moved = doc['timing'], doc['cells'], doc['moved_cells']
    fast = doc['bfloat16_is_fast']
    lines = [
        'The shipped model with its Top-K predictor in bfloat16 (`precision='
        "'bfloat16'`: matrix products under `torch.autocast`) against float32 "
        '(the default); the rest of the pipeline is the same. See '
        '`benchmarks/precision.py`.',
        '',
        f'This CPU multiplies bfloat16 natively: **{"yes" if fast else "no"}** '
        "(`precision='auto'` is "
        f'{"bfloat16" if fast else "float32"} here).',
        '',
        f'Total run time: {doc["total_seconds"]:.0f} s.',
        '',
        f'## Time ({times["num_nodes"]:,} LFW-like faces, 256-d, one exact kNN '
        f'graph, {times["repeats"]} interleaved repeat(s), float32 first)',
        '',
        '| stage | float32 (s) | bfloat16 (s) | median ratio bfloat16 / float32 |',
        '|---|---|---|---|',
    ]
    for stage, r in times['seconds'].items():
        lines.append(
            f'| `{stage}` | {", ".join(f"{s:.1f}" for s in r["float32"])} '
            f'| {", ".join(f"{s:.1f}" for s in r["bfloat16"])} '
            f'| **{times["median_ratio"][stage]:.2f}** |'
        )
    lines += [
        '',
        '## Quality per cell (untuned, one exact kNN graph per cell)',
        '',
        f'Pairwise F moves by more than {doc["margin"]} in {len(moved)} of '
        f'{len(rows)} cells{" (" + ", ".join(moved) + ")" if moved else ""}; '
        'its lowest change (bfloat16 minus float32) is '
        f'{doc["worst_pairwise_change"]:+.4f}.',
        '',
        *tables(rows),
    ]
    return lines


def report(path: Path) -> None:
    r"""Writes the report of the recorded JSON document at :obj:`path` again
    (its provenance kept)."""
    doc = json.loads(path.read_text())
    write_results('precision', TITLE, doc, markdown(doc), out=path.parent)


if __name__ == '__main__':
    main()
