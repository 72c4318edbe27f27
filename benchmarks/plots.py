r"""PNG plots of the benchmark results, drawn from their JSON files.

* ``quality_threshold.png``: pairwise and BCubed F against the threshold
  (the ``sensitivity`` rows of ``sdt_quality.json``);
* ``baselines_lfw_threshold.png``: the same for the baselines on LFW
  (``baselines_lfw.json``);
* ``scale_time.png``: time of every stage against :math:`N`, log-log;
* ``scale_memory.png``: measured peak memory and the estimate against
  :math:`N`;
* ``scale_stages.png``: the time of each stage at every size, as bars.

Every plot is drawn only when its JSON file exists.

    python -m benchmarks.plots [--results DIR]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS  # noqa: E402

MB = 2**20


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f'{name}.json'
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def quality_vs_threshold(
    rows: list[dict[str, Any]], title: str, path: Path
) -> Path | None:
    r"""One panel per data set: pairwise F (solid) and BCubed F (dashed) of
    every method against its threshold. :obj:`rows` hold :obj:`data`,
    :obj:`method`, :obj:`threshold`, :obj:`pairwise_fscore`,
    :obj:`bcubed_fscore`.
    """
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        if r.get('threshold') is None:
            continue
        groups[str(r.get('data', ''))][str(r['method'])].append(r)
    if not groups:
        return None
    fig, axes = plt.subplots(
        1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False
    )
    for ax, (data, methods) in zip(axes[0], sorted(groups.items())):
        for i, (method, points) in enumerate(sorted(methods.items())):
            points = sorted(points, key=lambda r: float(r['threshold']))
            t = [float(r['threshold']) for r in points]
            color = f'C{i}'
            ax.plot(
                t,
                [r['pairwise_fscore'] for r in points],
                '-o',
                color=color,
                ms=3,
                label=f'{method} pairwise F',
            )
            ax.plot(
                t,
                [r['bcubed_fscore'] for r in points],
                '--s',
                color=color,
                ms=3,
                label=f'{method} BCubed F',
            )
        ax.set_xlabel('threshold')
        ax.set_ylabel('F-score')
        ax.set_title(data or title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def _loglog(ax: Any, ylabel: str, title: str) -> None:
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('N (faces)')
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, ncol=2)


def scale_plots(doc: dict[str, Any], results: Path) -> list[Path]:
    r"""Time against :math:`N` (log-log), memory against :math:`N` and
    per-stage time bars from ``scale.json``."""
    rows = sorted(doc.get('rows', []), key=lambda r: r['num_nodes'])
    if not rows:
        return []
    n = [r['num_nodes'] for r in rows]
    stages = list(rows[0]['stages'])
    out = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, s in enumerate(stages):
        ax.plot(
            n,
            [max(r['stages'][s]['seconds'], 1e-3) for r in rows],
            '-o',
            ms=3,
            color=f'C{i}',
            label=s,
        )
    ax.plot(n, [r['sdt_total_s'] for r in rows], 'k-o', lw=2, label='SDT total')
    ax.plot(
        n,
        [r['baseline']['seconds'] for r in rows],
        'k--s',
        label='infomap-knn (same graph)',
    )
    _loglog(ax, 'seconds', 'Time per stage against N')
    out.append(_save(fig, results / 'scale_time.png'))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [r['measured_peak'] / MB for r in rows], 'k-o', label='measured peak')
    ax.plot(
        n,
        [r['estimate']['peak'] / MB for r in rows],
        'r--s',
        label='estimate_memory (default Top-K)',
    )
    if all('estimate_at_measured_topk' in r for r in rows):
        ax.plot(
            n,
            [r['estimate_at_measured_topk']['peak'] / MB for r in rows],
            'b:^',
            label='estimate_memory (measured Top-K)',
        )
    for i, s in enumerate(stages):
        ax.plot(
            n,
            [r['stages'][s]['peak_rss_above_base'] / MB for r in rows],
            '-',
            lw=0.8,
            color=f'C{i}',
            alpha=0.7,
            label=f'{s} (measured)',
        )
    _loglog(ax, 'MB above start', 'Peak memory against N')
    out.append(_save(fig, results / 'scale_memory.png'))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(rows)
    for j, r in enumerate(rows):
        ax.bar(
            [i + j * width for i in range(len(stages))],
            [max(r['stages'][s]['seconds'], 1e-3) for s in stages],
            width,
            label=f'N = {r["num_nodes"]:,}',
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))])
    ax.set_xticklabels(stages, rotation=30, ha='right')
    ax.set_yscale('log')
    ax.set_ylabel('seconds')
    ax.set_title('Time of each stage')
    ax.grid(alpha=0.3, axis='y')
    ax.legend(fontsize=8)
    out.append(_save(fig, results / 'scale_stages.png'))
    return out


def regimes_fscore(
    cells: list[dict[str, Any]],
    path: Path,
    bars: tuple[str, ...] = (
        'sdt',
        'sdt (oracle Top-K)',
        'infomap-knn (tuned)',
        'hdbscan',
    ),
    others: tuple[str, ...] = (
        'fc-es (tuned)',
        'hdbscan (tuned)',
        'dbscan (tuned)',
        'agglomerative (tuned)',
    ),
    per_row: int = 16,
) -> Path | None:
    r"""Grouped bars of the pairwise F of every cell of ``regimes.json``
    (:obj:`cells`, each with :obj:`metrics` and a :obj:`label` or
    :obj:`cell` name), drawn by ``benchmarks.regimes`` into
    ``regimes_fscore.png``: one bar per method of :obj:`bars` (by default
    the SDT, the SDT with the oracle Top-K, the tuned infomap-knn and
    HDBSCAN at its defaults) and one for the best of :obj:`others` in the
    cell (the other tuned baselines; named above its bar). A method a cell
    did not run has no bar there. At most :obj:`per_row` cells per panel;
    panels stack.
    """
    cells = [c for c in cells if c.get('metrics')]
    if not cells:
        return None
    rows = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    bars = (*bars, 'best other tuned')
    width = 0.8 / len(bars)
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(max(7.0, 0.75 * min(len(cells), per_row) + 2), 4.2 * len(rows)),
        squeeze=False,
    )
    for ax, group in zip(axes[:, 0], rows):
        for j, bar in enumerate(bars):
            xs, heights, names = [], [], []
            for i, c in enumerate(group):
                m = c['metrics']
                name = bar
                if bar == 'best other tuned':
                    tuned = [t for t in others if t in m]
                    if not tuned:
                        continue
                    name = max(tuned, key=lambda t: m[t]['pairwise_fscore'])
                if name not in m:
                    continue
                xs.append(i + (j - (len(bars) - 1) / 2) * width)
                heights.append(m[name]['pairwise_fscore'])
                names.append(name)
            ax.bar(xs, heights, width, color=f'C{j}', label=bar)
            if bar == 'best other tuned':
                for x, name in zip(xs, names):
                    ax.text(
                        x,
                        0.02,
                        name.replace(' (tuned)', ''),
                        rotation=90,
                        ha='center',
                        va='bottom',
                        fontsize=6,
                        color='white',
                    )
        ax.set_xlim(-0.5, len(rows[0]) - 0.5)  # Equal widths in every panel.
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels(
            [str(c.get('label', c['cell'])) for c in group],
            rotation=35,
            ha='right',
            fontsize=7,
        )
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel('pairwise F')
        ax.grid(alpha=0.3, axis='y')
    axes[0, 0].legend(
        fontsize=7, ncol=len(bars), loc='lower center', bbox_to_anchor=(0.5, 1.0)
    )
    fig.suptitle('Pairwise F per regime cell (name: the best other tuned baseline)')
    return _save(fig, path)


def make_plots(
    results: str | Path = RESULTS, include_quick: bool = False
) -> list[Path]:
    r"""Draws every plot whose JSON input exists in :obj:`results`; returns
    the PNG files written. With :obj:`include_quick`, the threshold plot
    falls back on ``sdt_quality_quick.json``."""
    results = Path(results)
    out: list[Path] = []
    doc = _load(results, 'sdt_quality')
    if doc is None and include_quick:
        doc = _load(results, 'sdt_quality_quick')
    sensitivity = [] if doc is None else list(doc.get('sensitivity', []))
    for section in [] if doc is None else doc.get('sections', []):
        sensitivity += section.get('sensitivity', [])
    if sensitivity:
        path = quality_vs_threshold(
            sensitivity,
            'Quality against threshold',
            results / 'quality_threshold.png',
        )
        out += [path] if path else []
    doc = _load(results, 'baselines_lfw')
    if doc is not None and doc.get('runs'):
        rows = [
            {
                'data': doc.get('data', 'LFW'),
                'method': r['method'],
                'threshold': r['threshold'],
                **r['metrics'],
            }
            for r in doc['runs']
        ]
        path = quality_vs_threshold(
            rows,
            'Baselines on LFW against threshold',
            results / 'baselines_lfw_threshold.png',
        )
        out += [path] if path else []
    doc = _load(results, 'scale')
    if doc is not None:
        out += scale_plots(doc, results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--results', default=str(RESULTS))
    args = parser.parse_args()
    for path in make_plots(args.results):
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
