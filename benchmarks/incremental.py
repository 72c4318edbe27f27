r"""Incremental clustering with :class:`~torch_geometric_sdt.index.ClusterIndex`
against clustering everything at once.

For every method: an index of :math:`N` synthetic faces is created (the
time of clustering all :math:`N` from scratch, the baseline), then ``--rounds``
rounds each add 1% of :math:`N` new faces (time of each :meth:`add`, its
ratio to the creation, the faces Infomap re-clustered, the share of faces
that kept their cluster id: all faces, and those whose cluster the update
did not touch). The final partition is scored against an index created on
all the faces at once. Then 1% of the faces are removed, and the partition
of the rest is scored against an index created on the rest alone. All
times of one method come from one process, one after the other.

Data: :func:`~torch_geometric_sdt.datasets.synthetic_faces` (256-d, seed 0,
rows shuffled with seed 0); exact kNN (``backend='exact'``) everywhere; the
shipped SDT model; ``infomap-knn`` at 0.7 (as in ``scale``) and ``fc-es``
at its reference 0.22 (untuned: the comparison is incremental against at
once, with the same settings).

Writes benchmarks/results/incremental.{md,json} and incremental_*.png
(``--quick``: 3K faces, 3 rounds, a temporary folder).

.. code-block:: none

    python -m benchmarks.incremental [--nodes 100000] [--rounds 10]
        [--methods sdt infomap-knn]
    python -m benchmarks.incremental --render benchmarks/results/incremental.json
    python -m benchmarks.incremental --nodes 1000000 --rounds 2 --methods sdt
        --backend auto --timing-only
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.index import ClusterIndex
from torch_geometric_sdt.metrics import evaluate

TITLE = 'Incremental clustering (ClusterIndex) against clustering at once'
#: The share of :math:`N` added per round, and removed at the end.
STEP = 0.01
#: The thresholds of the methods (:obj:`None`: the model's own).
THRESHOLDS = {'sdt': None, 'infomap-knn': 0.7, 'fc-es': 0.22}


def _scores(labels: torch.Tensor, truth: np.ndarray) -> dict[str, float]:
    m = evaluate(labels, torch.from_numpy(truth))
    return {
        'pairwise_fscore': m['pairwise_fscore'],
        'bcubed_fscore': m['bcubed_fscore'],
        'num_clusters': m['num_clusters'],
    }


def run_method(
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    num_nodes: int,
    rounds: int,
    work: Path,
    backend: str = 'exact',
    references: bool = True,
) -> dict[str, Any]:
    """One method's rounds, removal and references (see the module doc);
    with :obj:`references=False` the creation and the rounds only."""
    step = max(1, int(num_nodes * STEP))
    opts = dict(method=method, backend=backend, threshold=THRESHOLDS[method])
    t = time.perf_counter()
    index = ClusterIndex.create(work / f'{method}_inc', x[:num_nodes], **opts)
    create_s = time.perf_counter() - t
    print(json.dumps({'method': method, 'create_s': create_s}), flush=True)
    rows = []
    for r in range(rounds):
        before = index.labels()
        lo = num_nodes + r * step
        t = time.perf_counter()
        index.add(x[lo : lo + step], ids=[f'r{r}_{i}' for i in range(step)])
        seconds = time.perf_counter() - t
        after = index.labels()[: before.numel()]
        upd = index.last_update
        untouched = ~torch.isin(before, torch.tensor(upd['touched'], dtype=torch.long))
        row = {
            'round': r + 1,
            'faces': int(after.numel() + step),
            'add_s': seconds,
            'ratio': seconds / create_s,
            'changed_lists': upd['changed_lists'],
            'changed_links': upd['changed_links'],
            'region_size': upd['region_size'],
            'kept_id_all': float((after == before).float().mean()),
            'kept_id_untouched': float(
                (after[untouched] == before[untouched]).float().mean()
            )
            if bool(untouched.any())
            else None,
            'untouched_faces': int(untouched.sum()),
        }
        rows.append(row)
        print(json.dumps({'method': method, **row}), flush=True)
    total = num_nodes + rounds * step
    inc = _scores(index.labels(), y[:total])
    if not references:
        index.close()
        shutil.rmtree(work / f'{method}_inc', ignore_errors=True)
        return {
            'method': method,
            'create_s': create_s,
            'rounds': rows,
            'incremental': inc,
        }
    t = time.perf_counter()
    with ClusterIndex.create(work / f'{method}_once', x[:total], **opts) as once_index:
        once = _scores(once_index.labels(), y[:total])
    once_s = time.perf_counter() - t

    # Remove 1% of the faces (drawn with seed 0), against never adding them.
    ids = index.ids()
    gen = np.random.default_rng(0)
    gone = np.sort(gen.choice(total, size=max(1, int(total * STEP)), replace=False))
    t = time.perf_counter()
    index.remove([ids[i] for i in gone])
    remove_s = time.perf_counter() - t
    rest = np.setdiff1d(np.arange(total), gone)
    after_remove = _scores(index.labels(), y[rest])
    remove_update = dict(index.last_update)
    index.close()
    with ClusterIndex.create(work / f'{method}_rest', x[rest], **opts) as rest_index:
        never = _scores(rest_index.labels(), y[rest])
    for name in (f'{method}_inc', f'{method}_once', f'{method}_rest'):
        shutil.rmtree(work / name, ignore_errors=True)
    return {
        'method': method,
        'create_s': create_s,
        'rounds': rows,
        'incremental': inc,
        'at_once': once,
        'at_once_s': once_s,
        'remove_s': remove_s,
        'remove_ratio': remove_s / create_s,
        'remove_region_size': remove_update['region_size'],
        'after_remove': after_remove,
        'never_added': never,
    }


def run(
    num_nodes: int,
    rounds: int,
    methods: list[str],
    backend: str = 'exact',
    references: bool = True,
) -> dict[str, Any]:
    step = max(1, int(num_nodes * STEP))
    total = num_nodes + rounds * step
    x, y = synthetic_faces(total, 256, seed=0)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    x, y = x[perm].numpy(), y[perm].numpy()
    with tempfile.TemporaryDirectory(prefix='sdt-incremental-') as tmp:
        results = [
            run_method(m, x, y, num_nodes, rounds, Path(tmp), backend, references)
            for m in methods
        ]
    return {
        'num_nodes': num_nodes,
        'rounds': rounds,
        'step': step,
        'backend': backend,
        'references': references,
        'methods': results,
    }


def _reference_lines(res: dict[str, Any]) -> list[str]:
    """The quality tables: incremental against at once, and after removal."""
    lines = [
        '',
        '| method | pairwise F incremental | at once | difference | BCubed F '
        'incremental | at once | difference |',
        '|---|---|---|---|---|---|---|',
    ]
    for m in res['methods']:
        a, b = m['incremental'], m['at_once']
        lines.append(
            f'| {m["method"]} | {a["pairwise_fscore"]:.4f} | '
            f'{b["pairwise_fscore"]:.4f} | '
            f'{a["pairwise_fscore"] - b["pairwise_fscore"]:+.4f} | '
            f'{a["bcubed_fscore"]:.4f} | {b["bcubed_fscore"]:.4f} | '
            f'{a["bcubed_fscore"] - b["bcubed_fscore"]:+.4f} |'
        )
    lines += [
        '',
        '| method | remove 1% (s) | remove / create | pairwise F after removal | '
        'never added | difference | BCubed F after removal | never added |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for m in res['methods']:
        a, b = m['after_remove'], m['never_added']
        lines.append(
            f'| {m["method"]} | {m["remove_s"]:.2f} | {m["remove_ratio"]:.1%} | '
            f'{a["pairwise_fscore"]:.4f} | {b["pairwise_fscore"]:.4f} | '
            f'{a["pairwise_fscore"] - b["pairwise_fscore"]:+.4f} | '
            f'{a["bcubed_fscore"]:.4f} | {b["bcubed_fscore"]:.4f} |'
        )
    return lines


def markdown(res: dict[str, Any]) -> list[str]:
    n, step = res['num_nodes'], res['step']
    refs = res.get('references', True)
    backend = res.get('backend', 'exact')
    knn_text = (
        'Exact kNN.'
        if backend == 'exact'
        else f'kNN of the creation: backend {backend!r}; additions search exactly.'
    )
    if refs:
        setup = (
            f'{res["rounds"]} rounds adding {step:,} faces each (1% of {n:,}), '
            f'then 1% of all faces removed. {knn_text} The baseline of every time '
            'is the creation of the index (clustering all N from scratch) in the '
            'same process; the clustering at once of all faces after the rounds '
            f'({n + res["rounds"] * step:,}, the quality reference, also from '
            'scratch) is a second baseline of the same run, since one timing on '
            'this shared machine can be off by half.'
        )
    else:
        setup = (
            f'{res["rounds"]} round(s) adding {step:,} faces each (1% of {n:,}). '
            f'{knn_text} Timing only (`--timing-only`): no clustering at once, '
            'no removal; the baseline of every time is the creation of the index '
            '(clustering all N from scratch) in the same process.'
        )
    lines = [
        f'Synthetic faces (256-d, seed 0): an index of {n:,} faces, then {setup}',
        '',
        '**Targets**: an addition of 1% takes at most 5% of the time of '
        'clustering from scratch; after the rounds pairwise and BCubed F within '
        '0.005 of clustering at once; at least 99% of faces whose cluster was '
        'not touched keep their id; after removing 1%, pairwise F within 0.005 of '
        'never having added them.',
        '',
    ]
    once_head, once_rule = (
        (' at once (s) | add / at once |', '---|---|') if refs else ('', '')
    )
    lines += [
        f'| method | create (s) | mean add (s) | add / create |{once_head} faces '
        're-clustered (mean) | kept id, untouched | kept id, all |',
        f'|---|---|---|---|{once_rule}---|---|---|',
    ]
    for m in res['methods']:
        rows = m['rounds']
        mean_add = float(np.mean([r['add_s'] for r in rows]))
        untouched = [
            r['kept_id_untouched'] for r in rows if r['kept_id_untouched'] is not None
        ]
        once = (
            f' {m["at_once_s"]:.1f} | {mean_add / m["at_once_s"]:.1%} |' if refs else ''
        )
        lines.append(
            f'| {m["method"]} | {m["create_s"]:.1f} | {mean_add:.2f} | '
            f'{mean_add / m["create_s"]:.1%} |{once} '
            f'{np.mean([r["region_size"] for r in rows]):,.0f} | '
            f'{min(untouched):.2%} (min) | '
            f'{np.mean([r["kept_id_all"] for r in rows]):.2%} (mean) |'
        )
    if refs:
        lines += _reference_lines(res)
    lines += ['', 'Per round:', '']
    lines += [
        '| method | round | faces | add (s) | add / create | lists changed | '
        'link rows changed | faces re-clustered | kept id, all |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for m in res['methods']:
        for r in m['rounds']:
            lines.append(
                f'| {m["method"]} | {r["round"]} | {r["faces"]:,} | {r["add_s"]:.2f} | '
                f'{r["ratio"]:.1%} | {r["changed_lists"]:,} | {r["changed_links"]:,} | '
                f'{r["region_size"]:,} | {r["kept_id_all"]:.2%} |'
            )
    return lines


def plot(res: dict[str, Any], out: Path, name: str = 'incremental') -> list[Path]:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in res['methods']:
        rounds = [r['round'] for r in m['rounds']]
        ax1.plot(
            rounds, [r['ratio'] for r in m['rounds']], marker='o', label=m['method']
        )
        ax2.plot(
            rounds,
            [r['region_size'] / r['faces'] for r in m['rounds']],
            marker='o',
            label=m['method'],
        )
    ax1.axhline(0.05, color='grey', ls='--', lw=1, label='target 5%')
    ax1.set_xlabel('round (1% added)')
    ax1.set_ylabel('add time / clustering from scratch')
    ax1.legend()
    ax2.set_xlabel('round (1% added)')
    ax2.set_ylabel('share of faces re-clustered')
    ax2.legend()
    fig.tight_layout()
    path = out / f'{name}_rounds.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def result_name(res: dict[str, Any]) -> str:
    """``incremental``, or for a timing-only run ``incremental_<N>`` (the SDT
    model alone) or ``incremental_<N>_<methods>``."""
    if res.get('references', True):
        return 'incremental'
    methods = [m['method'] for m in res['methods']]
    suffix = '' if methods == ['sdt'] else '_' + '_'.join(methods)
    return f'incremental_{res["num_nodes"]}{suffix}'


def write(res: dict[str, Any], out: Path) -> None:
    """Writes the results files and the plot of :obj:`res` into :obj:`out`."""
    write_results(result_name(res), TITLE, res, markdown(res), out=out)
    plot(res, out, result_name(res))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nodes', type=int, default=100_000)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument(
        '--methods',
        nargs='+',
        default=['sdt', 'infomap-knn'],
        choices=('sdt', 'infomap-knn', 'fc-es'),
    )
    parser.add_argument(
        '--backend',
        default='exact',
        help="kNN backend of the creation (default 'exact'; 'auto' at 1M)",
    )
    parser.add_argument(
        '--timing-only',
        action='store_true',
        help='creation and rounds only, into incremental_<N>[_<methods>].{md,json}',
    )
    parser.add_argument('--quick', action='store_true', help='3K faces, 3 rounds')
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--render',
        default=None,
        metavar='JSON',
        help='rewrite the markdown and plots of a recorded run from its JSON',
    )
    args = parser.parse_args()
    if args.render is not None:
        path = Path(args.render)
        write(json.loads(path.read_text()), path.parent)
        return
    nodes, rounds = (3000, 3) if args.quick else (args.nodes, args.rounds)
    res = run(nodes, rounds, args.methods, args.backend, not args.timing_only)
    write(res, results_dir(args.quick, args.out))


if __name__ == '__main__':
    main()
