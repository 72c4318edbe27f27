"""The ``sdt`` command line.

This is the only module that prints or exits. Every sub-command composes
library functions; a user error (bad file, bad option, bad data) is reported
as one line on stderr with exit status 2, never as a traceback. Outputs are
written atomically at the end of a command and never replace an existing file
without ``--overwrite``; an interrupted run (Ctrl-C or ``SIGTERM``, exit status
130) leaves no output and no temporary file behind.

.. code-block:: none

    sdt knn FEATURES -k 80 -o knn.npz
    sdt cluster FEATURES -o pred.meta --method infomap-knn --threshold 0.6
    sdt evaluate pred.meta labels.meta
    sdt demo
    sdt index create photos.sdtindex FEATURES --ids IDS
    sdt index add photos.sdtindex NEW_FEATURES --ids NEW_IDS
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import torch_geometric_sdt
from torch_geometric_sdt import io
from torch_geometric_sdt.baselines import cluster_knn, tune_threshold
from torch_geometric_sdt.datasets.regimes import REGIMES, parse_cell, regime_draw
from torch_geometric_sdt.defaults import BASELINE_METHODS, DEFAULT_K, METHODS
from torch_geometric_sdt.memory import (
    after_topk,
    available_memory,
    check_memory,
    estimate_memory,
)
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import BACKENDS, KNN, knn
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.utils.distributed import DEFAULT_BLOCK_ROWS, ENGINES, connect
from torch_geometric_sdt.utils.infomap import check_infomap_options
from torch_geometric_sdt.utils.mapped import readonly_mapping
from torch_geometric_sdt.utils.precision import PRECISIONS

_USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    ImportError,
    OSError,
)
# What to change when a stage runs out of memory, by the start of its name.
_MEMORY_ADVICE = {
    'kNN': 'a smaller -k, or --backend pynndescent',
    'cluster': 'a smaller -k, or --method infomap-knn',
    'train': 'fewer training items, or a smaller -k',
}


class _Reporter:
    """Stage timings on stderr, silenced by ``--quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.times: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.quiet:
            print(f'[sdt] {name} ...', file=sys.stderr, flush=True)
        t = time.perf_counter()
        self.current = name
        yield
        self.current = None
        self.times[name] = time.perf_counter() - t
        if not self.quiet:
            print(
                f'[sdt] {name} done in {self.times[name]:.2f} s',
                file=sys.stderr,
                flush=True,
            )


