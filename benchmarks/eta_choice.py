r"""Pairwise and BCubed F of a model against its link threshold
:math:`\eta`, on LFW-like synthetic faces of several sizes.

:math:`\eta` is the SDT probability a pair beyond the Top-K must reach to
become a link (and, with the veto, that a Top-K pair must keep). Training
chooses it on small validation draws (:func:`~torch_geometric_sdt.train.fit`);
a larger set of the same identity-size law is more crowded (each face's
nearest impostor is closer), and there a low :math:`\eta` attaches one-off
faces to large identities. This script shows the sweep per size and which
value the plateau rule (:func:`~torch_geometric_sdt.nn.models.choose_eta`)
picks on each, beside the model's own :math:`\eta`. The draws' seed (5) is
none of the training seeds (10000 and up), so nothing here is what the
shipped :math:`\eta` was chosen on.

Writes ``benchmarks/results/eta_choice.{md,json}``::

    python -m benchmarks.eta_choice --sizes 20000 200000 [--model PATH]
    python -m benchmarks.eta_choice --quick
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt import SDTClusterer
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models.sdt_clusterer import DEFAULT_ETA_GRID
from torch_geometric_sdt.pretrained import default_model_path

SEED = 5
KEYS = ('pairwise_fscore', 'bcubed_fscore', 'num_clusters')


def sweep_size(
    model: SDTClusterer, num_nodes: int, dim: int, grid: tuple[float, ...]
) -> dict[str, Any]:
    """The sweep of :obj:`model` over :obj:`grid` on one draw, and the value
    the plateau rule picks there; the model's own :math:`\\eta` is left as
    it was."""
    x, y = synthetic_faces(num_nodes, dim, seed=SEED)
    own = model.config['eta']
    t = time.perf_counter()
    try:
        rows = model.tune_eta(x, y, grid=grid)
        chosen = model.config['eta']
    finally:
        model.config['eta'] = own
    return {
        'num_nodes': num_nodes,
        'chosen': chosen,
        'seconds': time.perf_counter() - t,
        'sweep': [{'eta': r['eta'], **{k: r[k] for k in KEYS}} for r in rows],
    }


def markdown(res: dict[str, Any]) -> list[str]:
    sizes = res['sizes']
    own = res['model_eta']
    lines = [
        f'The model `{res["model"]}` (its eta: {own:.2f}) on LFW-like synthetic '
        f'faces ({res["dim"]}-d, seed {SEED}, exact kNN, k = 80): pairwise F '
        '(BCubed F) per eta; **bold**: the value the plateau rule of `choose_eta` '
        "picks on that draw; the model's own eta is marked with *.",
        '',
        '| eta | ' + ' | '.join(f'{s["num_nodes"]:,}' for s in sizes) + ' |',
        '|---|' + '---|' * len(sizes),
    ]
    for i, eta in enumerate(res['grid']):
        cells = []
        for s in sizes:
            r = s['sweep'][i]
            text = f'{r["pairwise_fscore"]:.4f} ({r["bcubed_fscore"]:.4f})'
            cells.append(f'**{text}**' if r['eta'] == s['chosen'] else text)
        mark = '*' if abs(eta - own) < 1e-9 else ''
        lines.append(f'| {eta:.2f}{mark} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    for s in sizes:
        at_own = min(s['sweep'], key=lambda r: abs(r['eta'] - own))
        best = max(s['sweep'], key=lambda r: r['pairwise_fscore'])
        lines.append(
            f'- {s["num_nodes"]:,} faces: the rule picks {s["chosen"]:.2f}; '
            f"at the model's eta pairwise F {at_own['pairwise_fscore']:.4f}, "
            f'best {best["pairwise_fscore"]:.4f} at {best["eta"]:.2f} '
            f'({s["seconds"]:.0f} s).'
        )
    lines.append('')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[20_000, 200_000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--model', type=Path, default=None, help='checkpoint')
    parser.add_argument('--quick', action='store_true', help='2,000 faces')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    sizes = [2_000] if args.quick else args.sizes
    path = default_model_path() if args.model is None else args.model
    model = SDTClusterer.load(path)
    grid = DEFAULT_ETA_GRID
    res: dict[str, Any] = {
        'model': str(path) if args.model is not None else 'shipped',
        'model_eta': model.config['eta'],
        'dim': args.dim,
        'grid': list(grid),
        'sizes': [],
    }
    for n in sizes:
        res['sizes'].append(sweep_size(model, n, args.dim, grid))
        print(f'{n:,}: chosen {res["sizes"][-1]["chosen"]}', flush=True)
    write_results(
        'eta_choice',
        'SDT link threshold eta against the size of the data',
        res,
        markdown(res),
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
