r"""The Ray engine against the local engine, and one Ray worker against two,
on this machine.

Every configuration clusters the same synthetic faces
(:func:`~torch_geometric_sdt.datasets.synthetic_faces`, 256-d, seed 0,
saved as one ``.npy`` file and read as parts of 65,536 rows by the tasks)
with the shipped SDT model, one after the other in this process:

* ``local``: the local engine, stage by stage (two threads);
* ``ray-W``: a fresh local Ray cluster of :math:`W` CPUs
  (``ray.init(num_cpus=W)``): :math:`W` worker processes, one task per CPU,
  one thread per task; :meth:`SDTClusterer.cluster(..., engine='ray')`.

``--graph sharded`` (default) includes the kNN search: the local engine's
exact search (symmetric blocks, half the products) against the Ray
engine's sharded exact search (query blocks against every part, every
product). ``--graph given`` computes one kNN graph beforehand
(``backend='auto'``) and gives it to every configuration, which then runs
the stages after the search only: the exact search of :math:`10^6` faces
takes hours on two cores.

Reported per configuration: seconds per stage, the time of the driver's own
work (diagnostics, final links, Infomap) as the rest, bytes the tasks read
from and wrote to the object store (arguments counted once per task that
reads them: an upper bound on what moved between nodes; on one machine the
object store is shared memory and nothing moves), pairwise and BCubed F,
and whether the labels equal the local engine's. The speed-up of two
workers over one is the ratio of two runs in the same process.

Writes benchmarks/results/ray_engine_<N>.{md,json} (``--quick``: 3K faces, a
temporary folder).

.. code-block:: none

    python -m benchmarks.ray_engine [--nodes 200000] [--workers 1 2]
        [--graph sharded|given]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Measure, results_dir, write_results

MB = 2**20
#: The stage outputs compared with the local engine's.
STAGE_OUTPUTS = ('topk', 'jaccard', 'band_pos', 'band_prob')


def compare_outputs(ours: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    r"""Where the Ray engine's stage outputs first differ from the local
    engine's: Top-K values that differ, the largest Top-K Jaccard and band
    probability differences, and how many band probabilities differ."""
    out: dict[str, Any] = {
        'topk_differ': int((ours['topk'] != local['topk']).sum()),
        'jaccard_max_abs_diff': float((ours['jaccard'] - local['jaccard']).abs().max()),
        'band_pos_equal': bool(torch.equal(ours['band_pos'], local['band_pos'])),
    }
    if out['band_pos_equal']:
        diff = (ours['band_prob'] - local['band_prob']).abs()
        out['band_prob_max_abs_diff'] = float(diff.max()) if diff.numel() else 0.0
        out['band_prob_differ'] = int((diff > 0).sum())
    return out


def _scores(pred: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    from torch_geometric_sdt.metrics import evaluate

    m = evaluate(pred, y)
    return {
        'pairwise_fscore': m['pairwise_fscore'],
        'bcubed_fscore': m['bcubed_fscore'],
        'num_clusters': m['num_clusters'],
    }


def run_local(model: Any, x: torch.Tensor, graph: Any) -> tuple[torch.Tensor, dict]:
    r"""The local engine stage by stage (the stages of
    :meth:`SDTClusterer.cluster`)."""
    from torch_geometric_sdt.nn.knn import knn
    from torch_geometric_sdt.utils.infomap import cluster_links

    stages: dict[str, float] = {}
    start = time.perf_counter()
    with torch.no_grad():
        if graph is None:
            with Measure() as m:
                graph = knn(x, model.k, backend='exact')
            stages['knn'] = m.seconds
        with Measure() as m:
            ctx = model.context(x, graph=graph)
        stages['set jaccard + scale'] = m.seconds
        with Measure() as m:
            topk = model.predict_topk(ctx)
        stages['Top-K'] = m.seconds
        with Measure() as m:
            jac = model.jaccard(ctx, topk)
        stages['topk jaccard'] = m.seconds
        with Measure() as m:
            h = model.node_states(ctx, topk, jac)
        stages['SDT states'] = m.seconds
        with Measure() as m:
            band_pos, band_prob = model.score_band(ctx, topk, jac, h)
        stages['SDT band'] = m.seconds
        with Measure() as m:
            edge_index, weight = model.final_links(ctx, topk, jac, band_pos, band_prob)
            pred = cluster_links(edge_index, weight, ctx.num_nodes)
        stages['links + Infomap'] = m.seconds
    total = time.perf_counter() - start
    parts = components_and_groups(edge_index, weight, ctx.num_nodes, pred)
    return pred, {
        'stages': stages,
        'total_s': total,
        'components': parts,
        'graph': graph,
        'outputs': dict(topk=topk, jaccard=jac, band_pos=band_pos, band_prob=band_prob),
    }


class WorkerMemory:
    r"""Samples, every :obj:`interval` seconds, the private memory (resident
    pages not shared with other processes, ``/proc/PID/statm``) of every Ray
    worker process (title ``ray::...``): :attr:`peak` is the largest seen.
    Arrays a worker reads from the object store are shared pages and do not
    count."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self.stop = threading.Event()

    def _sample(self) -> None:
        page = os.sysconf('SC_PAGE_SIZE')
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            try:
                if not Path(f'/proc/{pid}/cmdline').read_bytes().startswith(b'ray::'):
                    continue
                fields = Path(f'/proc/{pid}/statm').read_text().split()
            except OSError:
                continue
            self.peak = max(self.peak, (int(fields[1]) - int(fields[2])) * page)

    def __enter__(self) -> WorkerMemory:
        def run() -> None:
            while not self.stop.is_set():
                self._sample()
                time.sleep(self.interval)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.stop.set()
        self.thread.join()


