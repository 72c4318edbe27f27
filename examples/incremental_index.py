r"""Keep a photo library clustered as faces come and go.

A photo library clusters its faces once and then receives new photos every
day; now and then a person asks to be forgotten. This example keeps the
clustering up to date with :class:`torch_geometric_sdt.index.ClusterIndex`
instead of clustering everything again:

1. create an index of the library's first faces (synthetic faces with file
   names as ids),
2. add a few days of new faces, printing what each day changed (faces
   re-clustered, merges, new clusters) and how long it took against
   clustering everything from scratch,
3. remove every face of one person and check that none is left,
4. compare the pairwise / BCubed F-scores of the maintained clustering with
   clustering all the faces at once.

The index is a folder (SQLite database, vectors, state) in a temporary
directory unless ``--index`` names one.

Run::

    python examples/incremental_index.py               # 20,000 faces, 5 days
    python examples/incremental_index.py --fast        # 2,000 faces, 2 days
    python examples/incremental_index.py --method infomap-knn
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from torch_geometric_sdt import evaluate
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.index import ClusterIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--faces', type=int, default=20_000)
    parser.add_argument('--days', type=int, default=5)
    parser.add_argument(
        '--method', default='sdt', choices=('sdt', 'infomap-knn', 'fc-es')
    )
    parser.add_argument('--index', default=None, help='index folder to create')
    parser.add_argument('--fast', action='store_true', help='2,000 faces, 2 days')
    args = parser.parse_args()
    total, days = (2000, 2) if args.fast else (args.faces, args.days)

    x, person = synthetic_faces(total, 128, seed=0)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    x, person = x[order], person[order]
    names = [f'IMG_{i:06d}.jpg' for i in range(total)]
    per_day = total // (10 * days)  # The library grows 10% over the days.
    start = total - per_day * days

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.index) if args.index else Path(tmp) / 'library.sdtindex'
        t = time.perf_counter()
        index = ClusterIndex.create(
            path, x[:start], ids=names[:start], method=args.method
        )
        create_s = time.perf_counter() - t
        info = index.info()
        print(
            f'Created {path.name}: {info["num_faces"]} faces in '
            f'{info["num_clusters"]} clusters ({args.method}) in {create_s:.1f} s'
        )
        for day in range(days):
            lo, hi = start + day * per_day, start + (day + 1) * per_day
            t = time.perf_counter()
            clusters = index.add(x[lo:hi], ids=names[lo:hi])
            seconds = time.perf_counter() - t
            events = [h for h in index.history() if h['version'] == day + 2]
            kinds = {k: sum(e['event'] == k for e in events) for k in ('merge', 'new')}
            print(
                f'Day {day + 1}: added {hi - lo} faces in {seconds:.1f} s '
                f'({seconds / create_s:.0%} of clustering from scratch); '
                f'{index.last_update["region_size"]} faces re-clustered, '
                f'{kinds["merge"]} merges, {kinds["new"]} new clusters; '
                f'first new face -> cluster {int(clusters[0])}'
            )

        # A person asks to be forgotten: every face of the largest identity.
        added = person[: start + days * per_day]
        who = int(torch.bincount(added).argmax())
        gone = [names[i] for i in (added == who).nonzero().view(-1).tolist()]
        index.remove(gone)
        left = set(index.ids())
        print(
            f'Removed {len(gone)} faces of person {who}; '
            f'{sum(n in left for n in gone)} of them left in the index'
        )

        keep = [i for i, n in enumerate(names[: start + days * per_day]) if n in left]
        ids = index.ids()
        assert ids == [names[i] for i in keep]
        maintained = evaluate(index.labels(), person[keep])
        index.close()
        once = ClusterIndex.create(
            Path(tmp) / 'once.sdtindex', x[keep], method=args.method
        )
        at_once = evaluate(once.labels(), person[keep])
        once.close()
        for name, m in (('maintained', maintained), ('at once', at_once)):
            print(
                f'{name:<10} pairwise F {m["pairwise_fscore"]:.4f}  '
                f'BCubed F {m["bcubed_fscore"]:.4f}  clusters {m["num_clusters"]}'
            )


if __name__ == '__main__':
    main()
