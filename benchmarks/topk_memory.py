r"""Peak memory of the Top-K prediction (:meth:`SDTClusterer.predict_topk`)
with the shipped model, against the ``topk`` stage of
:func:`torch_geometric_sdt.memory.estimate_memory` and the address space
:func:`torch_geometric_sdt.memory.available_memory` holds back.

Every size runs in a fresh subprocess that follows ``sdt cluster --method
sdt``: the command line's imports and the features
(:func:`~torch_geometric_sdt.datasets.synthetic_faces`, 256-d float32) come
first, and their level is the one the memory check sees; then the shipped
model, the kNN graph (:math:`k = 80`, ``backend='auto'``), its context and
the Top-K prediction (at another ``-k`` than the shipped model's, the same
architecture untrained). Printed per size, in MiB: the resident peak
(``VmHWM``, reset before the prediction) and the virtual peak (``VmSize``
sampled every millisecond) of the prediction above that level, the
``topk`` estimate, and the address-space reserve. Nothing is recorded.

.. code-block:: none

    python -m benchmarks.topk_memory --sizes 20000 100000 [--threads 16]
        [--batch-size 4096]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

MIB = 2**20


def _status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    return 0


def child(
    num_nodes: int, dim: int, k: int, threads: int | None, batch_size: int | None
) -> dict:
    import numpy as np
    import torch

    import torch_geometric_sdt.cli  # noqa: F401  (the command line's imports)
    from torch_geometric_sdt.datasets import synthetic_faces
    from torch_geometric_sdt.memory import address_space_reserve, estimate_memory

    if threads is not None:
        torch.set_num_threads(threads)
    x = np.asarray(synthetic_faces(num_nodes, dim=dim, seed=0)[0], np.float32)
    level_rss, level_vm = _status('VmRSS'), _status('VmSize')
    reserve = address_space_reserve()

    from torch_geometric_sdt.nn.knn import knn
    from torch_geometric_sdt.nn.models import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    if k != model.k:
        # Memory does not depend on the weights: the shipped architecture at
        # this k, untrained.
        model = SDTClusterer(**{**model.config, 'k': k})
    ctx = model.context(x, graph=knn(x, k))
    with open('/proc/self/clear_refs', 'w') as f:  # resets VmHWM
        f.write('5')
    peak_vm = [_status('VmSize')]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_vm[0] = max(peak_vm[0], _status('VmSize'))
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if batch_size is None:
        model.predict_topk(ctx)
    else:
        model.predict_topk(ctx, batch_size=batch_size)
    done.set()
    sampler.join()
    est = estimate_memory(num_nodes, dim, k, method='sdt')
    return {
        'num_nodes': num_nodes,
        'threads': torch.get_num_threads(),
        'rss_peak': (_status('VmHWM') - level_rss) / MIB,
        'vm_peak': (peak_vm[0] - level_vm) / MIB,
        'estimate_topk': est['topk'] / MIB,
        'reserve': reserve / MIB,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[20000, 100000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('-k', type=int, default=80)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--batch-size',
        type=int,
        default=None,
        help='nodes per predictor batch (default: the library default)',
    )
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(args.sizes[0], args.dim, args.k, args.threads, args.batch_size)
        print(json.dumps(row))
        return
    for n in args.sizes:
        cmd = [sys.executable, '-m', 'benchmarks.topk_memory', '--child']
        cmd += ['--sizes', str(n), '--dim', str(args.dim), '-k', str(args.k)]
        if args.threads is not None:
            cmd += ['--threads', str(args.threads)]
        if args.batch_size is not None:
            cmd += ['--batch-size', str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(' '.join(f'{key}={value:.0f}' for key, value in row.items()))


if __name__ == '__main__':
    main()
