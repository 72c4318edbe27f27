r"""Cluster sharded face embeddings on a Ray cluster.

Large face collections rarely sit in one file on one machine. This example
writes synthetic face embeddings as a folder of ``.npy`` parts (as a photo
service would export them), then clusters them with the Ray engine:

1. start a local Ray cluster (or join one with ``--address``),
2. read the parts as :class:`~torch_geometric_sdt.utils.distributed.FeatureShards`
   (:func:`torch_geometric_sdt.io.feature_shards`): only their headers are
   read here, every task reads the rows it needs,
3. cluster them with :meth:`SDTClusterer.cluster(..., engine='ray')`: the
   exact kNN search, the Top-K, the Jaccard scores and the SDT run as Ray
   tasks, Infomap on this process,
4. print the time and the tasks of every stage, the F-scores, and whether
   the partition equals the local engine's (and its pairwise F against it:
   a task in a worker process can round a score's last bit differently,
   which now and then moves a few faces).

Run::

    python examples/ray_cluster.py                    # 20,000 faces
    python examples/ray_cluster.py --fast             # 3,000 faces
    python examples/ray_cluster.py --address auto     # an existing cluster

The same from the command line: ``sdt cluster parts/ -o labels.meta
--method sdt --engine ray [--address auto]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import ray

from torch_geometric_sdt import evaluate, io
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.pretrained import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--faces', type=int, default=20_000)
    parser.add_argument('--parts', type=int, default=4, help='.npy files to write')
    parser.add_argument(
        '--address', default=None, help="a Ray cluster to join (e.g. 'auto')"
    )
    parser.add_argument('--cpus', type=int, default=2, help='CPUs of a local cluster')
    parser.add_argument('--fast', action='store_true', help='3,000 faces')
    args = parser.parse_args()
    total = 3000 if args.fast else args.faces

    if args.address is None:
        ray.init(address='local', num_cpus=args.cpus, include_dashboard=False)
    else:
        ray.init(address=args.address)
    print(f'Ray cluster: {ray.cluster_resources().get("CPU", 0):.0f} CPUs')

    x, person = synthetic_faces(total, 128, seed=0)
    model = SDTClusterer.load(default_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(tmp) / 'faces'
        parts.mkdir()
        for p, rows in enumerate(np.array_split(np.arange(total), args.parts)):
            np.save(parts / f'part-{p:05d}.npy', x[rows].numpy())
        shards = io.feature_shards(parts)
        print(f'{shards.num_rows:,} faces in {len(shards)} parts of {shards.sizes}')

        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # self-diagnosis of synthetic data
            start = time.perf_counter()
            labels, details = model.cluster(shards, engine='ray', return_details=True)
            ray_s = time.perf_counter() - start
            start = time.perf_counter()
            local = model.cluster(x, backend='exact')
            local_s = time.perf_counter() - start

    print('stage              tasks  seconds  read by tasks (MB)')
    for name, stage in details['engine'].items():
        print(
            f'{name:<18} {stage["tasks"]:>5} {stage["seconds"]:>8.2f} '
            f'{stage["bytes_in"] / 2**20:>19.1f}'
        )
    m = evaluate(labels, person)
    print(f'Ray engine: {ray_s:.1f} s; local engine: {local_s:.1f} s')
    print(
        f'pairwise F {m["pairwise_fscore"]:.4f}, BCubed F {m["bcubed_fscore"]:.4f}, '
        f'{m["num_clusters"]:,} clusters for {int(person.unique().numel()):,} people'
    )
    same = bool((labels == local).all())
    agreement = evaluate(labels, local)['pairwise_fscore']
    print(
        f'same partition as the local engine: {same} '
        f'(pairwise F against it {agreement:.4f})'
    )
    ray.shutdown()


if __name__ == '__main__':
    main()
