r"""Calibrates :func:`synthetic_faces` against real LFW embeddings.

Measures, on LFW (MobileFaceNet, 192-d) and on synthetic sets of the same
size and dimension (several seeds):

* identity sizes (count, singletons, tail, largest);
* the cosine of every item (identity with >= 2 items) to its identity centre
  (the normalised mean of the identity's items);
* the cosine from every identity centre to the nearest other centre;
* the cosine of random pairs;
* the k = 80 kNN graph: share of edges (self excluded) joining different
  identities, next to the floor the identity sizes impose
  (:math:`1 - \text{mean}_i \min(|y_i| - 1, k - 1) / (k - 1)`), the
  nearest-neighbour same-identity rate and the similarity at ranks 1 and k-1.

It then generates 100K and 1M 256-d embeddings, times them (target: 1M in
under 60 s) next to the floor of drawing and normalising i.i.d. Gaussian
rows, and checks that per-identity statistics stay put as N grows.

Writes benchmarks/results/synthetic_vs_real.{md,json} (``--quick``: a
temporary folder, see :func:`benchmarks.common.results_dir`).

    python -m benchmarks.synthetic_calibration
    python -m benchmarks.synthetic_calibration --quick
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmarks.common import LFW, results_dir, write_results
from torch_geometric_sdt.datasets import load_embeddings, synthetic_faces
from torch_geometric_sdt.nn.knn import knn

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def quantiles(values: torch.Tensor) -> list[float]:
    q = torch.tensor(QUANTILES, dtype=torch.float64)
    return [round(v, 4) for v in torch.quantile(values.double(), q).tolist()]


def size_summary(y: torch.Tensor) -> dict:
    sizes = torch.bincount(y)
    sizes = sizes[sizes > 0]
    out = {
        'items': int(y.numel()),
        'identities': int(sizes.numel()),
        'singletons': int((sizes == 1).sum()),
        'singleton_share': round(float((sizes == 1).float().mean()), 4),
        'mean_size': round(float(sizes.float().mean()), 3),
        'largest': int(sizes.max()),
    }
    for s in (2, 5, 10, 50, 100):
        out[f'ids_ge_{s}'] = int((sizes >= s).sum())
    return out


def centre_stats(x: torch.Tensor, y: torch.Tensor, nearest: bool) -> dict:
    num_ids = int(y.max()) + 1
    centre = torch.zeros(num_ids, x.size(1)).index_add_(0, y, x)
    counts = torch.bincount(y, minlength=num_ids)
    present = counts > 0
    centre = centre[present]
    centre = centre / centre.norm(dim=1, keepdim=True)
    remap = torch.cumsum(present.long(), 0) - 1
    multi = counts[y] >= 2
    own = (x[multi] * centre[remap[y[multi]]]).sum(1)
    out = {'cos_own_centre': quantiles(own)}
    if nearest:
        out['cos_nearest_other_centre'] = quantiles(knn(centre, 2).sim[:, 1])
    return out


def knn_stats(x: torch.Tensor, y: torch.Tensor, k: int) -> dict:
    graph = knn(x, k)
    same = y[graph.index[:, 1:]] == y.view(-1, 1)
    sizes = torch.bincount(y)[y]
    multi = sizes >= 2
    floor = 1 - (sizes - 1).clamp(max=k - 1).double().mean() / (k - 1)
    gen = torch.Generator().manual_seed(0)
    pairs = torch.randint(0, y.numel(), (2, 200_000), generator=gen)
    keep = pairs[0] != pairs[1]
    rand = (x[pairs[0, keep]] * x[pairs[1, keep]]).sum(1)
    return {
        f'cross_identity_edge_share_k{k}': round(float(1 - same.double().mean()), 4),
        f'cross_share_floor_from_sizes_k{k}': round(float(floor), 4),
        f'excess_cross_share_k{k}': round(float(1 - same.double().mean() - floor), 4),
        'nn_same_identity_rate_ids_ge_2': round(
            float(same[multi, 0].double().mean()), 4
        ),
        'nn_same_identity_rate_all': round(float(same[:, 0].double().mean()), 4),
        'sim_rank_1': quantiles(graph.sim[:, 1]),
        f'sim_rank_{k - 1}': quantiles(graph.sim[:, k - 1]),
        'random_pair_cos_mean': round(float(rand.mean()), 4),
        'random_pair_cos_std': round(float(rand.std()), 4),
    }


def all_stats(x: torch.Tensor, y: torch.Tensor, k: int) -> dict:
    return {
        'sizes': size_summary(y),
        **centre_stats(x, y, nearest=True),
        **knn_stats(x, y, k),
    }


def flatten(stats: dict) -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            for k2, v2 in value.items():
                flat[f'{key}.{k2}'] = v2
        elif isinstance(value, list):
            for q, v in zip(QUANTILES, value):
                flat[f'{key}.q{q:g}'] = v
        else:
            flat[key] = value
    return flat


def timed_generation(num: int, dim: int) -> dict:
    t = time.perf_counter()
    x, y = synthetic_faces(num, dim, seed=0)
    gen_s = time.perf_counter() - t
    out = {'num_samples': num, 'dim': dim, 'seconds': round(gen_s, 3)}
    out['sizes'] = size_summary(y)
    out.update(centre_stats(x, y, nearest=False))
    del x, y
    t = time.perf_counter()
    base = torch.randn(num, dim, generator=torch.Generator().manual_seed(0))
    base /= base.norm(dim=1, keepdim=True)
    out['baseline_iid_gaussian_seconds'] = round(time.perf_counter() - t, 3)
    out['ratio_to_baseline'] = round(gen_s / out['baseline_iid_gaussian_seconds'], 2)
    del base
    return out


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f'{v:.4f}'
    return str(v)


def markdown(result: dict) -> list[str]:
    real = flatten(result['real'])
    seeds = result['synthetic']
    flats = [flatten(s) for s in seeds.values()]
    lines = [
        f'- Real: {result["real_source"]} (N = 13,233, D = 192).',
        f'- Synthetic: `synthetic_faces(13233, 192, seed=s)` for seeds '
        f'{", ".join(seeds)}; mean over seeds and [min, max].',
        "- Cosines to centres use the normalised mean of an identity's items; "
        '`cos_own_centre` covers items of identities with >= 2 items. kNN is '
        f'exact with k = {result["k"]} (self at rank 0, excluded from the shares).',
        '- The cross-identity share is bounded below by the identity sizes '
        '(an item of an identity of size s has at most s - 1 same-identity '
        'neighbours); that floor varies with the drawn sizes, so compare the '
        '`excess` row as well.',
        '',
        '| statistic | LFW | synthetic (mean) | synthetic [min, max] |',
        '|---|---:|---:|---:|',
    ]
    for key, value in real.items():
        vals = [f[key] for f in flats]
        mean = float(np.mean(vals))
        lines.append(
            f'| {key} | {fmt(value)} | {fmt(round(mean, 4))} | '
            f'[{fmt(min(vals))}, {fmt(max(vals))}] |'
        )

    lines += [
        '',
        '## Scale and speed (D = 256, seed 0)',
        '',
        '| N | seconds | i.i.d. Gaussian floor (s) | ratio | identities | '
        'singleton share | largest | cos_own_centre q0.1 / q0.5 / q0.9 |',
        '|---:|---:|---:|---:|---:|---:|---:|---|',
    ]
    for run in result['scale']:
        own = run['cos_own_centre']
        lines.append(
            f'| {run["num_samples"]:,} | {run["seconds"]:.2f} | '
            f'{run["baseline_iid_gaussian_seconds"]:.2f} | '
            f'{run["ratio_to_baseline"]:.2f} | '
            f'{run["sizes"]["identities"]:,} | {run["sizes"]["singleton_share"]} | '
            f'{run["sizes"]["largest"]:,} | {own[2]} / {own[4]} / {own[6]} |'
        )
    lines += ['', '## Verdict', '']
    lines += [f'- {line}' for line in result['verdict']]
    return lines


def verdict(result: dict) -> list[str]:
    out = []
    real = flatten(result['real'])
    flats = [flatten(s) for s in result['synthetic'].values()]
    for key, tol in (
        ('cos_own_centre.q0.5', 0.02),
        ('cos_own_centre.q0.05', 0.04),
        ('cos_nearest_other_centre.q0.5', 0.02),
        ('cos_nearest_other_centre.q0.9', 0.03),
        ('excess_cross_share_k80', 0.02),
        ('nn_same_identity_rate_ids_ge_2', 0.02),
        ('random_pair_cos_mean', 0.02),
    ):
        mean = float(np.mean([f[key] for f in flats]))
        ok = abs(mean - real[key]) <= tol
        out.append(
            f'{"match" if ok else "MISS"}: {key} synthetic {mean:.4f} vs '
            f'LFW {real[key]:.4f} (tolerance {tol})'
        )
    for run in result['scale']:
        if run['num_samples'] >= 1_000_000:
            ok = run['seconds'] < 60
            out.append(
                f'{"met" if ok else "MISSED"}: 1M x 256 generated in '
                f'{run["seconds"]:.1f} s (target < 60 s)'
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--quick',
        action='store_true',
        help='one seed and 100K instead of 1M for timing',
    )
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--k', type=int, default=80)
    parser.add_argument('--out', default=None, help='results folder')
    parser.add_argument('--name', default='synthetic_vs_real')
    args = parser.parse_args()

    if not (LFW / 'features.npy').exists():
        sys.exit(f'LFW embeddings not found at {LFW} (set SDT_SHARED)')
    torch.manual_seed(0)
    result: dict = {
        'real_source': str(LFW.name),
        'k': args.k,
    }
    data = load_embeddings(LFW)
    result['real'] = all_stats(data.x, data.y, args.k)
    print('real done', flush=True)

    seeds = 1 if args.quick else args.seeds
    result['synthetic'] = {}
    for seed in range(seeds):
        x, y = synthetic_faces(data.num_nodes, data.x.size(1), seed=seed)
        result['synthetic'][str(seed)] = all_stats(x, y, args.k)
        print(f'synthetic seed {seed} done', flush=True)

    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    result['scale'] = [timed_generation(n, 256) for n in sizes]
    result['verdict'] = verdict(result)

    write_results(
        args.name,
        'Synthetic faces vs. real LFW embeddings',
        result,
        markdown(result),
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
