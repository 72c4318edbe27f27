r"""Speed and peak memory of :class:`SparseDiffAttention` against PyG's
:class:`~torch_geometric.nn.conv.TransformerConv` on a kNN-like graph.

Both layers run in the same process, interleaved repeat by repeat, with the
same heads, channels and graph. The graph has random neighbour lists with the
node itself at rank 0, built directly (no kNN search). Forward is timed under
:func:`torch.no_grad` (inference), forward+backward with gradients. Peak
memory is the peak resident set size above the level at the start of each
measured call (CPU; a sampling thread) or :func:`torch.cuda.max_memory_allocated`
above the start (CUDA).

Writes benchmarks/results/sparse_diff_attention.{md,json} (``--quick``: a
temporary folder, see :func:`benchmarks.common.results_dir`). Example::

    python -m benchmarks.sparse_diff_attention            # up to 100K x 80
    python -m benchmarks.sparse_diff_attention --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn import TransformerConv

from benchmarks.common import Measure, results_dir, write_results
from torch_geometric_sdt import SparseDiffAttention
from torch_geometric_sdt.memory import available_memory
from torch_geometric_sdt.nn.knn import KNN

TARGET_RATIO = 1.6
#: Graph sizes tried, largest first, when ``--nodes`` is not given.
NODE_CHOICES = (100_000, 50_000, 25_000, 10_000)


def knn_like_graph(
    num_nodes: int, k: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    r"""Random neighbour lists with self at rank 0, as ``(edge_index, rank)``
    sorted by target, then rank.
    """
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, num_nodes, (num_nodes, k), generator=gen)
    index[:, 0] = torch.arange(num_nodes)
    sim = torch.linspace(1.0, 0.0, k).expand(num_nodes, k)
    edge_index, rank, _ = KNN(index, sim).to_edge_index()
    return edge_index.to(device), rank.to(device)


def measure(fn: Callable[[], None], device: torch.device) -> tuple[float, int]:
    with Measure(device, interval=0.002) as m:
        fn()
    return m.seconds, m.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--nodes',
        type=int,
        default=None,
        help='nodes of the graph (default: the largest of '
        f'{", ".join(map(str, NODE_CHOICES))} whose estimate fits)',
    )
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument(
        '--topk', type=int, default=40, help='Top-K of the mask of SparseDiffAttention'
    )
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument(
        '--channels', type=int, default=32, help='output channels per head'
    )
    parser.add_argument('--in-channels', type=int, default=128)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='small smoke run (5K nodes, k = 20, 1 repeat)',
    )
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.k, args.topk, args.repeats = 5_000, 20, 10, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    width = args.heads * args.channels
    available = available_memory()[0]

    def need(nodes: int) -> int:
        # TransformerConv keeps about 3 edge-wise [E, H * C] tensors for the
        # backward pass and builds about 3 more during it:
        return 7 * nodes * args.k * width * 4

    if args.nodes is None:  # The largest that fits (CUDA: the largest).
        cpu = device.type == 'cpu'
        fits = [n for n in NODE_CHOICES if not cpu or need(n) <= 0.9 * available]
        args.nodes = fits[0] if fits else NODE_CHOICES[-1]
    num_edges = args.nodes * args.k
    estimate = need(args.nodes)
    if device.type == 'cpu' and estimate > 0.9 * available:
        sys.exit(
            f'needs about {estimate / 2**30:.1f} GiB, but only '
            f'{available / 2**30:.1f} GiB are available: lower '
            f'--nodes or --k'
        )

    scale_note = (
        f'TransformerConv forward+backward needs about '
        f'{7 * 100_000 * 80 * width * 4 / 2**30:.0f} GiB at 100,000 x 80; '
        f'this run: about {estimate / 2**30:.1f} GiB of '
        f'{available / 2**30:.1f} GiB available'
    )
    torch.manual_seed(args.seed)
    edge_index, rank = knn_like_graph(args.nodes, args.k, args.seed, device)
    x = torch.randn(args.nodes, args.in_channels, device=device)

    models: dict[str, tuple[torch.nn.Module, dict]] = {
        'TransformerConv': (
            TransformerConv(args.in_channels, args.channels, heads=args.heads),
            {},
        ),
        'SparseDiffAttention': (
            SparseDiffAttention(args.in_channels, args.channels, heads=args.heads),
            dict(topk=args.topk, edge_rank=rank),
        ),
        'SparseDiffAttention (vanilla)': (
            SparseDiffAttention(
                args.in_channels, args.channels, heads=args.heads, differential=False
            ),
            dict(topk=args.topk, edge_rank=rank),
        ),
        # Ranks the logits of every head and map (one sort each), no edge_rank:
        'SparseDiffAttention (logit mask)': (
            SparseDiffAttention(
                args.in_channels, args.channels, heads=args.heads, mask_mode='logit'
            ),
            dict(topk=args.topk),
        ),
    }
    times: dict[str, dict[str, list[float]]] = {
        name: {'forward': [], 'forward_backward': []} for name in models
    }
    peaks: dict[str, dict[str, int]] = {
        name: {'forward': 0, 'forward_backward': 0} for name in models
    }

    for model, _ in models.values():
        model.to(device)

    for rep in range(args.repeats + 1):  # the first round is a warm-up
        for name, (model, kwargs) in models.items():

            def forward(model: torch.nn.Module = model, kwargs: dict = kwargs) -> None:
                with torch.no_grad():
                    model(x, edge_index, **kwargs)

            def forward_backward(
                model: torch.nn.Module = model, kwargs: dict = kwargs
            ) -> None:
                model.zero_grad(set_to_none=True)
                model(x, edge_index, **kwargs).sum().backward()

            for phase, fn in (
                ('forward', forward),
                ('forward_backward', forward_backward),
            ):
                elapsed, peak = measure(fn, device)
                peaks[name][phase] = max(peaks[name][phase], peak)
                if rep > 0:
                    times[name][phase].append(elapsed)
                print(
                    f'round {rep} {name:>30} {phase:>16}: {elapsed:7.3f} s, '
                    f'peak +{peak / 2**20:8.1f} MiB',
                    flush=True,
                )

    base = 'TransformerConv'
    rows = []
    for name in models:
        row = {'model': name}
        for phase in ('forward', 'forward_backward'):
            t = statistics.median(times[name][phase])
            row[f'{phase}_s'] = t
            row[f'{phase}_peak_mib'] = peaks[name][phase] / 2**20
            row[f'{phase}_time_ratio'] = t / statistics.median(times[base][phase])
            row[f'{phase}_memory_ratio'] = peaks[name][phase] / max(
                peaks[base][phase], 1
            )
        rows.append(row)

    sda = rows[1]
    verdicts = []
    for phase in ('forward', 'forward_backward'):
        for what in ('time', 'memory'):
            ratio = sda[f'{phase}_{what}_ratio']
            ok = ratio <= TARGET_RATIO
            verdicts.append(
                f'{phase} {what}: {ratio:.2f}x TransformerConv -> '
                + ('meets' if ok else f'MISSES (by {ratio / TARGET_RATIO:.2f}x)')
                + f' the {TARGET_RATIO}x target'
            )

    result = {
        'benchmark': 'sparse_diff_attention',
        'device': str(device)
        if device.type == 'cpu'
        else torch.cuda.get_device_name(device),
        'config': {
            'nodes': args.nodes,
            'k': args.k,
            'edges': num_edges,
            'topk': args.topk,
            'heads': args.heads,
            'channels': args.channels,
            'in_channels': args.in_channels,
            'repeats': args.repeats,
            'seed': args.seed,
            'dtype': 'float32',
        },
        'scale_note': scale_note,
        'memory_method': (
            'peak RSS above the start of each call, sampled every 2 ms'
            if device.type == 'cpu'
            else 'torch.cuda.max_memory_allocated above the start'
        ),
        'target_ratio': TARGET_RATIO,
        'rows': rows,
        'raw_times_s': times,
        'verdicts': verdicts,
    }

    lines = [
        f'- device: {result["device"]}',
        f'- graph: kNN-like, {args.nodes:,} nodes, k = {args.k} '
        f'({num_edges:,} edges, self at rank 0), {args.in_channels} input '
        f'channels, {args.heads} heads x {args.channels} channels, float32',
        f'- SparseDiffAttention runs with the Top-K mask on (topk = '
        f'{args.topk}, ranks given); TransformerConv has no mask',
        f'- scale note: {scale_note}',
        f'- median of {args.repeats} interleaved repeats after one warm-up '
        f'round; forward under no_grad; memory: {result["memory_method"]}',
        '',
        '| model | forward (s) | ratio | forward peak (MiB) | ratio '
        '| fwd+bwd (s) | ratio | fwd+bwd peak (MiB) | ratio |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ]
    for r in rows:
        lines.append(
            f'| {r["model"]} | {r["forward_s"]:.3f} | '
            f'{r["forward_time_ratio"]:.2f}x | {r["forward_peak_mib"]:.0f} | '
            f'{r["forward_memory_ratio"]:.2f}x | '
            f'{r["forward_backward_s"]:.3f} | '
            f'{r["forward_backward_time_ratio"]:.2f}x | '
            f'{r["forward_backward_peak_mib"]:.0f} | '
            f'{r["forward_backward_memory_ratio"]:.2f}x |'
        )
    lines += [
        '',
        f'Target: within {TARGET_RATIO}x of TransformerConv in time and memory.',
        '',
    ]
    lines += [f'- {v}' for v in verdicts]
    lines += [
        '',
        'Spread of the timed repeats (slowest / fastest; the machine is shared, '
        'so single ratios are noisy): '
        + ', '.join(
            f'{name} {phase} {max(t) / min(t):.2f}x'
            for name, by_phase in times.items()
            for phase, t in by_phase.items()
            if t
        )
        + '.',
    ]
    write_results(
        'sparse_diff_attention',
        'SparseDiffAttention vs TransformerConv',
        result,
        lines,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
