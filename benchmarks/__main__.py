r"""The benchmark suite's entry point.

.. code-block:: none

    python -m benchmarks list
    python -m benchmarks run --suite quality|speed|scale|all [--quick]
    python -m benchmarks report [--results DIR]

``run`` starts every script of the suite as its own subprocess
(``python -m benchmarks.<name>``), so that a crash or an out-of-memory kill
in one leaves the others' results alone; scripts that do not exist yet are
skipped with a message. Each script writes ``<name>.json`` and ``<name>.md``
(``--quick`` runs write to a temporary folder, never over the recorded
results). ``report`` draws the plots and writes ``RESULTS.md`` from the
JSON files present; ``run`` ends with it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / 'benchmarks'

#: Every suite and its scripts (modules of :mod:`benchmarks`), in run order.
SUITES: dict[str, tuple[str, ...]] = {
    'quality': (
        'baselines_lfw',
        'jaccard_separation',
        'synthetic_calibration',
        'sdt_quality',
        'sdt_draws',
        'sdt_ablation',
        'regimes',
        'eta_choice',
        'regime_ablation',
        'link_cap',
    ),
    'speed': (
        'knn',
        'metrics',
        'topk_jaccard',
        'sparse_diff_attention',
        'chunk_sizes',
        'precision',
        'incremental',
    ),
    'scale': ('scale', 'ray_engine'),
}
#: What each script measures (for ``list``).
DESCRIPTIONS = {
    'baselines_lfw': 'infomap-knn and fc-es on LFW against reference numbers',
    'jaccard_separation': 'ROC AUC of edge scores for same-identity edges',
    'synthetic_calibration': 'synthetic faces against LFW (writes synthetic_vs_real)',
    'sdt_quality': 'SDT against the baselines, threshold sensitivity',
    'sdt_draws': 'SDT against the baselines over independent draws',
    'sdt_ablation': 'ablations of the SDT pipeline',
    'regimes': 'SDT against tuned baselines and HDBSCAN per data regime',
    'eta_choice': 'SDT link threshold eta against the size of the data',
    'regime_ablation': 'Top-K Jaccard only, SDT, vanilla, MoE-SDT per regime',
    'link_cap': 'SDT with at most L links per node (max_links) per regime',
    'knn': 'kNN backends: time and recall@k',
    'metrics': 'evaluate() at 5M items against scipy.sparse',
    'topk_jaccard': 'Top-K Jaccard speed and memory at 100K and 1M',
    'sparse_diff_attention': 'SparseDiffAttention against TransformerConv',
    'chunk_sizes': 'model inference chunk sizes now against version 0.1',
    'precision': 'the Top-K predictor in bfloat16 against float32: time, quality',
    'incremental': 'ClusterIndex: 1% additions and removals against clustering at once',
    'scale': 'time and memory of every SDT stage at 10K, 100K, 1M',
    'ray_engine': 'the Ray engine: local engine against one and two Ray workers',
}


def _exists(name: str) -> bool:
    return (HERE / f'{name}.py').is_file()


def cmd_list(args: argparse.Namespace) -> int:
    for suite, names in SUITES.items():
        print(f'{suite}:')
        for name in names:
            mark = '' if _exists(name) else '  [not present yet: skipped]'
            print(f'  {name:24s} {DESCRIPTIONS.get(name, "")}{mark}')
    return 0


def run_script(name: str, quick: bool, extra: list[str]) -> dict[str, object]:
    r"""Runs one script in a subprocess; returns its status."""
    if not _exists(name):
        print(f'[benchmarks] {name}: benchmarks/{name}.py does not exist yet; skipped')
        return {'name': name, 'status': 'skipped'}
    cmd = [sys.executable, '-m', f'benchmarks.{name}', *(['--quick'] if quick else [])]
    cmd += extra
    from benchmarks.common import child_env

    env = child_env()
    print(f'[benchmarks] {name}: {" ".join(cmd[1:])}', flush=True)
    t = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    seconds = time.perf_counter() - t
    status = 'ok' if rc == 0 else f'failed (exit {rc})'
    print(f'[benchmarks] {name}: {status} in {seconds:.0f} s', flush=True)
    return {'name': name, 'status': status, 'seconds': seconds}


def cmd_run(args: argparse.Namespace) -> int:
    suites = list(SUITES) if args.suite == 'all' else [args.suite]
    names = [n for s in suites for n in SUITES[s]]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f'not in suite {args.suite}: {", ".join(unknown)}', file=sys.stderr)
            return 2
        names = [n for n in names if n in args.only]
    done = [run_script(n, args.quick, []) for n in names]
    print('\n[benchmarks] summary:')
    for d in done:
        extra = f' ({d["seconds"]:.0f} s)' if 'seconds' in d else ''
        print(f'  {d["name"]:24s} {d["status"]}{extra}')
    if not args.no_report:
        from benchmarks.common import results_dir
        from benchmarks.report import build_report

        path = build_report(results_dir(args.quick), include_quick=args.quick)
        print(f'[benchmarks] wrote {path}')
    failed = [d for d in done if str(d['status']).startswith('failed')]
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from benchmarks.common import RESULTS
    from benchmarks.report import build_report

    try:
        path = build_report(
            args.results or RESULTS,
            plots=not args.no_plots,
            include_quick=args.include_quick,
        )
    except ValueError as e:
        print(f'benchmarks report: error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {path}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m benchmarks', description='The benchmark suite.'
    )
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='list the suites and their scripts')
    p = sub.add_parser('run', help='run a suite, then write RESULTS.md')
    p.add_argument('--suite', required=True, choices=(*SUITES, 'all'))
    p.add_argument('--quick', action='store_true', help='small smoke runs')
    p.add_argument('--only', nargs='+', default=None, help='some scripts only')
    p.add_argument('--no-report', action='store_true', help='skip RESULTS.md')
    p = sub.add_parser('report', help='draw the plots and write RESULTS.md')
    p.add_argument('--results', default=None, help='results folder')
    p.add_argument('--no-plots', action='store_true')
    p.add_argument(
        '--include-quick', action='store_true', help='also *_quick smoke runs'
    )
    args = parser.parse_args(argv)
    return {'list': cmd_list, 'run': cmd_run, 'report': cmd_report}[args.command](args)


if __name__ == '__main__':
    raise SystemExit(main())