class _Parser(argparse.ArgumentParser):
    """An argument parser, and the class of its sub-command parsers, that
    takes no abbreviated options: ``--k 80`` must not be read as ``--knn 80``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault('allow_abbrev', False)
        super().__init__(*args, **kwargs)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument('-q', '--quiet', action='store_true', help='no progress output')


def _add_knn_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        '-k',
        type=int,
        default=None,
        help=f'neighbours per node, self included (default: {DEFAULT_K}; with '
        "--knn: the cache's, which must match -k when given)",
    )
    p.add_argument('--backend', default='auto', choices=BACKENDS, help='kNN backend')
    p.add_argument('--metric', default='cosine', choices=('cosine', 'l2'))
    p.add_argument(
        '--dim',
        type=int,
        default=None,
        help='feature dimension of a .bin file (default: from the labels file)',
    )
    p.add_argument(
        '--no-memory-check',
        action='store_true',
        help='skip the check that the estimated memory fits before starting',
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog='sdt',
        description='Noise-resilient clustering of embeddings (torch_geometric_sdt).',
    )
    parser.add_argument(
        '--version', action='version', version=torch_geometric_sdt.__version__
    )
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('knn', help='build a kNN cache (.npz, learn-to-cluster format)')
    p.add_argument('features', help='.npy, .npz or .bin features')
    p.add_argument('-o', '--output', required=True, help='output .npz')
    p.add_argument('--labels', default=None, help='.meta giving N for a .bin')
    _add_knn_options(p)
    p.add_argument('--overwrite', action='store_true')
    _add_common(p)

    p = sub.add_parser('cluster', help='cluster features; write one label per item')
    p.add_argument(
        'features',
        help='.npy, .npz or .bin features; with --engine ray also .parquet or a '
        'folder of .npy/.bin/.parquet parts',
    )
    p.add_argument('-o', '--output', required=True, help='.meta, .txt or .npy labels')
    p.add_argument(
        '--engine',
        default='local',
        choices=ENGINES,
        help='where the stages run: this process, or tasks on a Ray cluster '
        "(pip install 'torch_geometric_sdt[ray]')",
    )
    p.add_argument(
        '--address',
        default=None,
        help="--engine ray: the cluster to join (e.g. 'auto'; default: "
        'RAY_ADDRESS or a new local cluster)',
    )
    p.add_argument(
        '--column',
        default=None,
        help=f'the embedding column of Parquet features (default: {io.PARQUET_COLUMN})',
    )
    p.add_argument(
        '--shard-labels',
        default=None,
        metavar='DIR',
        help='--engine ray: also write one labels file per part into DIR',
    )
    p.add_argument('--method', default='infomap-knn', choices=METHODS)
    p.add_argument(
        '--model',
        default=None,
        help='SDT checkpoint for --method sdt (default: the shipped model)',
    )
    p.add_argument(
        '--threshold',
        type=float,
        default=None,
        help='the method threshold (infomap-knn: cosine; fc-es: theta; sdt: eta)',
    )
    p.add_argument(
        '--max-links',
        type=int,
        default=None,
        metavar='L',
        help='--method sdt: at most L links per node go to Infomap, a fixed '
        'pseudo-random subset (large identities: less memory and time; '
        'default: all)',
    )
    p.add_argument(
        '--precision',
        default=None,
        choices=PRECISIONS,
        help="--method sdt: the Top-K predictor's matrix products; bfloat16 "
        'is faster on CPUs with AVX-512 BF16 or AMX and moves a few Top-Ks; '
        'auto: bfloat16 on such CPUs, else float32 (default: float32)',
    )
    p.add_argument('--knn', default=None, help='a kNN cache .npz to reuse')
    p.add_argument('--labels', default=None, help='true labels: print metrics')
    p.add_argument('--infomap-seed', type=int, default=123, help='>= 1')
    _add_knn_options(p)
    p.add_argument('--overwrite', action='store_true')
    _add_common(p)

    p = sub.add_parser('train', help='train an SDT model on labelled features')
    p.add_argument('features', help='.npy, .npz or .bin features')
    p.add_argument('labels', help='identity labels (.meta, .txt, .npy)')
    p.add_argument('-o', '--output', required=True, help='checkpoint .safetensors')
    p.add_argument(
        '-k', type=int, default=DEFAULT_K, help='neighbours per node, self included'
    )
    p.add_argument('--mode', default='relational', choices=('relational', 'embedding'))
    p.add_argument('--topk-epochs', type=int, default=10)
    p.add_argument('--sdt-epochs', type=int, default=10)
    p.add_argument('--max-steps-per-epoch', type=int, default=None)
    p.add_argument('--val-fraction', type=float, default=0.2)
    p.add_argument('--checkpoint-dir', default=None, help='per-epoch training state')
    p.add_argument(
        '--resume', action='store_true', help='continue from --checkpoint-dir'
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--dim', type=int, default=None, help='feature dimension of a .bin')
    p.add_argument('--overwrite', action='store_true')
    _add_common(p)

    p = sub.add_parser('evaluate', help='compare predicted with true labels')
    p.add_argument('pred', help='predicted labels (.meta, .txt, .npy)')
    p.add_argument('true', help='true labels (.meta, .txt, .npy)')
    p.add_argument('--json', action='store_true', help='print JSON')
    _add_common(p)

    _add_index_parser(sub)

    p = sub.add_parser(
        'demo', help='cluster generated demo faces with every method; print metrics'
    )
    p.add_argument('--num-samples', type=int, default=10_000)
    p.add_argument(
        '--regimes',
        nargs='+',
        default=['lfw', 'photo_library'],
        metavar='LAW[:COSINE]',
        help='data regimes to draw, one table each (datasets.regime_draw; '
        'default: lfw photo_library)',
    )
    p.add_argument(
        '--methods',
        nargs='+',
        default=list(METHODS),
        choices=METHODS,
        help='methods to compare (default: all)',
    )
    p.add_argument('--model', default=None, help='SDT checkpoint (default: shipped)')
    p.add_argument('-k', type=int, default=DEFAULT_K)
    p.add_argument(
        '--seed',
        type=int,
        default=1,
        help='seed of the demo faces (the shipped model was trained on seeds '
        'from 10000)',
    )
    p.add_argument('--infomap-seed', type=int, default=123, help='>= 1')
    p.add_argument('--json', action='store_true', help='print JSON')
    _add_common(p)
    return parser


def _add_index_parser(sub: Any) -> None:
    p = sub.add_parser(
        'index', help='a persistent index of clustered faces: add and remove faces'
    )
    isub = p.add_subparsers(dest='index_command', required=True)
    q = isub.add_parser('create', help='cluster FEATURES into a new index DIR')
    q.add_argument('dir', help='the index directory (must not exist, or be empty)')
    q.add_argument('features', help='.npy, .npz or .bin features')
    q.add_argument('--ids', default=None, help='one id per line (default: row numbers)')
    q.add_argument('--method', default='sdt', choices=METHODS)
    q.add_argument('--model', default=None, help='SDT checkpoint (default: shipped)')
    q.add_argument(
        '--threshold',
        type=float,
        default=None,
        help='the method threshold (infomap-knn: cosine; fc-es: theta; sdt: eta)',
    )
    q.add_argument(
        '-k', type=int, default=None, help="list length (sdt: the model's; else 80)"
    )
    q.add_argument('--backend', default='auto', choices=BACKENDS, help='kNN backend')
    q.add_argument('--dim', type=int, default=None, help='feature dimension of a .bin')
    q.add_argument('--infomap-seed', type=int, default=123, help='>= 1')
    _add_common(q)
    q = isub.add_parser('add', help='add the faces of FEATURES to the index DIR')
    q.add_argument('dir')
    q.add_argument('features', help='.npy, .npz or .bin features')
    q.add_argument('--ids', default=None, help='one id per line (default: row numbers)')
    q.add_argument('--dim', type=int, default=None, help='feature dimension of a .bin')
    _add_common(q)
    q = isub.add_parser('remove', help='remove the faces listed in IDS from DIR')
    q.add_argument('dir')
    q.add_argument('ids', help='a file of ids, one per line')
    _add_common(q)
    q = isub.add_parser('export', help='write id,cluster of every face as CSV')
    q.add_argument('dir')
    q.add_argument('-o', '--output', required=True, help='labels .csv')
    q.add_argument('--overwrite', action='store_true')
    _add_common(q)
    q = isub.add_parser('info', help='print what the index holds')
    q.add_argument('dir')
    q.add_argument('--json', action='store_true', help='print JSON')
    _add_common(q)


def _format_metrics(metrics: dict[str, Any]) -> str:
    width = max(len(k) for k in metrics)
    lines = []
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f'{key:<{width}}  {value:.4f}')
        else:
            lines.append(f'{key:<{width}}  {value}')
    return '\n'.join(lines)


def _print_metrics(metrics: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        print(_format_metrics(metrics))


def _load_features(args: argparse.Namespace) -> np.ndarray:
    dim = args.dim
    labels = getattr(args, 'labels', None)
    if dim is None and str(args.features).endswith('.bin') and labels is not None:
        # N from the labels file, D from the size of the .bin:
        num = len(io.load_labels(labels))
        size = os.path.getsize(args.features) if os.path.exists(args.features) else 0
        if size > 0 and size % (4 * num) != 0:
            raise ValueError(
                f'{args.features} holds {size} bytes, which is not N * D * 4 '
                f'for the N={num} labels of {labels} (truncated or mismatched '
                'file? pass --dim to check the file alone)'
            )
        if size > 0:
            dim = size // (4 * num)
    return io.load_features(args.features, dim=dim)


def _check_output(args: argparse.Namespace, *inputs: str | None) -> None:
    """Refuses, before any work, an output that cannot be written or that is
    one of the command's inputs (``--overwrite`` would destroy it)."""
    io.check_writable(args.output, overwrite=args.overwrite)
    out = os.path.realpath(args.output)
    for path in inputs:
        if path is not None and os.path.realpath(path) == out:
            raise ValueError(f'the output {args.output} is also an input ({path})')


