r"""Train an SDT face clusterer on labelled embeddings and compare it with a
tuned baseline on held-out identities.

This example shows how to train
:class:`~torch_geometric_sdt.SDTClusterer` on your own labelled embeddings
and how to evaluate it fairly:

1. the identities are split in two disjoint sets (a face of a test identity
   is never seen in training), here in the example with a seeded permutation
   of the identity ids;
2. :func:`~torch_geometric_sdt.train.fit` trains the Top-K predictor, then the Sparse
   Differential Transformer and its edge head, and picks its threshold
   :math:`\eta` on a validation split of the *training* identities;
3. the model is saved as a safetensors checkpoint (atomically, never
   replacing a file without ``--overwrite``) and loaded back;
4. on the held-out identities it is compared with ``infomap-knn`` whose
   cosine threshold is tuned on the training identities
   (:func:`~torch_geometric_sdt.baselines.tune_threshold`).

The default data are synthetic faces
(:func:`~torch_geometric_sdt.datasets.synthetic_faces`); pass ``--features``
and ``--labels`` for your own (``.npy``, ``.npz`` or ``.bin`` with ``.meta``).

Run::

    python examples/train_sdt.py                           # 10,000 synthetic faces
    python examples/train_sdt.py --features x.npy --labels y.meta \
        --output my_sdt.safetensors --sdt-epochs 5
    python examples/train_sdt.py --fast                    # a few seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from torch_geometric_sdt import SDTClusterer, cluster_knn, evaluate, knn
from torch_geometric_sdt.baselines import tune_threshold
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.io import check_writable, load_features, load_labels
from torch_geometric_sdt.train import fit


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('--features', type=Path, help='embeddings (.npy/.npz/.bin)')
    parser.add_argument('--labels', type=Path, help='identity labels')
    parser.add_argument('--dim', type=int, help='embedding dimension of a .bin file')
    parser.add_argument('--num-faces', type=int, default=10_000, help='synthetic')
    parser.add_argument('--synthetic-dim', type=int, default=256, help='synthetic')
    parser.add_argument(
        '--test-fraction', type=float, default=0.3, help='share of test identities'
    )
    parser.add_argument('-k', type=int, default=80, help='kNN list length')
    parser.add_argument('--topk-epochs', type=int, default=3)
    parser.add_argument('--sdt-epochs', type=int, default=3)
    parser.add_argument('--max-steps-per-epoch', type=int, default=100)
    parser.add_argument(
        '--batch-size', type=int, default=None, help='nodes / pairs per step'
    )
    parser.add_argument('--output', type=Path, help='checkpoint (.safetensors)')
    parser.add_argument('--overwrite', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--progress', action='store_true', help='progress bars')
    parser.add_argument('--fast', action='store_true', help='tiny data, k=10')
    return parser.parse_args()


def split_by_identity(
    y: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Returns (train, test) node ids whose identities do not overlap."""
    ids = torch.unique(y)
    g = torch.Generator().manual_seed(seed)
    ids = ids[torch.randperm(ids.numel(), generator=g)]
    num_test = max(1, round(test_fraction * ids.numel()))
    is_test = torch.isin(y, ids[:num_test])
    return (~is_test).nonzero().view(-1), is_test.nonzero().view(-1)


def main() -> None:
    args = parse_args()
    if args.fast:
        args.num_faces, args.synthetic_dim, args.k = 1_000, 32, 10
        args.topk_epochs = args.sdt_epochs = 1
        args.max_steps_per_epoch, args.batch_size = 2, 128
    torch.manual_seed(args.seed)

    if args.features is not None:
        if args.labels is None:
            raise SystemExit('error: --features needs --labels')
        x = np.array(load_features(args.features, dim=args.dim), dtype=np.float32)
        y = load_labels(args.labels, num_samples=x.shape[0])
        if (y < 0).any():
            raise SystemExit('error: training needs a label for every face')
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        source = str(args.features)
    else:
        x, y = synthetic_faces(args.num_faces, args.synthetic_dim, seed=args.seed)
        source = f'synthetic_faces({args.num_faces}, dim={args.synthetic_dim})'
    # Unit rows: the kNN search uses cosine similarity.
    x = torch.nn.functional.normalize(x, dim=1)

    train_idx, test_idx = split_by_identity(y, args.test_fraction, args.seed)
    assert not set(y[train_idx].tolist()) & set(y[test_idx].tolist())
    x_tr, y_tr, x_te, y_te = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    print(f'Data: {source}, {x.size(0)} faces, {int(y.unique().numel())} identities')
    print(
        f'Split by identity: {x_tr.size(0)} training faces '
        f'({int(y_tr.unique().numel())} identities), {x_te.size(0)} test faces '
        f'({int(y_te.unique().numel())} identities)'
    )

    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or Path(tmp) / 'sdt.safetensors'
        try:
            check_writable(output, overwrite=args.overwrite)
        except OSError as e:  # Fail before any work.
            raise SystemExit(f'error: {e}') from None

        t = time.perf_counter()
        model = SDTClusterer(k=args.k)
        batch_sizes = {}
        if args.batch_size is not None:
            batch_sizes = dict(
                topk_batch_size=args.batch_size, pair_batch_size=args.batch_size
            )
        summary = fit(
            model,
            x_tr,
            y_tr,
            topk_epochs=args.topk_epochs,
            sdt_epochs=args.sdt_epochs,
            max_steps_per_epoch=args.max_steps_per_epoch,
            **batch_sizes,
            seed=args.seed,
            progress=args.progress,
        )
        print(
            f'Trained {model!r} in {time.perf_counter() - t:.1f} s: '
            f'{sum(p.numel() for p in model.parameters())} parameters, '
            f'eta = {summary["eta"]:.2f}, '
            f'validation Top-K MAE = {summary["val_topk_mae"]:.2f}'
        )
        for row in summary['history']:
            stage = 'Top-K' if row['stage'] == 1 else 'SDT  '
            val = (
                f'val Top-K MAE {row["val_topk_mae"]:.3f}'
                if row['stage'] == 1
                else f'val loss {row["val_loss"]:.4f}, val AUC {row["val_auc"]:.4f}'
            )
            print(f'  {stage} epoch {row["epoch"]}: loss {row["loss"]:.4f}, {val}')

        model.save(output, overwrite=args.overwrite, extra={'source': source})
        model = SDTClusterer.load(output)
        print(f'Saved and reloaded the checkpoint {output}')

        # The baseline's threshold is chosen on the training identities only.
        threshold, _ = tune_threshold(knn(x_tr, args.k), y_tr, 'infomap-knn')

        graph = knn(x_te, args.k)
        results = {
            'sdt': evaluate(model.cluster(x_te, graph=graph), y_te),
            f'infomap-knn ({threshold:g})': evaluate(
                cluster_knn(graph, 'infomap-knn', threshold=threshold), y_te
            ),
        }

    print(f'\nHeld-out identities ({x_te.size(0)} faces, k = {args.k}):')
    print(f'{"method":<22s} {"pairwise F":>10s} {"BCubed F":>9s} {"NMI":>7s}')
    for name, m in results.items():
        print(
            f'{name:<22s} {m["pairwise_fscore"]:>10.4f} '
            f'{m["bcubed_fscore"]:>9.4f} {m["nmi"]:>7.4f}'
        )


if __name__ == '__main__':
    main()
