r"""Times every :func:`torch_geometric_sdt.knn` backend and measures its
recall@k against the exact result.

Data: :func:`torch_geometric_sdt.datasets.synthetic_faces` (face-like,
L2-normalised), 256 dimensions, :math:`k = 80` (self included), cosine.
Sizes 10K and 100K (``--quick``: 2K and 5K).

The target is that the exact torch backend stays within 1.5x of faiss's exact
flat index (:obj:`IndexFlatIP`) measured in the same run: the two are timed
alternately, ``--repeat`` times each, and the ratio of their best times is
reported (best-of because the machine may be shared). pynndescent's numba
compilation is timed separately (a warm-up on a small set) from its query
time.

Writes benchmarks/results/knn.{md,json} (``--quick``: a temporary folder,
see :func:`benchmarks.common.results_dir`).

``--sweep N`` (``--render`` redraws the table of a recorded sweep) instead
measures recall@10 and recall@k against time over a grid of the
approximate backends' parameters at one size (:obj:`SWEEP`).
Recall is measured on ``--queries`` random rows against their exact
neighbours, so the sweep runs at 1M points without an exact 1M graph. With
``--e2e`` every graph is also clustered (the shipped SDT and ``infomap-knn``)
and scored against the identities: the far end of an 80-NN list is nearly
equidistant noise, so recall@k alone does not say what a setting costs the
clustering. It writes benchmarks/results/knn_sweep_<N>.{md,json}
(``--e2e``: ``knn_sweep_<N>_e2e``).

    python -m benchmarks.knn
    python -m benchmarks.knn --quick
    python -m benchmarks.knn --sweep 100000
    python -m benchmarks.knn --sweep 100000 --e2e
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt.baselines import cluster_knn
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn import knn
from torch_geometric_sdt.nn.knn import AUTO_EXACT_MAX_NODES, exact_knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.pretrained import default_model_path

TARGET_RATIO = 1.5

#: The parameter grid of ``--sweep``: (backend, options). The first entry of
#: each backend is its default.
SWEEP: list[tuple[str, dict[str, Any]]] = [
    ('faiss-hnsw', {}),
    ('faiss-hnsw', {'M': 16, 'ef_construction': 40, 'ef_search': 128}),
    ('faiss-hnsw', {'M': 16, 'ef_construction': 80, 'ef_search': 256}),
    ('faiss-hnsw', {'M': 32, 'ef_construction': 40, 'ef_search': 96}),
    ('faiss-ivf', {}),
    ('faiss-ivf', {'nprobe': 64}),
    ('faiss-ivf', {'nprobe': 128}),
    ('faiss-ivf', {'nprobe': 256}),
    ('pynndescent', {}),
    ('pynndescent', {'n_iters': 6, 'max_candidates': 40}),
    ('pynndescent', {'n_iters': 4, 'max_candidates': 30}),
    ('pynndescent', {'n_iters': 3, 'max_candidates': 20}),
    ('pynndescent', {'delta': 0.01}),
    ('exact', {}),
]

#: Ranks at which ``--sweep`` measures recall besides :math:`k`.
RECALL_RANKS = (10,)


def recall_at_k(index: Tensor, ref: Tensor, chunk: int = 4096) -> float:
    r"""Share of the exact neighbour ids that :obj:`index` also lists (give
    both cut to the same rank :math:`r` for recall@r)."""
    hits = 0
    for r0 in range(0, ref.size(0), chunk):
        a, b = index[r0 : r0 + chunk], ref[r0 : r0 + chunk]
        hits += int((a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).sum())
    return hits / ref.numel()


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_size(
    num_nodes: int,
    dim: int,
    k: int,
    repeat: int,
    backends: list[str],
    pynndescent_max: int,
) -> dict[str, Any]:
    x, _ = synthetic_faces(num_nodes, dim, seed=0)
    x = x.to(torch.float32).contiguous()
    row: dict[str, Any] = {'num_nodes': num_nodes, 'dim': dim, 'k': k}

    # Exact torch and faiss flat, alternating.
    times: dict[str, list[float]] = {'exact': [], 'faiss': []}
    ref = flat = None
    for _ in range(repeat):
        t, ref = timed(lambda: knn(x, k, backend='exact'))
        times['exact'].append(t)
        t, flat = timed(lambda: knn(x, k, backend='faiss'))
        times['faiss'].append(t)
    assert ref is not None and flat is not None
    row['exact_s'] = min(times['exact'])
    row['faiss_s'] = min(times['faiss'])
    row['exact_all_s'] = times['exact']
    row['faiss_all_s'] = times['faiss']
    row['ratio_exact_over_faiss'] = row['exact_s'] / row['faiss_s']
    row['recall_faiss'] = recall_at_k(flat.index, ref.index)
    row['max_abs_sim_diff_faiss'] = float((flat.sim - ref.sim).abs().max())

    for backend in backends:
        if backend == 'pynndescent':
            if num_nodes > pynndescent_max:
                row['pynndescent_skipped'] = (
                    f'N > --pynndescent-max ({pynndescent_max})'
                )
                continue
            # Compile numba kernels on a small set first.
            small, _ = synthetic_faces(2000, dim, seed=1)
            t, _ = timed(lambda s=small: knn(s, k, backend='pynndescent'))
            row['pynndescent_warmup_s'] = t
        t, out = timed(lambda backend=backend: knn(x, k, backend=backend))
        row[f'{backend}_s'] = t
        row[f'recall_{backend}'] = recall_at_k(out.index, ref.index)
    return row


def sweep(
    num_nodes: int,
    dim: int,
    k: int,
    queries: int,
    only: list[str] | None,
    e2e: bool = False,
    threshold: float = 0.7,
) -> dict[str, Any]:
    r"""Recall@10 and recall@k (on :obj:`queries` random rows) and time of
    every :obj:`SWEEP` entry at one size; with :obj:`e2e`, also the
    end-to-end quality of the shipped SDT and of ``infomap-knn`` (cosine
    :obj:`threshold`) clustered on each graph. The exact entry runs only up to
    :obj:`~torch_geometric_sdt.nn.knn.AUTO_EXACT_MAX_NODES` points unless
    :obj:`only` names it."""
    model = SDTClusterer.load(default_model_path()) if e2e else None
    if model is not None and model.k != k:
        raise ValueError(f"--e2e needs the shipped model's k = {model.k} (got {k})")
    x, y = synthetic_faces(num_nodes, dim, seed=0)
    x = x.to(torch.float32).contiguous()
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(num_nodes, generator=gen)[: min(queries, num_nodes)]
    t, (ref, _) = timed(lambda: exact_knn(x, k, 'cosine', query=rows))
    out: dict[str, Any] = {
        'num_nodes': num_nodes,
        'dim': dim,
        'k': k,
        'queries': int(rows.numel()),
        'reference_s': t,
        'e2e': e2e,
        'threshold': threshold,
        'runs': [],
    }
    if any(b == 'pynndescent' for b, _ in SWEEP):
        small, _ = synthetic_faces(2000, dim, seed=1)
        out['pynndescent_warmup_s'] = timed(
            lambda: knn(small, k, backend='pynndescent')
        )[0]
    for backend, options in SWEEP:
        name = label(backend, options)
        if only and backend not in only and name not in only:
            continue
        if backend == 'exact' and num_nodes > AUTO_EXACT_MAX_NODES and not only:
            continue
        seconds, graph = timed(lambda b=backend, o=options: knn(x, k, backend=b, **o))
        run: dict[str, Any] = {
            'backend': backend,
            'options': options,
            'seconds': seconds,
            'recall': recall_at_k(graph.index[rows], ref),
        }
        for r in RECALL_RANKS:
            run[f'recall@{r}'] = recall_at_k(graph.index[rows, :r], ref[:, :r])
        if model is not None:
            run.update(end_to_end(model, x, y, graph, threshold))
        out['runs'].append(run)
        print(json.dumps(run), flush=True)
        del graph
    return out


def end_to_end(
    model: SDTClusterer, x: Tensor, y: Tensor, graph: Any, threshold: float
) -> dict:
    r"""Pairwise and BCubed F of the shipped SDT and of ``infomap-knn`` at the
    cosine :obj:`threshold` on one kNN :obj:`graph`, and the SDT's
    seconds."""
    seconds, pred = timed(lambda: model.cluster(x, graph=graph))
    sdt = evaluate(pred, y)
    base = evaluate(cluster_knn(graph, threshold=threshold), y)
    return {
        'sdt_seconds': seconds,
        'sdt_pairwise_f': sdt['pairwise_fscore'],
        'sdt_bcubed_f': sdt['bcubed_fscore'],
        'infomap_knn_pairwise_f': base['pairwise_fscore'],
        'infomap_knn_bcubed_f': base['bcubed_fscore'],
    }


def label(backend: str, options: dict[str, Any]) -> str:
    r"""``'faiss-ivf nprobe=64'``: a :obj:`SWEEP` entry as ``--only`` names
    it."""
    return ' '.join([backend, ','.join(f'{k}={v}' for k, v in options.items())]).strip()


def write_sweep(res: dict[str, Any], out: Any) -> None:
    runs = res['runs']
    base = next(
        (r for r in runs if r['backend'] == 'pynndescent' and not r['options']),
        runs[0] if runs else None,
    )
    base_label = '-'
    if base:
        base_label = label(base['backend'], base['options'])
        base_label += '' if base['options'] else ' default'
    e2e = res.get('e2e', False)
    ranks = [r for r in RECALL_RANKS if any(f'recall@{r}' in run for run in runs)]
    lines = [
        f'Data: synthetic_faces({res["num_nodes"]}, {res["dim"]}, seed=0), '
        f'k={res["k"]} (self included), cosine. Recall on '
        f'{res["queries"]} random rows against their exact neighbours '
        f'(reference: {res["reference_s"]:.1f} s). One run per setting, all in '
        'one process; time is index build plus search of every row, and the '
        f'ratio is against `{base_label}` in the same run. "default" marks a '
        "backend's default options.",
        '',
    ]
    if e2e:
        lines += [
            'End to end: the shipped SDT (no tuning) and `infomap-knn` at '
            f'cosine threshold {res.get("threshold", 0.7)} (as in '
            '`benchmarks/scale.py`), each clustering the graph of that row; '
            'pairwise F / BCubed F against the identities.',
            '',
        ]
    head = ['backend', 'options', 'time (s)', f'time / {base_label}']
    head += [f'recall@{r}' for r in ranks] + ['recall@k']
    if e2e:
        head += ['SDT pairwise F', 'SDT BCubed F', 'infomap-knn pairwise F']
        head += ['infomap-knn BCubed F']
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in runs:
        opts = ', '.join(f'{k}={v}' for k, v in r['options'].items()) or 'default'
        ratio = r['seconds'] / base['seconds'] if base else float('nan')
        cells = [r['backend'], opts, f'{r["seconds"]:.1f}', f'{ratio:.2f}']
        cells += [f'{r.get(f"recall@{k}", float("nan")):.4f}' for k in ranks]
        cells.append(f'{r["recall"]:.4f}')
        if e2e:
            cells += [
                f'{r[key]:.4f}'
                for key in (
                    'sdt_pairwise_f',
                    'sdt_bcubed_f',
                    'infomap_knn_pairwise_f',
                    'infomap_knn_bcubed_f',
                )
            ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    if 'pynndescent_warmup_s' in res:
        lines += [
            '',
            f'pynndescent numba warm-up (2K points, not included): '
            f'{res["pynndescent_warmup_s"]:.1f} s.',
        ]
    suffix = '_e2e' if e2e else ''
    write_results(
        f'knn_sweep_{res["num_nodes"]}{suffix}',
        f'kNN parameter sweep at N = {res["num_nodes"]}: recall, time and '
        'end-to-end quality',
        res,
        lines,
        out=out,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='2K and 5K points')
    parser.add_argument('--sizes', type=int, nargs='*', default=None)
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument('--repeat', type=int, default=None)
    parser.add_argument(
        '--backends',
        nargs='*',
        default=['faiss-hnsw', 'faiss-ivf', 'pynndescent'],
        help='approximate backends to time besides exact and faiss',
    )
    parser.add_argument('--pynndescent-max', type=int, default=10**9)
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--sweep', type=int, default=None, metavar='N', help='parameter sweep at N'
    )
    parser.add_argument('--queries', type=int, default=2000)
    parser.add_argument(
        '--e2e',
        action='store_true',
        help='with --sweep: also cluster every graph (shipped SDT, infomap-knn)',
    )
    parser.add_argument(
        '--threshold',
        type=float,
        default=0.7,
        help='infomap-knn cosine threshold for --e2e (0.7, as benchmarks/scale.py)',
    )
    parser.add_argument(
        '--render',
        default=None,
        metavar='JSON',
        help='rewrite the markdown of a recorded sweep from its JSON',
    )
    parser.add_argument(
        '--only',
        nargs='*',
        default=None,
        help="sweep only these backends or entries ('faiss-ivf nprobe=64')",
    )
    args = parser.parse_args()
    if args.render is not None:
        path = Path(args.render)
        write_sweep(json.loads(path.read_text()), path.parent)
        return
    if args.sweep is not None:
        res = sweep(
            args.sweep,
            args.dim,
            args.k,
            args.queries,
            args.only,
            args.e2e,
            args.threshold,
        )
        write_sweep(res, results_dir(args.quick, args.out))
        return
    sizes = args.sizes or ([2000, 5000] if args.quick else [10_000, 100_000])
    repeat = args.repeat or (2 if args.quick else 3)

    import faiss

    meta = {
        'faiss': faiss.__version__,
        'faiss_threads': faiss.omp_get_max_threads(),
        'load_average_start': os.getloadavg(),
        'data': 'synthetic_faces(N, dim, seed=0), L2-normalised',
        'metric': 'cosine',
    }
    rows = []
    for n in sizes:
        rows.append(
            run_size(n, args.dim, args.k, repeat, args.backends, args.pynndescent_max)
        )
        print(json.dumps(rows[-1]), flush=True)
    meta['load_average_end'] = os.getloadavg()

    lines = [
        f'faiss {meta["faiss"]} ({meta["faiss_threads"]} threads).  ',
        f'Load average at start / end: {meta["load_average_start"]} / '
        f'{meta["load_average_end"]} (the machine was shared)  ',
        f'Data: {meta["data"]}, D={args.dim}, k={args.k} (self included), cosine.',
        '',
        f'Exact torch vs faiss `IndexFlatIP`: timed alternately {repeat} times '
        'each; best times and their ratio (target <= '
        f'{TARGET_RATIO}x).',
        '',
        '| N | exact torch (s) | faiss flat (s) | ratio | target met | '
        'recall faiss flat |',
        '|---|---|---|---|---|---|',
    ]
    for r in rows:
        met = (
            'yes'
            if r['ratio_exact_over_faiss'] <= TARGET_RATIO
            else (f'NO, {r["ratio_exact_over_faiss"] / TARGET_RATIO:.2f}x over')
        )
        lines.append(
            f'| {r["num_nodes"]} | {r["exact_s"]:.2f} | {r["faiss_s"]:.2f} | '
            f'{r["ratio_exact_over_faiss"]:.2f} | {met} | '
            f'{r["recall_faiss"]:.4f} |'
        )
    lines += [
        '',
        'All runs (s): '
        + '; '.join(
            f'N={r["num_nodes"]}: exact {[round(t, 2) for t in r["exact_all_s"]]}, '
            f'faiss {[round(t, 2) for t in r["faiss_all_s"]]}'
            for r in rows
        ),
        '',
        'Approximate backends (one run each; recall@k against the exact backend):',
        '',
        '| N | backend | time (s) | recall@k | note |',
        '|---|---|---|---|---|',
    ]
    for r in rows:
        for b in args.backends:
            if f'{b}_s' in r:
                note = ''
                if b == 'pynndescent':
                    note = (
                        f'numba warm-up {r["pynndescent_warmup_s"]:.1f} s not included'
                    )
                lines.append(
                    f'| {r["num_nodes"]} | {b} | {r[f"{b}_s"]:.2f} | '
                    f'{r[f"recall_{b}"]:.4f} | {note} |'
                )
            elif f'{b}_skipped' in r:
                lines.append(
                    f'| {r["num_nodes"]} | {b} | - | - | skipped: {r[f"{b}_skipped"]} |'
                )
    write_results(
        'knn',
        'kNN backends: time and recall@k',
        {'meta': meta, 'rows': rows},
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