def _k(args: argparse.Namespace) -> int:
    # -k as given, else the default (a kNN cache read with --knn keeps its own).
    return DEFAULT_K if args.k is None else args.k


def _load_model(args: argparse.Namespace) -> Any:
    from torch_geometric_sdt.nn.models import SDTClusterer

    model = SDTClusterer.load(args.model or default_model_path())
    model.precision = getattr(args, 'precision', None) or 'float32'
    return model


def _run_method(
    args: argparse.Namespace,
    method: str,
    threshold: float | None,
    graph: KNN | None,
    x: Any | None = None,
    model: Any | None = None,
) -> torch.Tensor:
    # graph is None where the SDT model builds its own from x (and frees it
    # with its context before Infomap).
    if method != 'sdt':
        assert graph is not None
        params: dict[str, Any] = {'seed': args.infomap_seed}
        if threshold is not None:
            params['threshold'] = threshold
        return cluster_knn(
            graph, method=method, engine=getattr(args, 'engine', 'local'), **params
        )
    model = _load_model(args) if model is None else model
    if graph is not None and graph.k != model.k:
        raise ValueError(f'the SDT model needs k = {model.k} (got -k {graph.k})')
    # x goes as it is: a relational model reads only a sample of its rows
    # (the noise reference), so a memory-mapped x is never copied whole.
    return model.cluster(
        x,
        graph=graph,
        backend=getattr(args, 'backend', 'auto'),
        eta=threshold,
        seed=args.infomap_seed,
        progress=not args.quiet,
        engine=getattr(args, 'engine', 'local'),
        on_topk=_topk_memory_check(args, x, model.k),
        max_links=getattr(args, 'max_links', None),
    )


