r"""Time and peak memory of every stage of the SDT pipeline as :math:`N`
grows, with the ``infomap-knn`` baseline on the same kNN graph.

Data: :func:`torch_geometric_sdt.datasets.synthetic_faces`, 256-d, seed 0,
:math:`k = 80` (self included), cosine, written to a ``.npy`` file by one
process and read memory-mapped by another (as ``sdt cluster`` reads a
features file), which runs the pipeline. Model: the shipped relational model
(:func:`torch_geometric_sdt.pretrained.default_model_path`). The stages are
those of :meth:`SDTClusterer.cluster`, run one by one:

1. ``knn``: the kNN graph with ``backend='auto'`` (the backend it picks is
   recorded: exact torch up to 200K points, ``pynndescent`` above);
2. ``context``: the set Jaccard of the full lists and the similarity scale
   (:meth:`KNNContext.build` on the graph);
3. ``topk``: Top-K prediction;
4. ``jaccard``: the Top-K Jaccard of every kNN edge;
5. ``sdt``: SDT node states and band scoring;
6. ``links_infomap``: the final links and Infomap;
7. ``metrics``: pairwise / BCubed F and NMI against the labels;

with ``infomap-knn`` (early-stopped cosine threshold + Infomap) and
``fc-es`` (full-list edge probabilities + Infomap), their thresholds chosen
on the synthetic training draw of ``sdt_quality``, run on the same graph
(written to a file after ``knn``, so that during the SDT stages the graph
lives in the context alone, which :meth:`SDTClusterer.cluster` frees before
Infomap), timed and scored. The SDT stages of each size run in one
subprocess and each baseline in another, so that the peak memory of one
never mixes with another's, and a baseline killed for memory leaves the SDT
row (and the other baseline) recorded.

``--regime msceleb`` draws the identity sizes of the MS-Celeb-like regime
(:func:`~torch_geometric_sdt.datasets.regime_draw`: 50 to 120 faces per
identity, no singletons) instead of the LFW-like long tail, and writes
``scale_msceleb.{json,md}``. Each stage records its wall time and peak resident
memory (:class:`benchmarks.common.Measure`); the growth exponent of each
stage is the least-squares slope of :math:`\log t` against :math:`\log N`
over the sizes run. The memory model
:func:`torch_geometric_sdt.memory.estimate_memory` is compared with the
measured peak at every size and projected to the 5.21M faces of the
MS-Celeb-1M test set.

``benchmarks/results/scale.{json,md}`` is rewritten after every size, so a
crash at a later size keeps the sizes already done.

    python -m benchmarks.scale                       # 10K, 100K, 1M
    python -m benchmarks.scale --sizes 10000 100000
    python -m benchmarks.scale --quick               # 2K and 10K
    python -m benchmarks.scale --sizes 5210000 --merge --regime msceleb
    python -m benchmarks.scale --report              # re-render, run nothing
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    METRIC_COLUMNS,
    ROOT,
    Measure,
    child_env,
    fmt_metrics,
    provenance,
    results_dir,
    rss_bytes,
    write_results,
)
from torch_geometric_sdt.datasets import REGIMES
from torch_geometric_sdt.memory import check_memory, estimate_memory

NAME = 'scale'
STAGES = ('knn', 'context', 'topk', 'jaccard', 'sdt', 'links_infomap', 'metrics')
#: The size of the MS-Celeb-1M test set, for the memory projection.
PROJECTION_NODES = 5_210_000
MB = 2**20


def generate(num_nodes: int, dim: int, folder: Path, regime: str = 'lfw') -> None:
    r"""Writes the synthetic faces of one size to :obj:`folder`
    (``x.npy``, ``y.npy``), in the process that calls it: for
    :obj:`regime='lfw'` :func:`synthetic_faces` with its defaults (seed 0),
    else the identity-size law :obj:`regime` of
    :func:`~torch_geometric_sdt.datasets.regime_draw` (seed 0, ArcFace-like
    cosines)."""
    from torch_geometric_sdt.datasets import regime_draw, synthetic_faces

    if regime == 'lfw':
        x, y = synthetic_faces(num_nodes, dim, seed=0)
    else:
        x, y = regime_draw(regime, num_nodes, dim, seed=0)
    np.save(folder / 'x.npy', x.numpy())
    np.save(folder / 'y.npy', y.numpy())


def run_one(
    folder: Path, k: int, max_links: int | None = None, precision: str = 'float32'
) -> dict[str, Any]:
    r"""Runs every stage on the faces in :obj:`folder` (in this process) and
    returns its row; :obj:`max_links` caps the links per node
    (:meth:`SDTClusterer.cluster`'s), :obj:`precision` is the model's
    (:attr:`SDTClusterer.precision`). The features are read memory-mapped, as
    :func:`~torch_geometric_sdt.io.load_features` reads them for ``sdt
    cluster``. After the oracle Top-K the kNN graph is written to
    :obj:`folder` and left to the SDT context alone, as in
    :meth:`SDTClusterer.cluster`; the baselines read it back at the end."""
    import torch

    from torch_geometric_sdt.io import load_features
    from torch_geometric_sdt.metrics import evaluate
    from torch_geometric_sdt.nn.knn import AUTO_NNDESCENT_OPTIONS, knn, resolve_backend
    from torch_geometric_sdt.nn.models import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path
    from torch_geometric_sdt.utils import topk_target
    from torch_geometric_sdt.utils.infomap import cluster_links

    model = SDTClusterer.load(default_model_path())
    model.precision = precision
    if model.k != k:
        raise ValueError(f'the shipped model has k = {model.k} (got --k {k})')
    y = torch.from_numpy(np.load(folder / 'y.npy'))
    base_rss = rss_bytes()
    x = load_features(folder / 'x.npy')  # memory-mapped, read-only
    num_nodes, dim = x.shape
    backend = resolve_backend('auto', num_nodes, torch.device('cpu'))
    row: dict[str, Any] = {
        'num_nodes': num_nodes,
        'dim': dim,
        'k': k,
        'knn_backend': backend,
        'knn_options': AUTO_NNDESCENT_OPTIONS if backend == 'pynndescent' else {},
        'features': 'memory-mapped .npy',
        'max_links': max_links,
        'precision': precision,
        'base_rss': base_rss,
        'stages': {},
    }
    stages = row['stages']

    def record(name: str, m: Measure) -> None:
        stages[name] = {
            'seconds': m.seconds,
            'peak': m.peak,
            'peak_rss_above_base': m.peak_rss - base_rss,
        }
        print(
            f'N={num_nodes:,} {name:>14}: {m.seconds:8.2f} s, peak RSS '
            f'{(m.peak_rss - base_rss) / MB:8.0f} MB above start',
            file=sys.stderr,
            flush=True,
        )

    with torch.no_grad():
        with Measure() as m:
            graph = knn(x, k, backend='auto')
        record('knn', m)
        # The oracle Top-K now, and the graph to a file for the baselines
        # later, so that the SDT stages run with it in the context alone.
        oracle = topk_target(graph.index, y)
        np.save(folder / 'knn_index.npy', graph.index.numpy())
        np.save(folder / 'knn_sim.npy', graph.sim.numpy())
        with Measure() as m:
            ctx = model.context(x, graph=graph)
        record('context', m)
        del graph
        with Measure() as m:
            topk = model.predict_topk(ctx)
        record('topk', m)
        with Measure() as m:
            jac = model.jaccard(ctx, topk)
        record('jaccard', m)
        with Measure() as m:
            h = model.node_states(ctx, topk, jac)
            band_pos, band_prob = model.score_band(ctx, topk, jac, h)
        record('sdt', m)
        del h
        with Measure() as m:
            edge_index, weight = model.final_links(
                ctx, topk, jac, band_pos, band_prob, max_links=max_links
            )
            row['num_band_pairs'] = int(band_pos.numel())
            # As cluster() does before Infomap (the kNN graph goes with ctx):
            del ctx, jac, band_pos, band_prob
            pred = cluster_links(edge_index, weight, num_nodes)
        record('links_infomap', m)
        row['num_links'] = int(edge_index.size(1))
        row['mean_topk'] = float(topk.float().mean())
        # Against the label-derived (oracle) Top-K, outside the timed stages:
        row['oracle_mean_topk'] = float(oracle.float().mean())
        row['topk_mae'] = float((topk - oracle).abs().float().mean())
        del oracle, edge_index, weight
        with Measure() as m:
            row['sdt_metrics'] = evaluate(pred, y)
        record('metrics', m)
        if num_nodes <= 20_000:  # the stages above are exactly cluster():
            same = torch.equal(model.cluster(x, max_links=max_links), pred)
            row['matches_cluster'] = same
            if not same:
                raise RuntimeError('the staged pipeline differs from cluster()')
        del topk, pred
    row['sdt_total_s'] = sum(s['seconds'] for s in stages.values())
    row['dominant_stage'] = max(stages, key=lambda s: stages[s]['seconds'])
    row['measured_peak'] = max(s['peak_rss_above_base'] for s in stages.values())
    row['max_rss'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return row


def run_baseline(folder: Path, method: str, threshold: float) -> dict[str, Any]:
    r"""Runs the baseline :obj:`method` at :obj:`threshold` (in this
    process) on the kNN graph :func:`run_one` wrote to :obj:`folder`, and
    returns its time, peak memory above the level before the graph was read,
    and quality."""
    import torch

    from torch_geometric_sdt.baselines import cluster_knn
    from torch_geometric_sdt.metrics import evaluate
    from torch_geometric_sdt.nn.knn import KNN

    y = torch.from_numpy(np.load(folder / 'y.npy'))
    base_rss = rss_bytes()
    graph = KNN(
        torch.from_numpy(np.load(folder / 'knn_index.npy')),
        torch.from_numpy(np.load(folder / 'knn_sim.npy')),
    )
    with torch.no_grad(), Measure() as m:
        pred = cluster_knn(graph, method, threshold=threshold)
    return {
        'method': method,
        'threshold': threshold,
        'seconds': m.seconds,
        'peak_rss_above_base': m.peak_rss - base_rss,
        'metrics': evaluate(pred, y),
    }


def growth(rows: list[dict[str, Any]], key: str) -> float | None:
    r"""Least-squares slope of log(seconds) on log(N)."""
    pts = [(r['num_nodes'], value(r, key)) for r in rows]
    pts = [(n, t) for n, t in pts if t > 0]
    if len(pts) < 2 or len({n for n, _ in pts}) < 2:
        return None
    n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(n, t, 1)[0])


def value(row: dict[str, Any], key: str) -> float:
    if key == 'total':
        return row['sdt_total_s']
    if key == 'infomap-knn':  # 0 (left out of the fit) when it failed
        return row['baseline'].get('seconds', 0.0)
    return row['stages'][key]['seconds']


def add_estimates(row: dict[str, Any]) -> None:
    r"""Sets the row's memory estimates (:func:`estimate_memory` at its size
    and backend, with the default and with the measured mean Top-K) and
    their ratios to the measured peak. They are computed when the report is
    written, so every row is compared with the memory model of that
    commit."""
    n, dim, k, backend = row['num_nodes'], row['dim'], row['k'], row['knn_backend']
    # Rows recorded before the features were read from a file held them:
    mapped = row.get('features') == 'memory-mapped .npy'
    measured = max(row['measured_peak'], 1)
    cap = {'max_links': row.get('max_links'), 'backend': backend, 'mapped': mapped}
    est = estimate_memory(n, dim, k, method='sdt', **cap)
    row['estimate'] = est
    row['estimate_over_measured'] = est['peak'] / measured
    # The same model with the Top-K the shipped model actually predicted:
    mean_topk = min(k, max(1.0, row['mean_topk']))
    at = estimate_memory(n, dim, k, mean_topk=mean_topk, **cap)
    row['estimate_at_measured_topk'] = at
    row['estimate_at_measured_topk_over_measured'] = at['peak'] / measured


def add_totals(row: dict[str, Any]) -> None:
    r"""Sets the row's ``end_to_end_seconds`` (the SDT stages from the
    memory-mapped features to the metrics; generating the features is not
    counted) and ``peak_rss_gb`` (the process's peak resident set in units
    of :math:`10^9` bytes, the interpreter and libraries included)."""
    row['end_to_end_seconds'] = row['sdt_total_s']
    row['peak_rss_gb'] = row['max_rss'] / 1e9


def summary(rows: list[dict[str, Any]], dim: int, k: int) -> dict[str, Any]:
    for row in rows:
        add_estimates(row)
        add_totals(row)
    keys = [*STAGES, 'total', 'infomap-knn']
    out: dict[str, Any] = {'growth_exponent': {s: growth(rows, s) for s in keys}}
    # The projection with the cap of the rows (all run with one: one file per
    # cap, result_name):
    max_links = rows[-1].get('max_links') if rows else None
    proj = estimate_memory(
        PROJECTION_NODES, dim, k, method='sdt', mapped=True, max_links=max_links
    )
    out['projection'] = {
        'num_nodes': PROJECTION_NODES,
        'estimate': proj,
        'assumed_mean_topk': max(1.0, k / 4),  # estimate_memory's default
    }
    if rows:  # the same at the Top-K the model predicted at the largest size
        mean_topk = min(k, max(1.0, rows[-1]['mean_topk']))
        out['projection']['mean_topk'] = mean_topk
        out['projection']['estimate_at_measured_topk'] = estimate_memory(
            PROJECTION_NODES,
            dim,
            k,
            method='sdt',
            mapped=True,
            mean_topk=mean_topk,
            max_links=max_links,
        )
    ratios = [r['estimate_over_measured'] for r in rows]
    out['estimate_over_measured'] = ratios
    return out


def markdown(
    rows: list[dict[str, Any]], summ: dict[str, Any], regime: str = 'lfw'
) -> list[str]:
    gb = 2**30
    data = (
        'Synthetic faces (256-d, seed 0, `synthetic_faces`: LFW-like identity sizes)'
        if regime == 'lfw'
        else f"Synthetic faces (256-d, seed 0, `regime_draw('{regime}')`: "
        f'{REGIMES[regime]})'
    )
    cap = rows[-1].get('max_links') if rows else None
    if cap is not None:
        data += f', at most {cap} links per node (`max_links={cap}`)'
    precision = rows[-1].get('precision', 'float32') if rows else 'float32'
    if precision != 'float32':
        data += f", the Top-K predictor in {precision} (`precision='{precision}'`)"
    lines = [
        data + ', k = 80, the shipped relational SDT '
        "model; kNN with `backend='auto'`. Per size, one subprocess runs the "
        'SDT stages and one each baseline. Times in '
        'seconds; memory: peak resident set above the level before the '
        'features were mapped, sampled every 5 ms. The features are a '
        '`.npy` file read memory-mapped; the kNN search reads them in chunks '
        'and hands their pages back, so they are not resident after it '
        '(rows recorded before that held them in memory).',
        '',
        'Each size was run at: '
        + '; '.join(
            f'{r["num_nodes"]:,}: {r.get("date", "-")} (commit '
            f'`{r.get("commit", "-")}`)'
            for r in rows
        )
        + ' (`--merge` keeps recorded sizes that are not run again).',
        '',
        '## End to end',
        '',
        '| N | end-to-end seconds | peak RSS (GB, the whole process) |',
        '|---|---|---|',
        *(
            f'| {r["num_nodes"]:,} | {r["end_to_end_seconds"]:.0f} | '
            f'{r["peak_rss_gb"]:.2f} |'
            for r in rows
        ),
        '',
        '## Time per stage (s)',
        '',
        '| N | kNN backend | ' + ' | '.join(STAGES) + ' | SDT total | '
        'dominant | infomap-knn (same graph) |',
        '|---|---|' + '---|' * (len(STAGES) + 3),
    ]
    for r in rows:
        cells = ' | '.join(f'{r["stages"][s]["seconds"]:.2f}' for s in STAGES)
        opts = ', '.join(f'{k}={v}' for k, v in r.get('knn_options', {}).items())
        backend = f'{r["knn_backend"]} ({opts})' if opts else r['knn_backend']
        lines.append(
            f'| {r["num_nodes"]:,} | {backend} | {cells} | '
            f'{r["sdt_total_s"]:.2f} | {r["dominant_stage"]} | '
            f'{baseline_seconds(r["baseline"])} |'
        )
    exps = summ['growth_exponent']
    lines += [
        '',
        'Growth exponent (least-squares slope of log time on log N over the '
        'sizes run; 1 = linear): '
        + ', '.join(
            f'{s} {e:.2f}' if e is not None else f'{s} -' for s, e in exps.items()
        )
        + '.',
        '',
        '## Peak memory per stage (MB above start)',
        '',
        '| N | ' + ' | '.join(STAGES) + ' | measured peak | estimate '
        '(`estimate_memory`) | estimate / measured | estimate at the measured '
        'Top-K | its ratio |',
        '|---|' + '---|' * (len(STAGES) + 5),
    ]
    for r in rows:
        cells = ' | '.join(
            f'{r["stages"][s]["peak_rss_above_base"] / MB:.0f}' for s in STAGES
        )
        lines.append(
            f'| {r["num_nodes"]:,} | {cells} | {r["measured_peak"] / MB:.0f} | '
            f'{r["estimate"]["peak"] / MB:.0f} | '
            f'{r["estimate_over_measured"]:.2f} | '
            f'{r["estimate_at_measured_topk"]["peak"] / MB:.0f} | '
            f'{r["estimate_at_measured_topk_over_measured"]:.2f} |'
        )
    proj = summ['projection']
    lines += [
        '',
        f'Projection by `estimate_memory` for {proj["num_nodes"]:,} faces '
        f'(D = 256, k = 80, SDT, auto backend): peak '
        f'{proj["estimate"]["peak"] / gb:.1f} GiB ('
        + ', '.join(
            f'{s} {b / gb:.1f}' for s, b in proj['estimate'].items() if s != 'peak'
        )
        + ' GiB).',
        *(
            [
                '',
                f'At the mean Top-K the model predicted at {rows[-1]["num_nodes"]:,} '
                f'({proj["mean_topk"]:.1f}; the estimate above assumes '
                f'{proj["assumed_mean_topk"]:g}), the same projection is a peak of '
                f'{proj["estimate_at_measured_topk"]["peak"] / gb:.1f} GiB ('
                + ', '.join(
                    f'{s} {b / gb:.1f}'
                    for s, b in proj['estimate_at_measured_topk'].items()
                    if s != 'peak'
                )
                + ' GiB).',
            ]
            if 'estimate_at_measured_topk' in proj
            else []
        ),
        '',
        '## Quality at each size',
        '',
        f'| N | method | {METRIC_COLUMNS} | mean Top-K | oracle mean Top-K '
        '| Top-K MAE | links |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        # Rows recorded before the oracle comparison have no such columns:
        oracle = (
            f'{r["oracle_mean_topk"]:.1f} | {r["topk_mae"]:.2f}'
            if 'topk_mae' in r
            else '- | -'
        )
        lines.append(
            f'| {r["num_nodes"]:,} | sdt | {fmt_metrics(r["sdt_metrics"])} | '
            f'{r["mean_topk"]:.1f} | {oracle} | {r["num_links"]:,} |'
        )
        for b in baselines(r):
            result = (
                f'{not_scored(b)} | | | | '
                if 'error' in b
                else fmt_metrics(b['metrics'])
            )
            lines.append(
                f'| {r["num_nodes"]:,} | {b["method"]} ({b["threshold"]}) | '
                f'{result} | - | - | - | - |'
            )
    lines += [
        '',
        '## Baselines on the same kNN graph (each in its own process)',
        '',
        '| N | method | seconds | peak memory (MB above the level before the '
        'graph was read) |',
        '|---|---|---|---|',
    ]
    for r in rows:
        for b in baselines(r):
            peak = b.get('peak_rss_above_base')
            lines.append(
                f'| {r["num_nodes"]:,} | {b["method"]} ({b["threshold"]}) | '
                f'{baseline_seconds(b)} | '
                f'{"-" if peak is None else f"{peak / MB:.0f}"} |'
            )
    return lines


def baselines(row: dict[str, Any]) -> list[dict[str, Any]]:
    r"""The row's baseline results (rows recorded before ``fc-es`` was
    measured have one)."""
    return [b for b in (row['baseline'], row.get('fc_es')) if b is not None]


def baseline_seconds(b: dict[str, Any]) -> str:
    return not_scored(b) if 'error' in b else f'{b["seconds"]:.2f}'


def not_scored(b: dict[str, Any]) -> str:
    r"""Why a baseline has no result: not run (``--no-baselines``) or
    failed."""
    return 'not run' if b['error'] == 'not run' else f'failed ({b["error"]})'


def run_size(num_nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    r"""Runs one size in subprocesses (one writes the faces, one runs the
    SDT stages, one per baseline) and returns its row; raises
    :class:`RuntimeError` when it cannot fit or the SDT stages fail. A
    baseline that fails (a process killed for memory, say) is recorded in
    the row with its exit status instead of its result."""
    try:  # refuse a size that cannot fit before spending hours on it
        check_memory(
            estimate_memory(
                num_nodes, args.dim, args.k, mapped=True, max_links=args.max_links
            )
        )
    except MemoryError as e:
        raise RuntimeError(f'skipped: {e}') from e
    env = child_env()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        row_path = Path(tmp) / 'row.json'
        # The faces are written by one process and clustered by another, so
        # that the second one's memory holds the pipeline alone.
        base = [sys.executable, '-m', 'benchmarks.scale', '--folder', tmp]
        gen = [*base, '--generate', str(num_nodes), '--dim', str(args.dim)]
        gen += ['--regime', args.regime]
        if subprocess.run(gen, cwd=ROOT, env=env).returncode != 0:
            raise RuntimeError('the faces could not be generated')
        cmd = [*base, '--one', '--k', str(args.k), '--row-out', str(row_path)]
        if args.max_links is not None:
            cmd += ['--max-links', str(args.max_links)]
        cmd += ['--precision', args.precision]
        res = subprocess.run(cmd, cwd=ROOT, env=env)
        if res.returncode != 0 or not row_path.exists():
            raise RuntimeError(f'exit status {res.returncode}')
        row = json.loads(row_path.read_text())
        row['regime'] = args.regime
        for key, method, thr in (
            ('baseline', 'infomap-knn', args.threshold),
            ('fc_es', 'fc-es', args.fces_threshold),
        ):
            if args.no_baselines:
                row[key] = {'method': method, 'threshold': thr, 'error': 'not run'}
                continue
            out = Path(tmp) / f'{key}.json'
            cmd = [*base, '--baseline', method, '--threshold', str(thr)]
            res = subprocess.run([*cmd, '--row-out', str(out)], cwd=ROOT, env=env)
            if res.returncode == 0 and out.exists():
                row[key] = json.loads(out.read_text())
            else:
                err = f'exit status {res.returncode}'
                row[key] = {'method': method, 'threshold': thr, 'error': err}
                print(f'N={num_nodes:,} {method} failed: {err}', file=sys.stderr)
        return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument(
        '--regime',
        default='lfw',
        choices=('lfw', 'msceleb'),
        help="identity sizes: 'lfw' (synthetic_faces' LFW-like long tail; "
        "results in scale.*) or 'msceleb' (50-120 faces per identity; "
        'results in scale_msceleb.*)',
    )
    parser.add_argument(
        '--max-links',
        type=int,
        default=None,
        metavar='L',
        help='the SDT keeps at most L links per node (max_links; results in '
        'scale[_REGIME]_links<L>.*)',
    )
    parser.add_argument(
        '--precision',
        default='float32',
        choices=('float32', 'bfloat16'),
        help="the Top-K predictor's products (SDTClusterer.precision; results "
        'in scale[_REGIME][_links<L>]_bfloat16.* for bfloat16)',
    )
    parser.add_argument(
        '--threshold',
        type=float,
        default=0.7,
        help='infomap-knn cosine threshold (0.7: chosen on a separate draw)',
    )
    parser.add_argument(
        '--fces-threshold',
        type=float,
        default=0.3,
        help='fc-es edge-probability threshold (0.3: chosen on a separate draw)',
    )
    parser.add_argument(
        '--no-baselines',
        action='store_true',
        help="run the SDT stages alone (the baselines' rows say 'not run')",
    )
    parser.add_argument('--quick', action='store_true', help='2K and 10K')
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--merge',
        action='store_true',
        help='keep the recorded rows of sizes not run now',
    )
    parser.add_argument(
        '--report',
        action='store_true',
        help='run nothing: rewrite the results from the recorded rows, with '
        "the memory estimates of this commit's model",
    )
    parser.add_argument(
        '--tmp',
        default=None,
        help='folder for the generated faces of a size (default: the '
        "system's temporary folder; 5.3 GB at 5.21M faces)",
    )
    parser.add_argument('--generate', type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--one', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--baseline', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--folder', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--row-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.generate is not None:  # the child process that writes the faces
        generate(args.generate, args.dim, Path(args.folder), args.regime)
        return
    if args.one:  # the child process that clusters them
        row = run_one(Path(args.folder), args.k, args.max_links, args.precision)
        Path(args.row_out).write_text(json.dumps(row, default=str))
        return
    if args.baseline is not None:  # a child process that runs a baseline
        row = run_baseline(Path(args.folder), args.baseline, args.threshold)
        Path(args.row_out).write_text(json.dumps(row))
        return

    sizes = [2_000, 10_000] if args.quick else sorted(args.sizes)
    out = results_dir(args.quick, args.out)
    if args.max_links is not None and args.max_links < 1:
        parser.error('--max-links must be at least 1')
    name = result_name(args.regime, args.max_links, args.precision)
    rows: list[dict[str, Any]] = []
    if args.report:
        sizes, args.merge = [], True
        if not (out / f'{name}.json').exists():
            parser.error(f'--report needs recorded rows in {out / name}.json')
    if args.merge and (out / f'{name}.json').exists():
        # Keep the recorded rows of the sizes not run now (each row carries
        # its own date and commit).
        old = json.loads((out / f'{name}.json').read_text())
        for row in old.get('rows', []):
            if row['num_nodes'] not in sizes:
                row.setdefault('date', old.get('date'))
                row.setdefault('commit', old.get('commit'))
                rows.append(row)
    failures: list[dict[str, Any]] = []
    if args.report:
        write_report(rows, failures, args, out, name)
        return
    for n in sizes:
        try:
            row = run_size(n, args)
            prov = provenance()
            rows.append({**row, 'date': prov['date'], 'commit': prov['commit']})
            rows.sort(key=lambda r: r['num_nodes'])
        except RuntimeError as e:
            failures.append({'num_nodes': n, 'error': str(e)})
            print(f'N={n:,} failed: {e}', file=sys.stderr)
        # Rewritten after every size: a crash later keeps what is done.
        write_report(rows, failures, args, out, name)
    if failures:
        sys.exit(1)


def result_name(
    regime: str, max_links: int | None = None, precision: str = 'float32'
) -> str:
    r"""The results file stem of an identity-size regime, links cap and
    Top-K precision."""
    name = NAME if regime == 'lfw' else f'{NAME}_{regime}'
    name = name if max_links is None else f'{name}_links{max_links}'
    return name if precision == 'float32' else f'{name}_{precision}'


def write_report(
    rows: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    args: argparse.Namespace,
    out: Path,
    name: str,
) -> None:
    summ = summary(rows, args.dim, args.k)
    body = markdown(rows, summ, args.regime)
    if failures:
        body += [
            '',
            'Sizes that failed: '
            + '; '.join(f'{f["num_nodes"]:,} ({f["error"]})' for f in failures),
        ]
    title = 'SDT pipeline at scale: time and memory per stage'
    if args.regime != 'lfw':
        title += f' ({args.regime} identity sizes'
        title += (
            ')' if args.max_links is None else f', {args.max_links} links per node)'
        )
    elif args.max_links is not None:
        title += f' ({args.max_links} links per node)'
    if args.precision != 'float32':
        title += f', Top-K predictor in {args.precision}'
    write_results(
        name,
        title,
        {'rows': rows, 'failures': failures, **summ},
        body,
        out=out,
    )


if __name__ == '__main__':
    main()
