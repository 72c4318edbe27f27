r"""The shipped SDT with at most :math:`L` links per node
(:meth:`SDTClusterer.final_link_positions`'s :obj:`max_links`), per data
regime: what the cap costs in quality and saves in links, which Infomap's
memory and time follow.

A node of a large identity keeps a Top-K pair for nearly every face of its
identity (about 70 for MS-Celeb-like identities of 50 to 120 faces), and
Infomap holds about 106 bytes per link. The cap keeps a fixed pseudo-random
subset of :math:`L` links per node (:func:`spread_key`); it is measured
against the obvious alternative, the :math:`L` strongest (largest weight).

**Cells.** The cells of :mod:`benchmarks.regimes` at 256-d (same draws:
seed :math:`3000 + i` for the cell of index :math:`i`, ``--size`` items),
the four identity-disjoint LFW halvings (the scored half of each, as in
:mod:`benchmarks.regimes`; when ``$SDT_SHARED/data/lfw_mobilefacenet192``
exists), and cells at ``--large-size`` (default: the MS-Celeb-like
and LFW-like laws at 30,000 faces, seed 3100).

**Method.** Per cell one exact kNN graph (:math:`k = 80`) and one run of the
shipped model (``cluster(..., return_details=True)``, untuned); then, for
every cap of ``--caps`` (and none) and both rules, the final links of the
same Top-K and scores, and directed Infomap on them: the uncapped row is the model's own
partition (checked). Reported per cell and cap: pairwise and BCubed F, the
links, Infomap's time (wall clock, one run, on a shared machine: compare
within a row only), and the mean Top-K.

Writes ``benchmarks/results/link_cap.{md,json}``::

    python -m benchmarks.link_cap
    python -m benchmarks.link_cap --quick
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.common import results_dir, write_results
from benchmarks.regimes import CELLS, FIRST_SEED, LFW_HALVINGS, lfw_data
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.datasets import parse_cell, regime_draw
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.train import split_identities
from torch_geometric_sdt.utils.infomap import cluster_links
from torch_geometric_sdt.utils.rank import position_in_target

#: The caps scored besides none.
CAPS = (8, 12, 16, 24, 32)
#: The larger cells: (cell, size).
LARGE = (('msceleb:arcface', 30_000), ('lfw:arcface', 30_000))
LARGE_SEED = 3100
#: A cap costs a cell when it lowers the pairwise F by more than this.
MARGIN = 0.002


def rank_by_weight(model: SDTClusterer, d: dict[str, Any]) -> tuple[Tensor, ...]:
    r"""The uncapped links as positions, their weights, and the rank of each
    among its node's by descending weight (ties to the earlier link)."""
    args = (d['topk'], d['jaccard'], d['band_pos'], d['band_prob'])
    pos, weight = model.final_link_positions(*args)
    return pos, weight, position_in_target(weight, pos // model.k, d['topk'].numel())


def strongest(
    model: SDTClusterer, d: dict[str, Any], ranked: tuple[Tensor, ...], cap: int
) -> tuple[Tensor, Tensor]:
    r"""The alternative the cap is measured against: every node keeps its
    :obj:`cap` links of largest weight (:obj:`ranked` from
    :func:`rank_by_weight`)."""
    pos, weight, rank = ranked
    keep = rank < cap
    pos = pos[keep]
    edge_index = torch.stack([pos // model.k, d['ctx'].knn.index.view(-1)[pos]])
    return edge_index, weight[keep]


def score_caps(
    model: SDTClusterer, x: Tensor, y: Tensor, caps: tuple[int, ...]
) -> dict[str, Any]:
    r"""The cell's scores with no cap (key ``'none'``), with every cap
    (``'<L>'``: the shipped rule, a fixed pseudo-random subset) and with the
    strongest links (``'<L> strongest'``)."""
    graph = knn(x, model.k, backend='exact')
    labels, d = model.cluster(x, graph=graph, return_details=True)
    out: dict[str, Any] = {'mean_topk': float(d['topk'].float().mean())}
    args = (d['ctx'], d['topk'], d['jaccard'], d['band_pos'], d['band_prob'])
    ranked = rank_by_weight(model, d)
    runs = [('none', lambda: model.final_links(*args))]
    for cap in caps:
        runs.append((str(cap), lambda cap=cap: model.final_links(*args, max_links=cap)))
        runs.append(
            (f'{cap} strongest', lambda cap=cap: strongest(model, d, ranked, cap))
        )
    for key, links in runs:
        edge_index, weight = links()
        t = time.perf_counter()
        pred = cluster_links(edge_index, weight, x.size(0))
        seconds = time.perf_counter() - t
        if key == 'none' and not torch.equal(pred, labels):
            raise RuntimeError('the uncapped links do not give the model partition')
        out[key] = {
            **evaluate(pred, y),
            'links': int(edge_index.size(1)),
            'infomap_seconds': seconds,
        }
    return out


def cells(
    size: int, large: tuple[tuple[str, int], ...], quick: bool
) -> list[tuple[str, Tensor, Tensor]]:
    r"""The scored draws: (name, x, y)."""
    out = []
    for i, cell in enumerate(CELLS):
        if quick and cell not in ('lfw:arcface', 'msceleb:arcface'):
            continue
        law, cosine = parse_cell(cell)
        x, y = regime_draw(law, size, 256, seed=FIRST_SEED + i, cosine=cosine)
        out.append((f'{cell} N={size:,}', x, y))
    lfw = None if quick else lfw_data()
    for s in LFW_HALVINGS if lfw is not None else ():
        _, test = split_identities(lfw[1], 0.5, s)
        y = torch.unique(lfw[1][test], return_inverse=True)[1]
        out.append((f'LFW halving {s} (real)', lfw[0][test], y))
    for cell, n in large:
        law, cosine = parse_cell(cell)
        x, y = regime_draw(law, n, 256, seed=LARGE_SEED, cosine=cosine)
        out.append((f'{cell} N={n:,}', x, y))
    return out


def columns(caps: tuple[int, ...]) -> list[tuple[str, str]]:
    r"""(result key, column title) of every scored rule."""
    out = [('none', 'none')]
    for cap in caps:
        out += [(str(cap), f'L={cap}'), (f'{cap} strongest', f'L={cap} strongest')]
    return out


def tables(rows: list[dict[str, Any]], caps: tuple[int, ...]) -> list[str]:
    cols = columns(caps)
    head = ' | '.join(title for _, title in cols)
    lines = []
    for metric, title in (
        ('pairwise_fscore', 'Pairwise F'),
        ('bcubed_fscore', 'BCubed F'),
    ):
        lines += [
            f'## {title}',
            '',
            f'| cell | N | mean Top-K | {head} |',
            '|---|---|---|' + '---|' * len(cols),
        ]
        for r in rows:
            lines.append(
                f'| {r["cell"]} | {r["num_nodes"]:,} | {r["mean_topk"]:.1f} | '
                + ' | '.join(f'{r[key][metric]:.4f}' for key, _ in cols)
                + ' |'
            )
        means = [np.mean([r[key][metric] for r in rows]) for key, _ in cols]
        lines += ['| **mean** | | | ' + ' | '.join(f'{m:.4f}' for m in means) + ' |']
        lines.append('')
    spread = [('none', 'none'), *((str(c), f'L={c}') for c in caps)]
    lines += [
        '## Links, and Infomap seconds (the shipped rule)',
        '',
        '| cell | ' + ' | '.join(title for _, title in spread) + ' |',
        '|---|' + '---|' * len(spread),
    ]
    for r in rows:
        lines.append(
            f'| {r["cell"]} | '
            + ' | '.join(
                f'{r[key]["links"]:,} ({r[key]["infomap_seconds"]:.2f} s)'
                for key, _ in spread
            )
            + ' |'
        )
    lines.append('')
    return lines


def verdict(rows: list[dict[str, Any]], caps: tuple[int, ...]) -> dict[str, Any]:
    r"""Per rule: the cells where it costs more than :obj:`MARGIN` pairwise
    F, its worst and best change, and its links relative to none (all cells
    summed)."""
    out = {}
    total = sum(r['none']['links'] for r in rows)
    for key, _ in columns(caps)[1:]:
        deltas = {
            r['cell']: r[key]['pairwise_fscore'] - r['none']['pairwise_fscore']
            for r in rows
        }
        out[key] = {
            'costly_cells': [c for c, d in deltas.items() if d < -MARGIN],
            'worst_delta': min(deltas.values()),
            'best_delta': max(deltas.values()),
            'links_ratio': sum(r[key]['links'] for r in rows) / total,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=3000)
    parser.add_argument('--caps', type=int, nargs='+', default=list(CAPS))
    parser.add_argument(
        '--large-size', type=int, default=30_000, help='size of the larger cells'
    )
    parser.add_argument('--quick', action='store_true', help='tiny smoke run')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args(argv)
    start = time.perf_counter()
    caps = tuple(sorted(set(args.caps)))
    if not caps or caps[0] < 1:
        parser.error('--caps must be positive')
    size = 1000 if args.quick else args.size
    large = () if args.quick else tuple((c, args.large_size) for c, _ in LARGE)
    model = SDTClusterer.load(default_model_path())
    rows = []
    for name, x, y in cells(size, large, args.quick):
        rows.append({'cell': name, 'num_nodes': int(y.numel())})
        rows[-1].update(score_caps(model, x, y, caps))
        scores = {
            key: round(rows[-1][key]['pairwise_fscore'], 4) for key, _ in columns(caps)
        }
        print(name, scores, flush=True)
    total = time.perf_counter() - start
    summ = verdict(rows, caps)
    lines = [
        'The shipped model, untuned, on one exact kNN graph (k = 80) per cell; '
        'per cap L, the final links of the same Top-K and scores with at most '
        'L per node, then directed Infomap (see `benchmarks/link_cap.py`): '
        '"L=8" keeps a fixed pseudo-random subset of each node\'s links '
        '(`max_links`, the rule the package ships), "L=8 strongest" the 8 of '
        'largest weight. "none" is the model without a cap (the default). '
        'Infomap seconds are one wall-clock run each on a shared machine.',
        '',
        f'Total run time: {total:.0f} s.',
        '',
        '## Verdict',
        '',
        f'| rule | cells more than {MARGIN} pairwise F below none | worst change '
        '| best change | links against none |',
        '|---|---|---|---|---|',
    ]
    titles = dict(columns(caps))
    for key, v in summ.items():
        lines.append(
            f'| {titles[key]} | {len(v["costly_cells"])} of {len(rows)}'
            + (f' ({", ".join(v["costly_cells"])})' if v['costly_cells'] else '')
            + f' | {v["worst_delta"]:+.4f} | {v["best_delta"]:+.4f} | '
            f'{v["links_ratio"]:.2f} |'
        )
    lines.append('')
    lines += tables(rows, caps)
    write_results(
        'link_cap',
        'Links per node capped: quality and links per data regime',
        {
            'size': size,
            'caps': list(caps),
            'margin': MARGIN,
            'total_seconds': total,
            'verdict': summ,
            'cells': rows,
        },
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