def _build_knn(args: argparse.Namespace, rep: _Reporter, x: Any, k: int) -> KNN:
    backend = getattr(args, 'backend', 'auto')
    metric = getattr(args, 'metric', 'cosine')
    with rep.stage(f'kNN (k={k}, backend={backend})'):
        with warnings.catch_warnings():
            # Memory-mapped inputs are read-only; knn never writes to them.
            warnings.filterwarnings('ignore', message='The given NumPy array')
            return knn(x, k, metric=metric, backend=backend, progress=not args.quiet)


def _estimate(
    args: argparse.Namespace,
    x: Any,
    method: str | None,
    k: int,
    mean_topk: float | None = None,
) -> dict[str, int]:
    """The stages of the run (``estimate_memory``, the kNN graph alone for
    :obj:`method` :obj:`None`) with their ``'peak'``."""
    num_nodes, dim = x.shape
    cached = getattr(args, 'knn', None) is not None
    # The graph stays alive to the end when it is read from a cache or built
    # here (any metric but cosine; _cmd_cluster leaves a cosine one to the
    # SDT model, which frees it before Infomap):
    kept = cached or getattr(args, 'metric', 'cosine') != 'cosine'

    def estimate(graph_given: bool) -> dict[str, int]:
        return estimate_memory(
            num_nodes,
            dim,
            k,
            method=method or 'infomap-knn',
            backend=args.backend,
            mean_topk=mean_topk,
            mapped=readonly_mapping(x) is not None,
            graph_given=graph_given,
            max_links=getattr(args, 'max_links', None) if method == 'sdt' else None,
        )

    est = estimate(kept)
    if kept and not cached:  # built here, then kept
        est['knn'] = estimate(False)['knn']
    if method is None:
        est = {'knn': est['knn']}
    est.pop('peak', None)
    est['peak'] = max(est.values())
    return est


