r"""Cluster face embeddings from a file and write one label per face.

This example shows the library's main job end to end:

1. load an embedding matrix (``.npy``, ``.npz`` or a learn-to-cluster ``.bin``
   file, whose dimension comes from ``--dim`` or from a ``.meta`` labels file
   beside it),
2. build its kNN graph (:func:`torch_geometric_sdt.knn`, self at rank 0),
3. cluster it with a training-free baseline (``infomap-knn``, ``fc-es``) or the
   Sparse Differential Transformer (``sdt``: the model shipped with the
   package unless ``--model`` names another checkpoint),
4. write the labels atomically (:func:`torch_geometric_sdt.io.save_labels`;
   ``.meta``/``.txt`` one label per line, or ``.npy``), never replacing an
   existing file without ``--overwrite``,
5. print the pairwise / BCubed F-scores and NMI when ``--labels`` is given.

Without an input file (or with ``--fast``) it generates synthetic faces
(:func:`torch_geometric_sdt.datasets.synthetic_faces`), writes them with their
labels to a temporary directory and clusters those files.

Run::

    python examples/cluster_faces.py features.npy --labels labels.meta \
        --output pred.meta --method sdt
    python examples/cluster_faces.py features.bin --dim 256 --output pred.npy \
        --method infomap-knn --threshold 0.7
    python examples/cluster_faces.py                  # 20,000 synthetic faces
    python examples/cluster_faces.py --fast           # 1,000, in a few seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from torch_geometric_sdt import SDTClusterer, cluster_knn, evaluate, knn
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.defaults import METHODS
from torch_geometric_sdt.io import (
    check_writable,
    load_features,
    load_labels,
    save_features,
    save_labels,
)
from torch_geometric_sdt.pretrained import default_model_path

# Thresholds tuned on synthetic training faces (see the shipped model card):
DEFAULT_THRESHOLD = {'infomap-knn': 0.7, 'fc-es': 0.3}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        'features', nargs='?', type=Path, help='embeddings (.npy, .npz or .bin)'
    )
    parser.add_argument('--labels', type=Path, help='ground truth (.meta/.txt/.npy)')
    parser.add_argument('--dim', type=int, help='embedding dimension of a .bin file')
    parser.add_argument('--output', type=Path, help='labels out (.meta, .txt or .npy)')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--method', default='sdt', choices=METHODS)
    parser.add_argument('--model', type=Path, help='SDT checkpoint (--method sdt)')
    parser.add_argument(
        '--threshold',
        type=float,
        help='cosine (infomap-knn), edge probability (fc-es) or eta (sdt); '
        "default 0.7, 0.3 or the model's own eta",
    )
    parser.add_argument('-k', type=int, default=80, help='kNN list length')
    parser.add_argument('--num-faces', type=int, default=20_000, help='synthetic')
    parser.add_argument('--synthetic-dim', type=int, default=256, help='synthetic')
    parser.add_argument(
        '--seed',
        type=int,
        default=1,
        help='synthetic seed (0 trained the shipped model)',
    )
    parser.add_argument('--fast', action='store_true', help='tiny synthetic run')
    return parser.parse_args()


def write_synthetic(root: Path, num_faces: int, dim: int, seed: int) -> tuple:
    x, y = synthetic_faces(num_faces, dim, seed=seed)
    features = save_features(root / 'faces.npy', x)
    labels = save_labels(root / 'faces.meta', y)
    print(
        f'Generated {num_faces} synthetic faces ({dim}-d, '
        f'{int(y.unique().numel())} identities) in {root}'
    )
    return features, labels


def cluster(args: argparse.Namespace, x: np.ndarray) -> torch.Tensor:
    if args.method == 'sdt':
        model_path = args.model or default_model_path()
        model = SDTClusterer.load(model_path)
        print(f'Model: {model_path.name} ({model!r})')
        if model.k != args.k:
            print(f"Using k = {model.k}, the model's kNN list length")
        graph = knn(x, model.k)
        # The model reads the kNN graph and the embeddings (a relational model
        # only a sample of them, for the noise level of random pairs).
        return model.cluster(torch.as_tensor(x), graph=graph, eta=args.threshold)
    graph = knn(x, args.k)
    threshold = args.threshold
    if threshold is None:
        threshold = DEFAULT_THRESHOLD[args.method]
    print(f'Threshold: {threshold}')
    return cluster_knn(graph, method=args.method, threshold=threshold)


def main() -> None:
    args = parse_args()
    if args.fast:
        args.num_faces, args.synthetic_dim = 1_000, 64
    synthetic = args.features is None or args.fast
    if not synthetic and args.output is None:
        raise SystemExit('error: pass --output for the predicted labels')

    with tempfile.TemporaryDirectory() as tmp:
        if synthetic:
            if args.features is not None:
                print(f'--fast: ignoring {args.features}, using synthetic faces')
            args.features, args.labels = write_synthetic(
                Path(tmp), args.num_faces, args.synthetic_dim, args.seed
            )
            args.dim = None
        output = args.output or Path(tmp) / 'pred.meta'
        try:
            check_writable(output, overwrite=args.overwrite)
        except OSError as e:  # Fail before any work.
            raise SystemExit(f'error: {e}') from None

        x = load_features(args.features, dim=args.dim)
        # Memory-mapped files are read-only; the kNN search only reads them.
        x = np.array(x, dtype=np.float32)
        true = None
        if args.labels is not None:
            true = load_labels(args.labels, num_samples=x.shape[0])
        print(f'Features: {args.features} ({x.shape[0]} x {x.shape[1]})')

        t = time.perf_counter()
        pred = cluster(args, x)
        seconds = time.perf_counter() - t
        save_labels(output, pred.numpy(), overwrite=args.overwrite)
        num_clusters = int(pred.max()) + 1
        print(
            f'Method {args.method}: {num_clusters} clusters in {seconds:.1f} s; '
            f'wrote {pred.numel()} labels to {output}'
        )

        if true is not None:
            metrics = evaluate(pred, true)
            print('Metrics:')
            for key in (
                'pairwise_precision',
                'pairwise_recall',
                'pairwise_fscore',
                'bcubed_precision',
                'bcubed_recall',
                'bcubed_fscore',
                'nmi',
            ):
                print(f'  {key:<20s} {metrics[key]:.4f}')
            for key in ('num_clusters', 'num_singletons', 'num_true_clusters'):
                print(f'  {key:<20s} {metrics[key]}')


if __name__ == '__main__':
    main()
