r"""Time and peak memory of the kNN stage alone, at sizes where the whole
pipeline of ``benchmarks/scale.py`` would take hours, against the ``knn``
stage of :func:`torch_geometric_sdt.memory.estimate_memory`.

The kNN search is the stage the memory model puts highest at the 5.21M
faces of the MS-Celeb-1M test set (``pynndescent``: the normalised copy of
the features and about 34 bytes per candidate), so its measured peak at
that size says whether the full run fits before the full run is made.

Data and reading as in ``benchmarks/scale.py``: synthetic faces (256-d,
seed 0) written to a ``.npy`` file by one process and read memory-mapped by
another, which runs :func:`~torch_geometric_sdt.nn.knn.knn` with
:math:`k = 80` and ``backend='auto'`` (pynndescent above 200K points) and
samples its resident memory every 5 ms. The peak is counted above the level
before the features were mapped; the features' pages are handed back as the
search's preparation reads them, so the peak is the search's own. Each size
writes a row to ``benchmarks/results/knn_memory.{json,md}``; rows of sizes
not run again are kept.

    python -m benchmarks.knn_memory --sizes 5210000
    python -m benchmarks.knn_memory --sizes 20000 --out /tmp/km   # a check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Measure,
    child_env,
    provenance,
    results_dir,
    rss_bytes,
    write_results,
)
from torch_geometric_sdt.memory import estimate_memory

NAME = 'knn_memory'
MB = 2**20


def run_one(folder: Path, k: int) -> dict[str, Any]:
    r"""The kNN stage on the faces in :obj:`folder`, in this process."""
    import torch

    from torch_geometric_sdt.io import load_features
    from torch_geometric_sdt.nn.knn import AUTO_NNDESCENT_OPTIONS, knn, resolve_backend

    base = rss_bytes()
    x = load_features(folder / 'x.npy')
    num_nodes, dim = x.shape
    backend = resolve_backend('auto', num_nodes, torch.device('cpu'))
    with Measure() as m:
        graph = knn(x, k, backend='auto')
    return {
        'num_nodes': num_nodes,
        'dim': dim,
        'k': k,
        'knn_backend': backend,
        'knn_options': AUTO_NNDESCENT_OPTIONS if backend == 'pynndescent' else {},
        'seconds': m.seconds,
        'peak_rss_above_base': m.peak_rss - base,
        'graph_bytes': graph.index.nbytes + graph.sim.nbytes,
    }


def add_estimate(row: dict[str, Any]) -> None:
    r"""The ``knn`` stage of the memory model for the row's size and backend
    (mapped features), and its ratio to the measured peak."""
    est = estimate_memory(
        row['num_nodes'], row['dim'], row['k'], backend=row['knn_backend'], mapped=True
    )
    row['estimate_knn'] = est['knn']
    row['estimate_over_measured'] = est['knn'] / max(1, row['peak_rss_above_base'])


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        'Synthetic faces (256-d, seed 0) read memory-mapped from a `.npy` '
        "file, k = 80, `backend='auto'`; one subprocess per size. Memory: "
        'peak resident set above the level before the features were mapped, '
        'sampled every 5 ms.',
        '',
        '| N | backend | seconds | peak (MiB) | kNN lists (MiB) | estimate '
        '(`estimate_memory`, knn stage, MiB) | estimate / measured | run at |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f'| {r["num_nodes"]:,} | {r["knn_backend"]} | {r["seconds"]:.1f} | '
            f'{r["peak_rss_above_base"] / MB:,.0f} | {r["graph_bytes"] / MB:,.0f} | '
            f'{r["estimate_knn"] / MB:,.0f} | {r["estimate_over_measured"]:.2f} | '
            f'{r["date"]} (`{r["commit"]}`) |'
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[5_210_000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--tmp', default=None, help='folder for the generated faces (5.3 GB at 5.21M)'
    )
    parser.add_argument('--one', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--row-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # the child process that searches
        row = run_one(Path(args.one), args.k)
        Path(args.row_out).write_text(json.dumps(row))
        return

    out = results_dir(False, args.out)
    rows: list[dict[str, Any]] = []
    if (out / f'{NAME}.json').exists():
        old = json.loads((out / f'{NAME}.json').read_text())
        rows = [r for r in old['rows'] if r['num_nodes'] not in args.sizes]
    env = child_env()
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            gen = [sys.executable, '-m', 'benchmarks.scale', '--folder', tmp]
            gen += ['--generate', str(n), '--dim', str(args.dim)]
            subprocess.run(gen, cwd=ROOT, env=env, check=True)
            row_path = Path(tmp) / 'row.json'
            cmd = [sys.executable, '-m', 'benchmarks.knn_memory', '--one', tmp]
            cmd += ['--k', str(args.k), '--row-out', str(row_path)]
            subprocess.run(cmd, cwd=ROOT, env=env, check=True)
            row = json.loads(row_path.read_text())
        prov = provenance()
        rows.append({**row, 'date': prov['date'], 'commit': prov['commit']})
        rows.sort(key=lambda r: r['num_nodes'])
        for r in rows:
            add_estimate(r)
        write_results(
            NAME,
            'The kNN stage alone: time and peak memory against the memory model',
            {'rows': rows},
            markdown(rows),
            out=out,
        )


if __name__ == '__main__':
    main()