def _check_memory(args: argparse.Namespace, x: Any, method: str | None, k: int) -> None:
    """Refuses a run whose estimated memory does not fit (``--no-memory-check``
    skips it); :obj:`method` is :obj:`None` for the kNN graph alone."""
    if args.no_memory_check:
        return
    try:
        check_memory(_estimate(args, x, method, k))
    except MemoryError as e:  # A refusal before any work, not a failure.
        raise ValueError(str(e)) from None


def _topk_memory_check(
    args: argparse.Namespace, x: Any, k: int
) -> Callable[[torch.Tensor], None] | None:
    """The check :meth:`SDTClusterer.cluster` runs once the Top-K is known.

    The check before the run assumes a mean Top-K of :math:`k / 4`; data
    with large identities get a much larger one (about 70 of 80 on
    MS-Celeb-like identity sizes), and the stages after the Top-K grow with
    it. This one estimates those stages at the predicted mean and refuses
    the run before them if they do not fit in what is available now plus
    what the run holds already (the ``topk`` stage less its batch).
    """
    # Commands without --no-memory-check (the demo) and the Ray engine, whose
    # driver holds other things, do not check:
    if (
        getattr(args, 'no_memory_check', True)
        or getattr(args, 'engine', 'local') != 'local'
    ):
        return None
    num_nodes = x.shape[0]

    def check(topk: torch.Tensor) -> None:
        mean_topk = max(1.0, float(topk.float().mean())) if topk.numel() else 1.0
        est = _estimate(args, x, 'sdt', k, mean_topk=mean_topk)
        later, held = after_topk(est, num_nodes, k)
        available, source = available_memory()
        source = f'{source}, and the {held / 2**30:.2f} GiB this run holds now'
        try:
            check_memory(later, available=available + held, source=source)
        except MemoryError as e:
            raise ValueError(
                f'the predicted Top-K averages {mean_topk:.1f} per node (the '
                f'check before the run assumed {k / 4:g}), and at that {e}'
            ) from None

    return check


def _cmd_knn(args: argparse.Namespace, rep: _Reporter) -> int:
    _check_output(args, args.features, args.labels)
    with rep.stage('load features'):
        x = _load_features(args)
    _check_memory(args, x, None, _k(args))
    graph = _build_knn(args, rep, x, _k(args))
    with rep.stage('write'):
        io.write_knn(args.output, graph, overwrite=args.overwrite)
    return 0


def _cluster_inputs(
    args: argparse.Namespace, rep: _Reporter
) -> tuple[Any | None, np.ndarray | None]:
    """Checks the options of ``sdt cluster`` that both engines share and
    loads the SDT model (for ``--method sdt``) and the true labels (with
    ``--labels``)."""
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f'--threshold must lie in [0, 1] (got {args.threshold})')
    check_infomap_options(args.infomap_seed, 1)
    if args.max_links is not None:
        if args.method != 'sdt':
            raise ValueError('--max-links is an option of --method sdt')
        if args.max_links < 1:
            raise ValueError(f'--max-links must be at least 1 (got {args.max_links})')
    if args.precision is not None and args.method != 'sdt':
        raise ValueError('--precision is an option of --method sdt')
    if args.metric != 'cosine':
        raise ValueError(
            f'--metric {args.metric}: every method thresholds cosine '
            'similarities; cluster with --metric cosine (the default)'
        )
    model = _load_model(args) if args.method == 'sdt' else None
    if model is not None and args.k is not None and args.k != model.k:
        raise ValueError(f'the SDT model needs k = {model.k} (got -k {args.k})')
    true = None
    if args.labels is not None:
        with rep.stage('load labels'):
            true = io.load_labels(args.labels)
    return model, true


