r"""Time of the model's chunked inference stages at the library's chunk sizes
against those of version 0.1, with the same output.

:meth:`SDTClusterer.predict_topk` (nodes per batch), :meth:`node_states`
(target nodes per chunk) and :meth:`score_band` (pairs per chunk) each run
at the default of :mod:`torch_geometric_sdt.nn.models`
(:obj:`TOPK_BATCH_SIZE`, :obj:`NODE_CHUNK_SIZE`, :obj:`BAND_CHUNK_SIZE`) and
at version 0.1's (4096, 65536, :math:`2^{18}`), alternately,
``--repeat`` times each in one process; the best times and their ratio are
reported, and every run's output is checked to be identical to the first.
Data: :func:`~torch_geometric_sdt.datasets.synthetic_faces` (256-d, seed 0),
the shipped model, its kNN graph (``backend='auto'``).

Writes benchmarks/results/chunk_sizes.{md,json} (``--quick``: 5K nodes, a
temporary folder).

.. code-block:: none

    python -m benchmarks.chunk_sizes [--nodes 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from benchmarks.common import results_dir, write_results
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models import (
    BAND_CHUNK_SIZE,
    NODE_CHUNK_SIZE,
    TOPK_BATCH_SIZE,
    SDTClusterer,
)
from torch_geometric_sdt.pretrained import default_model_path

#: Version 0.1's chunk sizes, the baseline.
PREVIOUS = {'topk': 4096, 'node_states': 65536, 'score_band': 1 << 18}
#: The library's defaults.
CURRENT = {
    'topk': TOPK_BATCH_SIZE,
    'node_states': NODE_CHUNK_SIZE,
    'score_band': BAND_CHUNK_SIZE,
}


def run(num_nodes: int, repeat: int) -> dict[str, Any]:
    r"""Best times of every stage at both chunk sizes, alternating."""
    x, _ = synthetic_faces(num_nodes, 256, seed=0)
    model = SDTClusterer.load(default_model_path())
    ctx = model.context(x)
    topk = model.predict_topk(ctx)
    jac = model.jaccard(ctx, topk)
    h = model.node_states(ctx, topk, jac)

    stages = {
        'topk': lambda size: model.predict_topk(ctx, batch_size=size),
        'node_states': lambda size: model.node_states(ctx, topk, jac, chunk_size=size),
        'score_band': lambda size: model.score_band(ctx, topk, jac, h, chunk_size=size)[
            1
        ],
    }
    reference = {'topk': topk, 'node_states': h}
    times: dict[str, dict[str, list[float]]] = {}
    for name, fn in stages.items():
        times[name] = {'previous': [], 'current': []}
        for _ in range(repeat):
            for which, sizes in (('previous', PREVIOUS), ('current', CURRENT)):
                t = time.perf_counter()
                out = fn(sizes[name])
                times[name][which].append(time.perf_counter() - t)
                ref = reference.setdefault(name, out)
                if not torch.equal(out, ref):
                    raise AssertionError(f'{name}: output differs at {sizes[name]}')
        print(json.dumps({name: times[name]}), flush=True)
    rows = []
    for name in stages:
        prev, cur = min(times[name]['previous']), min(times[name]['current'])
        rows.append(
            {
                'stage': name,
                'previous_size': PREVIOUS[name],
                'current_size': CURRENT[name],
                'previous_s': prev,
                'current_s': cur,
                'speedup': prev / cur,
                'all_s': times[name],
            }
        )
    return {'num_nodes': num_nodes, 'repeat': repeat, 'rows': rows}


def markdown(res: dict[str, Any]) -> list[str]:
    lines = [
        f'Synthetic faces ({res["num_nodes"]:,} x 256, seed 0), the shipped model. '
        f'Each stage alternates the two chunk sizes, {res["repeat"]} runs each, in '
        'one process; best times. Every run gave the output of the first '
        '(checked with `torch.equal`). `node_states` runs the current code at '
        "both sizes: every chunk reads only its own edges' sources (version "
        '0.1 normalised and projected all N states for every chunk, O(N) per '
        'chunk, so that small chunks were slow at large N).',
        '',
        '| stage | version 0.1 size | size now | version 0.1 (s) | now (s) | '
        'speed-up |',
        '|---|---|---|---|---|---|',
    ]
    for r in res['rows']:
        lines.append(
            f'| {r["stage"]} | {r["previous_size"]:,} | {r["current_size"]:,} | '
            f'{r["previous_s"]:.2f} | {r["current_s"]:.2f} | {r["speedup"]:.2f}x |'
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nodes', type=int, default=50_000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--quick', action='store_true', help='5K nodes, 1 run')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    nodes, repeat = (5000, 1) if args.quick else (args.nodes, args.repeat)
    res = run(nodes, repeat)
    write_results(
        'chunk_sizes',
        'Chunk sizes of the model inference stages: time now against version 0.1',
        res,
        markdown(res),
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
