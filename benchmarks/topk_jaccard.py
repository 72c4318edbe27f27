r"""Times :func:`torch_geometric_sdt.utils.topk_jaccard` on synthetic faces.

For N = 100K and 1M synthetic face embeddings (256-d) and a k = 80 kNN graph,
scores all N * k edges with a Top-K of 80 for every node and with a per-node
Top-K averaging 30, and reports wall time and peak extra memory (resident set
growth, sampled every 5 ms). The baseline is a straightforward vectorised
torch implementation (gather the Top-K lists of both ends of every edge and
compare them by broadcasting, [B, k, K, K] per chunk of B rows), run in the
same process on the first ``--baseline-rows`` rows and extrapolated linearly
to N (its cost is linear in the number of rows); on those rows both outputs
are compared. The numba compile time of a cold cache is measured separately
in a subprocess with an empty ``NUMBA_CACHE_DIR``. Target: N = 1M with
k = Top-K = 80 in under 60 s with under 2 GB of extra memory.

The kNN graph is built once with :func:`torch_geometric_sdt.nn.knn.knn` and
cached in ``--cache-dir`` (outside the repository); its build time is not
part of the measurement.

Writes benchmarks/results/topk_jaccard.{md,json} (``--quick``: a temporary
folder, see :func:`benchmarks.common.results_dir`).

    python -m benchmarks.topk_jaccard
    python -m benchmarks.topk_jaccard --quick
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor

from benchmarks.common import ROOT, Measure, results_dir, write_results
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.utils import topk_jaccard

TARGET_SECONDS = 60.0
TARGET_BYTES = 2 * 1024**3
MB = 1024**2


def measure(fn: Callable[[], Tensor]) -> tuple[Tensor, float, int]:
    r"""Output, seconds and peak extra resident memory of :obj:`fn`."""
    try:  # return freed heap pages first, so earlier work does not hide growth
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass
    with Measure() as m:
        out = fn()
    return out, m.seconds, m.peak


def torch_baseline(
    index: Tensor,
    sim: Tensor,
    topk: Tensor,
    num_rows: int,
    chunk_size: int = 32,
) -> Tensor:
    r"""The straightforward vectorised torch version of the default options
    (sigmoid, sqeuclidean, normalised over Top-K, weighted)."""
    k = index.size(1)
    max_k = int(topk.max())
    in_top = torch.arange(k)[None, :] < topk[:, None]
    prob = torch.sigmoid(-(7.5 * (2 - 2 * sim) - 5))
    prob = prob / (prob * in_top).sum(dim=1, keepdim=True)
    top_idx = index[:, :max_k]
    top_p = (prob * in_top)[:, :max_k]
    top_in = in_top[:, :max_k]
    out = torch.empty(num_rows, k)
    for lo in range(0, num_rows, chunk_size):
        hi = min(num_rows, lo + chunk_size)
        nbr = index[lo:hi]  # [B, k]
        a_i, p_i, m_i = top_idx[lo:hi], top_p[lo:hi], top_in[lo:hi]  # [B, K]
        a_j, p_j, m_j = top_idx[nbr], top_p[nbr], top_in[nbr]  # [B, k, K]
        eq = a_i[:, None, :, None] == a_j[:, :, None, :]  # [B, k, K, K]
        eq &= m_i[:, None, :, None] & m_j[:, :, None, :]
        eq = eq.float()
        out[lo:hi] = 0.5 * (
            torch.einsum('bkxy,bx->bk', eq, p_i) + torch.einsum('bkxy,bky->bk', eq, p_j)
        )
    return out


def cold_compile_seconds() -> float:
    r"""First call on a tiny graph in a fresh process with an empty cache."""
    code = (
        'import time, torch\n'
        'from torch_geometric_sdt.utils import topk_jaccard\n'
        'i = torch.tensor([[0, 1], [1, 0]]); s = torch.tensor([[1.0, .5], [1.0, .5]])\n'
        't = time.perf_counter(); topk_jaccard(i, s, 1)\n'
        'print(time.perf_counter() - t)\n'
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        res = subprocess.run(
            [sys.executable, '-c', code], env=env, capture_output=True, text=True
        )
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return float(res.stdout.strip().splitlines()[-1])


def load_graph(
    num_nodes: int,
    args: argparse.Namespace,
) -> tuple[KNN, Tensor, float | None]:
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    tag = f'synth{num_nodes}_d{args.dim}_s{args.seed}_k{args.k}_{args.knn_backend}'
    if args.knn_backend == 'faiss-ivf':
        tag += f'_p{args.nprobe}'
    files = [cache / f'{tag}_{name}.npy' for name in ('index', 'sim', 'y')]
    if all(f.exists() for f in files):
        index, sim, y = (torch.from_numpy(np.load(f)) for f in files)
        return KNN(index, sim), y, None
    x, y = synthetic_faces(num_nodes, args.dim, seed=args.seed)
    kwargs: dict[str, Any] = {}
    if args.knn_backend == 'faiss-ivf':
        kwargs['nprobe'] = args.nprobe
    t = time.perf_counter()
    graph = knn(x, args.k, backend=args.knn_backend, progress=True, **kwargs)
    seconds = time.perf_counter() - t
    for f, value in zip(files, (graph.index, graph.sim, y)):
        np.save(f, value.numpy())
    return graph, y, seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        'numba': numba.__version__,
        'numba_threads': numba.get_num_threads(),
        'load_average_at_start': os.getloadavg(),
        'k': args.k,
        'dim': args.dim,
        'knn_backend': args.knn_backend,
        'nprobe': args.nprobe,
        'cold_compile_s': cold_compile_seconds(),
        'runs': [],
    }
    tiny = torch.tensor([[0, 1], [1, 0]]), torch.tensor([[1.0, 0.5], [1.0, 0.5]])
    t = time.perf_counter()
    topk_jaccard(*tiny, 1)
    result['cached_first_call_s'] = time.perf_counter() - t

    for num_nodes in args.sizes:
        graph, _, knn_seconds = load_graph(num_nodes, args)
        gen = torch.Generator().manual_seed(args.seed)
        per_node = torch.randint(1, 60, (num_nodes,), generator=gen)  # mean 30
        for name, topk in [(f'{args.k}', args.k), ('per-node, mean 30', per_node)]:
            topk_t = (
                torch.full((num_nodes,), topk, dtype=torch.long)
                if isinstance(topk, int)
                else topk
            )
            out, seconds, peak = measure(
                lambda graph=graph, topk=topk: topk_jaccard(graph, topk=topk)
            )
            rows = min(args.baseline_rows, num_nodes)
            ref, base_seconds, base_peak = measure(
                lambda graph=graph, topk_t=topk_t, rows=rows: torch_baseline(
                    graph.index, graph.sim, topk_t, rows
                )
            )
            base_full = base_seconds * num_nodes / rows
            diff = float((out[:rows] - ref).abs().max())
            entry = {
                'num_nodes': num_nodes,
                'topk': name,
                'mean_topk': float(topk_t.float().mean()),
                'seconds': seconds,
                'peak_extra_mb': peak / MB,
                'baseline_rows': rows,
                'baseline_seconds_measured': base_seconds,
                'baseline_seconds_extrapolated': base_full,
                'baseline_peak_extra_mb': base_peak / MB,
                'speedup': base_full / seconds,
                'max_abs_diff_vs_baseline': diff,
                'knn_build_seconds': knn_seconds,
            }
            if num_nodes == 1_000_000 and isinstance(topk, int) and topk == 80:
                entry['target'] = (
                    'met'
                    if seconds < TARGET_SECONDS and peak < TARGET_BYTES
                    else 'MISSED'
                )
            result['runs'].append(entry)
            print(json.dumps(entry), flush=True)
            del out, ref
        del graph
    result['load_average_at_end'] = os.getloadavg()
    return result


def write(result: dict[str, Any], name: str, out: Path) -> None:
    m = result
    lines = [
        f'- numba {m["numba"]} ({m["numba_threads"]} threads), load average '
        f'{m["load_average_at_start"][0]:.1f} at start, '
        f'{m["load_average_at_end"][0]:.1f} at end (the machine is shared)',
        f'- Graph: synthetic faces, dim {result["dim"]}, k = {result["k"]} '
        f"(self included), built with `knn(backend='{result['knn_backend']}')`"
        + (
            f' (nprobe = {result["nprobe"]}, approximate)'
            if result['knn_backend'] == 'faiss-ivf'
            else ''
        ),
        f'- numba compile on a cold cache: {result["cold_compile_s"]:.1f} s; '
        f'first call with the cache: {result["cached_first_call_s"]:.2f} s '
        '(neither is in the times below)',
        '- Baseline: vectorised torch ([B, k, K, K] broadcast comparison per '
        'chunk), timed on the first rows and extrapolated linearly to N; '
        '"diff" is the largest absolute difference on those rows.',
        '',
        '| N | Top-K | time (s) | peak extra memory (MB) | baseline time (s) '
        '| baseline rows | baseline peak (MB) | speed-up | diff |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in result['runs']:
        lines.append(
            f'| {r["num_nodes"]:,} | {r["topk"]} | {r["seconds"]:.2f} | '
            f'{r["peak_extra_mb"]:.0f} | {r["baseline_seconds_extrapolated"]:.1f} | '
            f'{r["baseline_rows"]:,} | {r["baseline_peak_extra_mb"]:.0f} | '
            f'{r["speedup"]:.1f}x | {r["max_abs_diff_vs_baseline"]:.1e} |'
        )
    lines.append('')
    for r in result['runs']:
        if 'target' in r:
            lines.append(
                f'Target (N = 1M, k = Top-K = 80, < {TARGET_SECONDS:.0f} s and '
                f'< 2 GB extra): **{r["target"]}** ({r["seconds"]:.1f} s, '
                f'{r["peak_extra_mb"]:.0f} MB).'
            )
    write_results(name, 'Top-K Jaccard: speed and memory', result, lines, out=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000])
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--knn-backend', default='faiss-ivf')
    parser.add_argument('--nprobe', type=int, default=2)
    parser.add_argument('--baseline-rows', type=int, default=5_000)
    parser.add_argument(
        '--cache-dir', default=os.path.join(tempfile.gettempdir(), 'sdt_bench_cache')
    )
    parser.add_argument('--quick', action='store_true', help='small smoke run')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.baseline_rows = [20_000], 1_000
    out = results_dir(args.quick, args.out)
    write(run(args), 'topk_jaccard', out)
    print(f'wrote {out}/topk_jaccard.md')


if __name__ == '__main__':
    main()