def _cmd_cluster(args: argparse.Namespace, rep: _Reporter) -> int:
    if args.engine == 'ray':
        return _cluster_ray(args, rep)
    for option in ('address', 'column', 'shard_labels'):
        if getattr(args, option) is not None:
            raise ValueError(
                f'--{option.replace("_", "-")} is an option of --engine ray'
            )
    _check_output(args, args.features, args.labels, args.knn, args.model)
    model, true = _cluster_inputs(args, rep)
    with rep.stage('load features'):
        x = _load_features(args)
    if true is not None and len(true) != len(x):
        raise ValueError(
            f'{args.labels} has {len(true)} labels but {args.features} has '
            f'{len(x)} rows'
        )
    # The SDT model's own k unless -k says otherwise (and then they must agree):
    k = model.k if model is not None and args.k is None else _k(args)
    _check_memory(args, x, args.method, k)
    graph: KNN | None = None
    if args.knn is not None:
        with rep.stage('read kNN cache'):
            graph = io.read_knn(args.knn, num_nodes=len(x), k=args.k)
    elif args.method != 'sdt' or args.metric != 'cosine':
        graph = _build_knn(args, rep, x, k)
    # else the SDT model builds the cosine kNN graph itself, so that it goes
    # with the model's context before Infomap (12 bytes per entry: 5 GB at
    # 5.21M faces and k = 80) instead of staying here.
    with rep.stage(f'cluster ({args.method})'):
        pred = _run_method(args, args.method, args.threshold, graph, x, model)
    # Scored before writing, so that bad labels leave no output behind:
    metrics = None if true is None else evaluate(pred, true)
    with rep.stage('write'):
        io.save_labels(args.output, pred.cpu().numpy(), overwrite=args.overwrite)
    if metrics is not None:
        _print_metrics(metrics, as_json=False)
    return 0


def _cluster_ray(args: argparse.Namespace, rep: _Reporter) -> int:
    """``sdt cluster --engine ray``: the features stay in their files (parts
    read by the tasks); the driver writes the labels."""
    _check_output(args, args.features, args.labels, args.knn, args.model)
    if args.shard_labels is not None and os.path.exists(args.shard_labels):
        if not args.overwrite:
            raise ValueError(f'{args.shard_labels} exists (pass --overwrite)')
    if args.backend not in ('auto', 'exact'):
        raise ValueError(
            f'--engine ray searches exactly: --backend must be auto or exact '
            f'(got {args.backend})'
        )
    model, true = _cluster_inputs(args, rep)
    with rep.stage('read part headers'):
        shards = io.feature_shards(
            args.features,
            dim=args.dim,
            column=args.column,
            rows_per_part=DEFAULT_BLOCK_ROWS,
        )
    if true is not None and len(true) != shards.num_rows:
        raise ValueError(
            f'{args.labels} has {len(true)} labels but {args.features} has '
            f'{shards.num_rows} rows'
        )
    k = model.k if model is not None and args.k is None else _k(args)
    with rep.stage('connect to Ray'):
        connect(args.address)
    graph: KNN
    if args.knn is not None:
        with rep.stage('read kNN cache'):
            graph = io.read_knn(args.knn, num_nodes=shards.num_rows, k=args.k)
    else:
        with rep.stage(f'kNN (k={k}, sharded exact search on Ray)'):
            graph = knn(shards, k, engine='ray', progress=not args.quiet)
    with rep.stage(f'cluster ({args.method}, Ray)'):
        pred = _run_method(args, args.method, args.threshold, graph, shards, model)
    metrics = None if true is None else evaluate(pred, true)
    with rep.stage('write'):
        io.save_labels(args.output, pred.cpu().numpy(), overwrite=args.overwrite)
        if args.shard_labels is not None:
            io.save_shard_labels(
                args.shard_labels,
                pred.cpu().numpy(),
                shards,
                suffix=Path(args.output).suffix,
                overwrite=args.overwrite,
            )
    if metrics is not None:
        _print_metrics(metrics, as_json=False)
    return 0


