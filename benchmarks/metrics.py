r"""Times :func:`torch_geometric_sdt.metrics.evaluate` at MS-Celeb-1M scale.

Scores a synthetic prediction of 5M items against 77K classes (the size of
the 5.21M MS-Celeb-1M test set) and compares, in the same process, against a
straightforward implementation on a :mod:`scipy.sparse` contingency matrix
(the usual way: :obj:`coo_matrix((1, (true, pred))).tocsr()`), checking that
both give the same numbers. Target: under 30 s for 5M items.

Writes benchmarks/results/metrics.{md,json} (``--quick``: a temporary
folder, see :func:`benchmarks.common.results_dir`).

    python -m benchmarks.metrics
    python -m benchmarks.metrics --quick
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt.metrics import evaluate

TARGET_SECONDS = 30.0


def make_labels(
    num_items: int,
    num_classes: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Heavy-tailed class sizes and a prediction that merges some classes,
    splits some items off and leaves some items as singletons."""
    rng = np.random.default_rng(seed)
    weight = rng.pareto(1.5, num_classes) + 1.0
    true = rng.choice(num_classes, num_items, p=weight / weight.sum())
    merged = np.where(true % 20 == 0, true + 1, true)  # merges 5% of classes
    pred = merged * 4 + rng.integers(0, 4, num_items) * (rng.random(num_items) < 0.1)
    noise = rng.random(num_items) < 0.05
    pred[noise] = 4 * num_classes + np.arange(int(noise.sum()))
    return pred.astype(np.int64), true.astype(np.int64)


def scipy_evaluate(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    r"""The same metrics from a scipy.sparse contingency matrix."""
    from scipy.sparse import coo_matrix

    n = pred.size
    _, g = np.unique(true, return_inverse=True)
    _, c = np.unique(pred, return_inverse=True)
    table = coo_matrix((np.ones(n, dtype=np.int64), (g, c))).tocsr()
    table.sum_duplicates()
    coo = table.tocoo()
    nij = coo.data.astype(np.float64)
    a = np.asarray(table.sum(axis=1)).ravel().astype(np.float64)
    b = np.asarray(table.sum(axis=0)).ravel().astype(np.float64)
    tp = (nij**2).sum() - n
    pp, pr = tp / ((b**2).sum() - n), tp / ((a**2).sum() - n)
    bp = (nij**2 / b[coo.col]).sum() / n
    br = (nij**2 / a[coo.row]).sum() / n
    mi = (nij / n * np.log(n * nij / (a[coo.row] * b[coo.col]))).sum()
    h_true = -(a / n * np.log(a / n)).sum()
    h_pred = -(b / n * np.log(b / n)).sum()
    return {
        'pairwise_precision': pp,
        'pairwise_recall': pr,
        'pairwise_fscore': 2 * pp * pr / (pp + pr),
        'bcubed_precision': bp,
        'bcubed_recall': br,
        'bcubed_fscore': 2 * bp * br / (bp + br),
        'nmi': mi / (0.5 * (h_true + h_pred)),
    }


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-items', type=int, default=5_000_000)
    parser.add_argument('--num-classes', type=int, default=77_000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='200K items, 5K classes')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    if args.quick:
        args.num_items, args.num_classes, args.repeat = 200_000, 5_000, 1

    pred, true = make_labels(args.num_items, args.num_classes, args.seed)
    ours_s, ours = best_of(lambda: evaluate(pred, true), args.repeat)
    ours_torch_s, _ = best_of(
        lambda: evaluate(torch.from_numpy(pred), torch.from_numpy(true)), 1
    )
    try:
        base_s, base = best_of(lambda: scipy_evaluate(pred, true), args.repeat)
    except ImportError:
        base_s, base = None, None
    max_diff = (
        None
        if base is None
        else max(abs(ours[key] - value) for key, value in base.items())
    )

    full_size = args.num_items >= 5_000_000
    meets = ours_s < TARGET_SECONDS if full_size else None
    result = {
        'numpy': np.__version__,
        'num_items': args.num_items,
        'num_classes': args.num_classes,
        'num_clusters': ours['num_clusters'],
        'repeat': args.repeat,
        'evaluate_seconds': round(ours_s, 3),
        'evaluate_torch_input_seconds': round(ours_torch_s, 3),
        'scipy_sparse_seconds': None if base_s is None else round(base_s, 3),
        'speedup_vs_scipy': None if base_s is None else round(base_s / ours_s, 2),
        'max_abs_difference_vs_scipy': max_diff,
        'target_seconds': TARGET_SECONDS,
        'meets_target': meets,
        'metrics': ours,
    }

    lines = [
        f'- numpy {np.__version__}',
        f'- Data: {args.num_items:,} items, {args.num_classes:,} classes '
        f'(heavy-tailed sizes), prediction with {ours["num_clusters"]:,} '
        'clusters; best of '
        f'{args.repeat} runs.',
        '',
        '| implementation | seconds | ratio |',
        '|---|---|---|',
        f'| `evaluate` (one sparse contingency, numpy) | {ours_s:.3f} | 1.00 |',
        f'| `evaluate` on torch tensors | {ours_torch_s:.3f} | '
        f'{ours_torch_s / ours_s:.2f} |',
    ]
    if base_s is not None:
        lines.append(
            f'| baseline: scipy.sparse contingency | {base_s:.3f} | '
            f'{base_s / ours_s:.2f} |'
        )
        lines += ['', f'Largest difference between the two: {max_diff:.2e}.']
    else:
        lines += ['', 'scipy is not installed: no baseline was run.']
    if meets is None:
        verdict = f'not checked by this run ({args.num_items:,} items).'
    elif meets:
        verdict = f'met ({ours_s:.2f} s).'
    else:
        verdict = f'**missed** ({ours_s:.2f} s).'
    lines += ['', f'Target: under {TARGET_SECONDS:.0f} s for 5M items: {verdict}']
    lines += ['', '| metric | value |', '|---|---|']
    lines += [f'| {key} | {value} |' for key, value in ours.items()]

    write_results(
        'metrics',
        'Metrics speed' + (' (quick smoke run)' if args.quick else ''),
        result,
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