def components_and_groups(
    edge_index: torch.Tensor,
    weight: torch.Tensor,
    num_nodes: int,
    single: torch.Tensor,
    num_groups: int = 8,
) -> dict[str, Any]:
    r"""The weakly connected components of the final links, and Infomap run
    per group of whole components (components dealt to :obj:`num_groups`
    groups of about equal links, as one would spread them over machines)
    against the single Infomap call :obj:`single`."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    from torch_geometric_sdt.metrics import evaluate
    from torch_geometric_sdt.utils.infomap import cluster_links

    src, dst = edge_index[0].numpy(), edge_index[1].numpy()
    adj = sp.coo_matrix((np.ones(src.size), (src, dst)), shape=(num_nodes,) * 2)
    num, comp = connected_components(adj, directed=True, connection='weak')
    size = np.bincount(comp, minlength=num)
    links = np.bincount(comp[src], minlength=num)
    # Largest components first, each to the group with the fewest links.
    group_of = np.zeros(num, np.int64)
    load = np.zeros(num_groups)
    for c in np.argsort(-links, kind='stable'):
        g = int(np.argmin(load))
        group_of[c] = g
        load[g] += links[c]
    node_group = group_of[comp]
    start = time.perf_counter()
    pred = np.empty(num_nodes, np.int64)
    offset = 0
    times = []
    for g in range(num_groups):
        nodes = np.flatnonzero(node_group == g)
        local = np.full(num_nodes, -1, np.int64)
        local[nodes] = np.arange(nodes.size)
        keep = node_group[src] == g
        sub = torch.from_numpy(np.stack([local[src[keep]], local[dst[keep]]]))
        t = time.perf_counter()
        lab = cluster_links(sub, weight[torch.from_numpy(keep)], int(nodes.size))
        times.append(time.perf_counter() - t)
        pred[nodes] = lab.numpy() + offset
        offset += int(lab.max()) + 1 if nodes.size else 0
    agreement = evaluate(torch.from_numpy(pred), single)
    return {
        'num_components': int(num),
        'largest_component_nodes': int(size.max()),
        'largest_component_links': int(links.max()),
        'num_links': int(src.size),
        'groups': num_groups,
        'group_links_max_over_mean': float(load.max() / max(load.mean(), 1)),
        'group_seconds_max': max(times),
        'group_seconds_sum': sum(times),
        'grouped_wall_s': time.perf_counter() - start,
        'equals_single_call': bool(
            agreement['pairwise_fscore'] == 1.0
            and agreement['num_clusters'] == int(single.max()) + 1
        ),
        'pairwise_f_against_single_call': agreement['pairwise_fscore'],
        'grouped_labels': torch.from_numpy(pred),
    }


def run_ray(
    model: Any, shards: Any, graph: Any, workers: int | None
) -> tuple[torch.Tensor, dict]:
    r"""The Ray engine on a fresh local cluster of :obj:`workers` CPUs
    (:obj:`None`: the Ray session already running)."""
    import ray

    if workers is not None:
        ray.init(
            address='local',
            num_cpus=workers,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=8 * 2**30,
        )
    try:
        start = time.perf_counter()
        with WorkerMemory() as mem, Measure() as driver:
            pred, details = model.cluster(
                shards, graph=graph, engine='ray', return_details=True
            )
        total = time.perf_counter() - start
    finally:
        if workers is not None:
            ray.shutdown()
    stages = {name: s['seconds'] for name, s in details['engine'].items()}
    stages['driver (diagnostics, links, Infomap)'] = total - sum(stages.values())
    return pred, {
        'stages': stages,
        'total_s': total,
        'bytes_in': sum(s['bytes_in'] for s in details['engine'].values()),
        'bytes_out': sum(s['bytes_out'] for s in details['engine'].values()),
        'engine': details['engine'],
        'graph': details['ctx'].knn,
        'outputs': {key: details[key] for key in STAGE_OUTPUTS},
        'worker_private_peak': mem.peak,
        'driver_peak_above_start': driver.peak,
    }


def run(
    num_nodes: int,
    workers: list[int | None],
    graph_mode: str = 'sharded',
    dim: int = 256,
) -> dict[str, Any]:
    r"""Runs the local engine and the Ray engine with every worker count."""
    from torch_geometric_sdt import io
    from torch_geometric_sdt.datasets import synthetic_faces
    from torch_geometric_sdt.nn.knn import knn
    from torch_geometric_sdt.nn.models import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path
    from torch_geometric_sdt.utils.distributed import DEFAULT_BLOCK_ROWS

    model = SDTClusterer.load(default_model_path())
    x, y = synthetic_faces(num_nodes, dim, seed=0)
    out: dict[str, Any] = {
        'num_nodes': num_nodes,
        'dim': dim,
        'k': model.k,
        'graph': graph_mode,
        'rows_per_part': DEFAULT_BLOCK_ROWS,
        'configs': {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'x.npy'
        np.save(path, x.numpy())
        shards = io.feature_shards(path, rows_per_part=DEFAULT_BLOCK_ROWS)
        graph = None
        if graph_mode == 'given':
            t = time.perf_counter()
            graph = knn(x, model.k, backend='auto')
            out['given_graph_s'] = time.perf_counter() - t
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # self-diagnosis of synthetic data
            local, res = run_local(model, x, graph)
            local_graph = res.pop('graph')
            local_outputs = res.pop('outputs')
            res.update(_scores(local, y))
            grouped = res['components'].pop('grouped_labels')
            res['components']['grouped_scores'] = _scores(grouped, y)
            out['configs']['local'] = res
            _log('local', res)
            for w in workers:
                name = 'ray' if w is None else f'ray-{w}'
                pred, res = run_ray(model, shards, graph, w)
                res.update(_scores(pred, y))
                res['equals_local'] = bool(torch.equal(pred, local))
                res['pairwise_f_against_local'] = _scores(pred, local)[
                    'pairwise_fscore'
                ]
                dist_graph = res.pop('graph')
                res.update(compare_outputs(res.pop('outputs'), local_outputs))
                res['knn_ids_equal_local'] = float(
                    (dist_graph.index == local_graph.index).float().mean()
                )
                res['knn_sim_max_abs_diff'] = float(
                    (dist_graph.sim - local_graph.sim).abs().max()
                )
                del dist_graph
                out['configs'][name] = res
                _log(name, res)
    from torch_geometric_sdt.memory import estimate_ray_memory

    out['estimate'] = estimate_ray_memory(num_nodes, dim, model.k)
    configs = out['configs']
    if 'ray-1' in configs and 'ray-2' in configs:
        out['speedup_2_over_1'] = (
            configs['ray-1']['total_s'] / configs['ray-2']['total_s']
        )
    return out


def _log(name: str, res: dict[str, Any]) -> None:
    print(
        f'{name}: {res["total_s"]:.1f} s, pairwise F {res["pairwise_fscore"]:.4f}',
        file=sys.stderr,
        flush=True,
    )


def markdown(res: dict[str, Any]) -> list[str]:
    r"""The results as markdown lines."""
    configs = res['configs']
    names = list(configs)
    stages: list[str] = []
    for c in configs.values():
        stages += [s for s in c['stages'] if s not in stages]
    lines = [
        f'{res["num_nodes"]:,} synthetic faces, {res["dim"]}-d, k = {res["k"]}, the '
        f'shipped SDT model; kNN graph: **{res["graph"]}**'
        + (
            f' (computed once beforehand with backend auto in '
            f'{res["given_graph_s"]:.0f} s, not counted below)'
            if res['graph'] == 'given'
            else ' (local: exact symmetric search; Ray: sharded exact search)'
        )
        + '. `ray-W`: a local Ray cluster of W CPUs, one single-threaded task '
        'per CPU; `local`: this process, two threads.',
        '',
        '| stage (seconds) | ' + ' | '.join(names) + ' |',
        '|---|' + '---:|' * len(names),
    ]
    for s in stages:
        cells = [
            f'{c["stages"][s]:.1f}' if s in c['stages'] else '-'
            for c in configs.values()
        ]
        lines.append(f'| {s} | ' + ' | '.join(cells) + ' |')

    def row(label: str, key: str, fmt: Any) -> None:
        # One table row: fmt(value) per configuration, '-' where absent.
        cells = [fmt(c[key]) if key in c else '-' for c in configs.values()]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')

    row('**total**', 'total_s', lambda v: f'**{v:.1f}**')
    row('read by tasks (MB)', 'bytes_in', lambda v: f'{v / MB:,.0f}')
    row('written by tasks (MB)', 'bytes_out', lambda v: f'{v / MB:,.0f}')
    row(
        'largest worker, private (MB)',
        'worker_private_peak',
        lambda v: f'{v / MB:,.0f}',
    )
    row(
        'driver above start (MB)', 'driver_peak_above_start', lambda v: f'{v / MB:,.0f}'
    )
    row('pairwise F', 'pairwise_fscore', lambda v: f'{v:.4f}')
    row('BCubed F', 'bcubed_fscore', lambda v: f'{v:.4f}')
    row('labels equal local', 'equals_local', lambda v: 'yes' if v else '**no**')
    row('pairwise F against local', 'pairwise_f_against_local', lambda v: f'{v:.5f}')
    row(
        'kNN ids equal to local',
        'knn_ids_equal_local',
        lambda v: f'{100 * v:.4f}%',
    )
    row(
        'kNN similarities, largest difference',
        'knn_sim_max_abs_diff',
        lambda v: f'{v:.1e}',
    )
    row('Top-K values that differ', 'topk_differ', lambda v: f'{v:,}')
    row(
        'Top-K Jaccard, largest difference',
        'jaccard_max_abs_diff',
        lambda v: f'{v:.1e}',
    )
    row('band probabilities that differ', 'band_prob_differ', lambda v: f'{v:,}')
    row(
        'band probabilities, largest difference',
        'band_prob_max_abs_diff',
        lambda v: f'{v:.1e}',
    )
    lines.append('')
    comp = configs['local'].get('components')
    if comp is not None:
        lines += [
            f'Final links of the local run: {comp["num_links"]:,} links in '
            f'{comp["num_components"]:,} weakly connected components, the largest '
            f'{comp["largest_component_nodes"]:,} nodes '
            f'({comp["largest_component_links"]:,} links). Infomap per group of '
            f'whole components ({comp["groups"]} groups of about equal links, '
            f'largest group {comp["group_links_max_over_mean"]:.2f}x the mean): '
            f'slowest group {comp["group_seconds_max"]:.1f} s, all groups '
            f'{comp["group_seconds_sum"]:.1f} s, against '
            f'{configs["local"]["stages"]["links + Infomap"]:.1f} s for links and '
            'one Infomap call. Same partition as the single call: '
            f'**{"yes" if comp["equals_single_call"] else "no"}** (pairwise F '
            f'between the two {comp["pairwise_f_against_single_call"]:.4f}; '
            f'against the truth {comp["grouped_scores"]["pairwise_fscore"]:.4f} '
            f'grouped, {configs["local"]["pairwise_fscore"]:.4f} single).',
            '',
        ]
    est = res['estimate']
    tasks = {s: v for s, v in est.items() if s.startswith('worker_')}
    lines.append(
        f'Memory model (`estimate_ray_memory`): worker {est["worker"] / MB:,.0f} MB '
        f'(largest task: {max(tasks, key=tasks.__getitem__)}), '
        f'object store {est["object_store"] / MB:,.0f} MB, driver '
        f'{est["driver"] / MB:,.0f} MB.'
    )
    lines.append('')
    if 'speedup_2_over_1' in res:
        lines.append(
            f'Two workers over one: **{res["speedup_2_over_1"]:.2f}x** '
            f'(ray-1 {configs["ray-1"]["total_s"]:.1f} s, ray-2 '
            f'{configs["ray-2"]["total_s"]:.1f} s, in one run).'
        )
    if 'local' in configs:
        for n in names:
            if n != 'local':
                ratio = configs[n]['total_s'] / configs['local']['total_s']
                lines.append(f'- {n}: {ratio:.2f}x the time of the local engine.')
    lines.append('')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--nodes', type=int, default=200_000)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--graph', default='sharded', choices=('sharded', 'given'))
    parser.add_argument('--quick', action='store_true', help='3K faces')
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    nodes = 3000 if args.quick else args.nodes
    res = run(nodes, args.workers, args.graph)
    name = f'ray_engine_{nodes}'
    write_results(
        name,
        f'The Ray engine at {nodes:,} faces: local engine, one and two workers',
        res,
        markdown(res),
        results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