def _cmd_train(args: argparse.Namespace, rep: _Reporter) -> int:
    from torch_geometric_sdt.nn.models import SDTClusterer
    from torch_geometric_sdt.train import fit

    _check_output(args, args.features, args.labels)
    with rep.stage('load'):
        y = io.load_labels(args.labels)
        x = _load_features(args)
    if len(y) != len(x):
        raise ValueError(
            f'{args.labels} has {len(y)} labels but {args.features} has {len(x)} rows'
        )
    model = SDTClusterer(
        k=args.k,
        mode=args.mode,
        embedding_channels=x.shape[1] if args.mode == 'embedding' else None,
    )
    with rep.stage('train'):
        summary = fit(
            model,
            np.asarray(x, dtype=np.float32),
            y,
            topk_epochs=args.topk_epochs,
            sdt_epochs=args.sdt_epochs,
            max_steps_per_epoch=args.max_steps_per_epoch,
            val_fraction=args.val_fraction,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            seed=args.seed,
            progress=not args.quiet,
        )
    with rep.stage('write'):
        model.save(
            args.output,
            overwrite=args.overwrite,
            extra={k: summary[k] for k in ('data', 'eta', 'val_topk_mae')},
        )
    if not args.quiet:
        print(
            f'eta = {summary["eta"]:.2f}, validation Top-K MAE = '
            f'{summary["val_topk_mae"]:.2f}; saved {args.output}'
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace, rep: _Reporter) -> int:
    pred = io.load_labels(args.pred)
    true = io.load_labels(args.true)
    if len(pred) != len(true):
        raise ValueError(
            f'{args.pred} has {len(pred)} labels but {args.true} has {len(true)}'
        )
    _print_metrics(evaluate(pred, true), as_json=args.json)
    return 0


def _cmd_demo(args: argparse.Namespace, rep: _Reporter) -> int:
    check_infomap_options(args.infomap_seed, 1)
    cells = {cell: parse_cell(cell) for cell in args.regimes}  # all checked first
    results = {cell: _demo_cell(args, rep, *cells[cell]) for cell in cells}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for i, (cell, table) in enumerate(results.items()):
        if i:
            print()
        _print_demo_table(args, cell, table)
    return 0


def _demo_cell(
    args: argparse.Namespace, rep: _Reporter, law: str, cosine: str
) -> dict[str, Any]:
    # One regime of the demo: a scored draw and a separate tuning draw.
    n = args.num_samples
    with rep.stage(f'generate {n} demo faces ({law}:{cosine}, seed {args.seed})'):
        x, y = regime_draw(law, n, seed=args.seed, cosine=cosine)
    graph = _build_knn(args, rep, x, args.k)
    train_graph = None
    results: dict[str, Any] = {}
    for method in args.methods:
        threshold = None
        if method in BASELINE_METHODS:
            # Baseline thresholds are chosen on another labelled draw (other
            # identities), never on the faces that are scored:
            if train_graph is None:
                with rep.stage('generate a separate labelled draw for tuning'):
                    xt, yt = regime_draw(law, n, seed=args.seed + 1, cosine=cosine)
                    train_graph = knn(xt, args.k)
            with rep.stage(f'tune the {method} threshold on that draw'):
                threshold, _ = tune_threshold(
                    train_graph, yt, method, seed=args.infomap_seed
                )
        with rep.stage(f'cluster ({method})'):
            pred = _run_method(args, method, threshold, graph, x)
        results[method] = {
            'threshold': threshold,
            **evaluate(pred, y),
            'seconds': rep.times[f'cluster ({method})'],
        }
    results['ground_truth'] = {
        'identities': int(y.unique().numel()),
        'singletons': int((torch.bincount(y) == 1).sum()),
    }
    return results


def _print_demo_table(args: argparse.Namespace, cell: str, table: dict) -> None:
    law, _ = parse_cell(cell)
    print(
        f'{cell}: {args.num_samples} demo faces ({REGIMES[law]}), k = {args.k}; '
        'baseline thresholds chosen on a separate labelled draw, sdt with its own '
        'eta'
    )
    head = (
        'method',
        'threshold',
        'pairwise F',
        'BCubed F',
        'NMI',
        'clusters',
        'singletons',
        'seconds',
    )
    rows = [
        (
            method,
            '-' if r['threshold'] is None else f'{r["threshold"]:g}',
            f'{r["pairwise_fscore"]:.4f}',
            f'{r["bcubed_fscore"]:.4f}',
            f'{r["nmi"]:.4f}',
            str(r['num_clusters']),
            str(r['num_singletons']),
            f'{r["seconds"]:.1f}',
        )
        for method, r in table.items()
        if method != 'ground_truth'
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)))
    truth = table['ground_truth']
    print(
        f'ground truth: {truth["identities"]} identities, '
        f'{truth["singletons"]} singletons'
    )


def _cmd_index(args: argparse.Namespace, rep: _Reporter) -> int:
    from torch_geometric_sdt.index import ClusterIndex

    action = args.index_command
    if action == 'create':
        check_infomap_options(args.infomap_seed, 1)
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise ValueError(f'--threshold must lie in [0, 1] (got {args.threshold})')
        with rep.stage('load features'):
            x = io.load_features(args.features, dim=args.dim)
            ids = None if args.ids is None else io.load_ids(args.ids, len(x))
        with rep.stage(f'cluster ({args.method}) and create the index'):
            index = ClusterIndex.create(
                args.dir,
                x,
                ids,
                args.method,
                model=args.model if args.method == 'sdt' else None,
                threshold=args.threshold,
                k=args.k,
                backend=args.backend,
                seed=args.infomap_seed,
                progress=not args.quiet,
            )
        index.close()
    elif action == 'add':
        with rep.stage('load features'):
            x = io.load_features(args.features, dim=args.dim)
            ids = None if args.ids is None else io.load_ids(args.ids, len(x))
        with ClusterIndex.open(args.dir) as index, rep.stage('add'):
            index.add(x, ids, progress=not args.quiet)
    elif action == 'remove':
        ids = io.load_ids(args.ids)
        with ClusterIndex.open(args.dir) as index, rep.stage('remove'):
            index.remove(ids, progress=not args.quiet)
    elif action == 'export':
        io.check_writable(args.output, overwrite=args.overwrite)
        with ClusterIndex.open(args.dir, writable=False) as index:
            io.save_id_labels(
                args.output, index.ids(), index.labels(), overwrite=args.overwrite
            )
    else:
        with ClusterIndex.open(args.dir, writable=False) as index:
            info = index.info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            width = max(len(key) for key in info)
            for key, value in info.items():
                print(f'{key:<{width}}  {value}')
    return 0


_COMMANDS = {
    'knn': _cmd_knn,
    'cluster': _cmd_cluster,
    'train': _cmd_train,
    'evaluate': _cmd_evaluate,
    'demo': _cmd_demo,
    'index': _cmd_index,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    rep = _Reporter(args.quiet)
    # SIGTERM unwinds like Ctrl-C, so that a file being written is removed:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, args.command)
            return _COMMANDS[args.command](args, rep)
    except (MemoryError, torch.OutOfMemoryError) as e:
        print(_memory_message(args.command, rep.current, e), file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _is_allocation_failure(e):
            raise
        print(_memory_message(args.command, rep.current, e), file=sys.stderr)
        return 2
    except _USER_ERRORS as e:
        print(f'sdt {args.command}: error: {_one_line(e)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'sdt {args.command}: interrupted', file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split())


def _show_warning(
    command: str,
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    # Warnings as one line each, like errors.
    print(f'sdt {command}: warning: {_one_line(message)}', file=sys.stderr)


def _is_allocation_failure(error: RuntimeError) -> bool:
    text = str(error)
    return "can't allocate memory" in text or 'out of memory' in text.lower()


def _memory_message(command: str, stage: str | None, error: BaseException) -> str:
    where = f' during {stage}' if stage else ''
    advice = next(
        (tip for name, tip in _MEMORY_ADVICE.items() if (stage or '').startswith(name)),
        'a smaller -k or a smaller input',
    )
    return (
        f'sdt {command}: error: out of memory{where} '
        f'({type(error).__name__}); try {advice}'
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == '__main__':
    raise SystemExit(main())
