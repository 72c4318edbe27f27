r"""Bad input: every case raises an error that names the problem and writes
nothing.

Each file, array and option case runs through the Python API and, where the
command line has a path for it, through ``sdt`` (:func:`cli.main`): exit status
2, one line on stderr naming the problem, and neither the output nor a
temporary file left behind. Graph cases (``edge_index``, kNN lists, per-node
Top-K) have no command-line path except through a kNN cache file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torch_geometric_sdt import io
from torch_geometric_sdt.baselines import cluster_knn, fc_es, infomap_knn
from torch_geometric_sdt.cli import main
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer
from torch_geometric_sdt.train import fit
from torch_geometric_sdt.utils import infomap, topk_jaccard

N, D, K = 120, 16, 8


@pytest.fixture(scope='module')
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    x, y = synthetic_faces(N, dim=D, seed=3)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    root = tmp_path_factory.mktemp('good')
    np.save(root / 'x.npy', x)
    io.save_labels(root / 'y.meta', y)
    graph = knn(x, K)
    io.write_knn(root / 'knn.npz', graph)
    return {'root': root, 'x': x, 'y': y, 'knn': graph}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse rejects an option itself
        rc = int(e.code)
    return rc, capsys.readouterr().err


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    left = [p.name for p in out.parent.iterdir() if '.tmp' in p.name]
    assert left == [], f'temporary files left behind: {left}'


# Files, arrays and options through the command line ##########################


def _npy(tmp: Path, name: str, array: np.ndarray) -> str:
    np.save(tmp / name, array)
    return str(tmp / name)


def _bin(tmp: Path, x: np.ndarray, trim: int = 0, name: str = 'f.bin') -> str:
    data = np.ascontiguousarray(x, dtype='<f4').tobytes()
    (tmp / name).write_bytes(data[: len(data) - trim])
    return str(tmp / name)


def _meta(tmp: Path, text: str, name: str = 'labels.meta') -> str:
    (tmp / name).write_text(text)
    return str(tmp / name)


def _knn_file(tmp: Path, data: np.ndarray) -> str:
    np.savez(tmp / 'cache.npz', data=data)
    return str(tmp / 'cache.npz')


def _knn_array(
    graph: KNN, id: float | None = None, dist: float | None = None
) -> np.ndarray:
    # The learn-to-cluster layout, with one entry (node 3, rank 2) spoilt.
    data = np.stack([graph.index.numpy(), 1 - graph.sim.numpy()], axis=1)
    if id is not None:
        data[3, 0, 2] = id
    if dist is not None:
        data[3, 1, 2] = dist
    return data


def _with(x: np.ndarray, row: int, value: float) -> np.ndarray:
    x = x.copy()
    x[row] = value
    return x


# Each case: (id, build(tmp, good) -> argv after 'sdt', regex the message has).
CLI_CASES: list[tuple[str, Callable[[Path, dict], list[str]], str]] = [
    ('missing file', lambda t, g: ['cluster', str(t / 'nope.npy')], 'no such file'),
    (
        'empty .bin',
        lambda t, g: ['cluster', _bin(t, g['x'][:0]), '--dim', '16'],
        'is empty',
    ),
    (
        'truncated .bin',
        lambda t, g: ['cluster', _bin(t, g['x'], trim=3), '--dim', '16'],
        'not divisible by 4',
    ),
    (
        '.bin size not 4*D',
        lambda t, g: ['cluster', _bin(t, g['x']), '--dim', '7'],
        r'divisible by 4 \* dim = 28',
    ),
    (
        '.bin D does not match labels count',
        lambda t, g: [
            'cluster',
            _bin(t, g['x']),
            '--labels',
            _meta(t, '0\n' * (N + 1)),
        ],
        rf'not N \* D \* 4 for the N={N + 1} labels',
    ),
    (
        '.bin without dim or labels',
        lambda t, g: ['cluster', _bin(t, g['x'])],
        'pass dim=',
    ),
    (
        '.meta with a non-integer',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--labels',
            _meta(t, '0\n1\nbob\n' + '0\n' * (N - 3)),
        ],
        "line 3: .*'bob'",
    ),
    (
        '.meta with a float',
        lambda t, g: ['evaluate', _meta(t, '0\n1.5\n', 'p.meta'), _meta(t, '0\n1\n')],
        "line 2: .*'1.5'",
    ),
    (
        '.npy of integers',
        lambda t, g: ['cluster', _npy(t, 'i.npy', np.zeros((N, D), np.int64))],
        'floating point',
    ),
    (
        '.npy of rank 1',
        lambda t, g: ['cluster', _npy(t, 'r.npy', np.zeros(N, np.float32))],
        '2-D',
    ),
    (
        '.npy of rank 3',
        lambda t, g: ['cluster', _npy(t, 'r3.npy', np.zeros((N, 2, 8), np.float32))],
        '2-D',
    ),
    (
        'labels .npy of floats',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--labels',
            _npy(t, 'yf.npy', np.zeros(N, np.float32)),
        ],
        'must be integers',
    ),
    (
        'not a .npy file',
        lambda t, g: ['cluster', str(_meta(t, 'hello', 'junk.npy'))],
        'not a valid .npy',
    ),
    (
        'unknown extension',
        lambda t, g: ['cluster', _meta(t, '1,2', 'x.csv')],
        "extension '.csv'",
    ),
    (
        'kNN cache with another k',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            str(g['root'] / 'knn.npz'),
            '-k',
            str(K + 2),
        ],
        f'lists of length {K}, expected k={K + 2}',
    ),
    (
        'kNN cache with another N',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            _knn_file(t, _knn_array(knn(g['x'][: N // 2], K))),
        ],
        f'lists {N // 2} nodes, expected num_nodes={N}',
    ),
    (
        'kNN cache with ids out of range',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            _knn_file(t, _knn_array(g['knn'], id=N)),
        ],
        rf'must lie in \[0, {N}\) \(found range \[0, {N}\]\)',
    ),
    (
        'kNN cache with negative ids',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            _knn_file(t, _knn_array(g['knn'], id=-1)),
        ],
        rf'must lie in \[0, {N}\) \(found range \[-1, ',
    ),
    (
        'kNN cache with NaN distances',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            _knn_file(t, _knn_array(g['knn'], dist=np.nan)),
        ],
        'distances in .* must be finite',
    ),
    (
        'kNN cache of rank 2',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            _knn_file(t, np.zeros((N, K))),
        ],
        r'shape \[N, 2, k\]',
    ),
    (
        'NaN in features',
        lambda t, g: ['cluster', _npy(t, 'nan.npy', _with(g['x'], 5, np.nan))],
        r'NaN or Inf .*row 5',
    ),
    (
        'Inf in features',
        lambda t, g: ['cluster', _npy(t, 'inf.npy', _with(g['x'], 7, np.inf))],
        r'NaN or Inf .*row 7',
    ),
    (
        'zero vector',
        lambda t, g: ['cluster', _npy(t, 'zero.npy', _with(g['x'], 9, 0.0))],
        r'zero row.*row 9',
    ),
    (
        'N = 0',
        lambda t, g: ['cluster', _npy(t, 'n0.npy', np.zeros((0, D), np.float32))],
        'empty',
    ),
    (
        'N = 1',
        lambda t, g: ['cluster', _npy(t, 'n1.npy', g['x'][:1]), '-k', '1'],
        r'smaller than the number of points \(1\)',
    ),
    (
        'N <= k',
        lambda t, g: ['cluster', _npy(t, 'small.npy', g['x'][:K]), '-k', str(K)],
        rf'k={K} must be smaller than the number of points \({K}\)',
    ),
    (
        'labels of the wrong length',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '-k',
            str(K),
            '--labels',
            _meta(t, '0\n' * (N - 1)),
        ],
        f'has {N - 1} labels but',
    ),
    (
        'negative labels other than -1',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '-k',
            str(K),
            '--labels',
            _meta(t, '-7\n' + '0\n' * (N - 1)),
        ],
        'negative class id -7',
    ),
    (
        'negative training labels',
        lambda t, g: [
            'train',
            str(g['root'] / 'x.npy'),
            _meta(t, '-2\n' * N),
            '-k',
            str(K),
        ],
        'non-negative',
    ),
    (
        'negative training epochs',
        lambda t, g: [
            'train',
            str(g['root'] / 'x.npy'),
            str(g['root'] / 'y.meta'),
            '--topk-epochs',
            '-1',
        ],
        'topk_epochs must be an integer >= 0',
    ),
    (
        'k = 0',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '-k', '0'],
        r'k must be (a )?positive',
    ),
    (
        'k < 0',
        lambda t, g: ['knn', str(g['root'] / 'x.npy'), '-k', '-3'],
        r'k must be (a )?positive',
    ),
    (
        'threshold > 1',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '--threshold', '1.5'],
        r'\[0, 1\]',
    ),
    (
        'threshold < 0',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--method',
            'fc-es',
            '--threshold',
            '-0.1',
        ],
        r'\[0, 1\]',
    ),
    (
        'threshold NaN',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--method',
            'sdt',
            '--threshold',
            'nan',
        ],
        r'\[0, 1\]',
    ),
    (
        'unknown method',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '--method', 'kmeans'],
        "invalid choice: 'kmeans'",
    ),
    (
        'unknown backend',
        lambda t, g: ['knn', str(g['root'] / 'x.npy'), '--backend', 'annoy'],
        "invalid choice: 'annoy'",
    ),
    (
        'unknown metric',
        lambda t, g: ['knn', str(g['root'] / 'x.npy'), '--metric', 'manhattan'],
        "invalid choice: 'manhattan'",
    ),
    (
        'SDT model k differs from -k',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--method',
            'sdt',
            '-k',
            str(K),
        ],
        f'needs k = 80 \\(got -k {K}\\)',
    ),
]


@pytest.mark.parametrize(
    'build,match', [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_refuses(tmp_path, good, capsys, build, match):
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    argv = build(tmp_path, good)
    if argv[0] == 'evaluate':
        out = out_dir / 'never.txt'  # evaluate writes nothing at all
    else:
        out = out_dir / ('model.safetensors' if argv[0] == 'train' else 'out.npz')
        if argv[0] == 'cluster':
            out = out_dir / 'pred.meta'
        argv += ['-o', str(out)]
    rc, err = _run(argv + ['-q'], capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert 'Traceback' not in err
    assert any(re.search(match, line) for line in lines), err
    if 'invalid choice' not in match:  # argparse prints usage first
        assert len(lines) == 1, err
    _assert_nothing_written(out)


def test_cli_overwrite_guard_runs_before_any_work(tmp_path, good, capsys):
    # The existing output is reported before the (bad) features are even read.
    out = tmp_path / 'pred.meta'
    out.write_text('keep\n')
    rc, err = _run(['cluster', str(tmp_path / 'nope.npy'), '-o', str(out)], capsys)
    assert rc == 2 and 'exists' in err and '--overwrite' in err
    assert out.read_text() == 'keep\n'


def test_cli_knn_cache_without_k_uses_the_cache(tmp_path, good, capsys):
    out = tmp_path / 'pred.meta'
    argv = [
        'cluster',
        str(good['root'] / 'x.npy'),
        '--knn',
        str(good['root'] / 'knn.npz'),
        '-o',
        str(out),
        '-q',
    ]
    assert _run(argv, capsys)[0] == 0
    assert len(io.load_labels(out)) == N


def test_cli_bin_dimension_from_labels(tmp_path, good, capsys):
    path = _bin(tmp_path, good['x'])
    out = tmp_path / 'pred.meta'
    argv = [
        'cluster',
        path,
        '--labels',
        str(good['root'] / 'y.meta'),
        '-k',
        str(K),
        '-o',
        str(out),
        '-q',
    ]
    assert _run(argv, capsys)[0] == 0
    assert len(io.load_labels(out)) == N


# The same cases through the Python API ######################################


def _load_bin_with_meta(tmp: Path, x: np.ndarray, num: int) -> Any:
    io.save_labels(tmp / 'f.meta', np.zeros(num, dtype=np.int64))
    return io.load_features(_bin(tmp, x))


def _bad_topk(good: dict, topk: Any) -> Any:
    return topk_jaccard(good['knn'], topk=topk)


def _model() -> SDTClusterer:
    return SDTClusterer(k=K, hidden_channels=8, predictor_channels=8, heads=2)


# Each case: (id, call(tmp, good), exception type, regex of the message).
API_CASES: list[tuple[str, Callable[[Path, dict], Any], type, str]] = [
    # Files
    (
        'missing file',
        lambda t, g: io.load_features(t / 'x.npy'),
        FileNotFoundError,
        'no such file',
    ),
    ('directory', lambda t, g: io.load_labels(t), IsADirectoryError, 'directory'),
    ('empty .meta', lambda t, g: io.load_labels(_meta(t, '')), ValueError, 'empty'),
    (
        'truncated .bin',
        lambda t, g: io.load_features(_bin(t, g['x'], trim=4), dim=D),
        ValueError,
        'truncated',
    ),
    (
        '.bin size not 4*D',
        lambda t, g: io.load_features(_bin(t, g['x']), dim=7),
        ValueError,
        r'4 \* dim = 28',
    ),
    (
        '.bin D does not match .meta',
        lambda t, g: _load_bin_with_meta(t, g['x'], N + 1),
        ValueError,
        rf'N={N + 1} lines',
    ),
    (
        'dim <= 0',
        lambda t, g: io.load_features(_bin(t, g['x']), dim=0),
        ValueError,
        'dim must be a positive integer',
    ),
    (
        '.meta non-integer',
        lambda t, g: io.load_labels(_meta(t, '1\nx\n')),
        ValueError,
        "line 2: .*'x'",
    ),
    (
        '.meta blank line',
        lambda t, g: io.load_labels(_meta(t, '1\n\n2\n')),
        ValueError,
        'line 2',
    ),
    (
        'labels count',
        lambda t, g: io.load_labels(_meta(t, '1\n2\n'), num_samples=3),
        ValueError,
        'holds 2 labels, expected 3',
    ),
    (
        '.npy wrong dtype',
        lambda t, g: io.load_features(_npy(t, 'b.npy', np.ones((4, 2), bool))),
        ValueError,
        'floating point',
    ),
    (
        '.npy wrong rank',
        lambda t, g: io.load_features(_npy(t, 'r.npy', np.ones(4, np.float32))),
        ValueError,
        '2-D',
    ),
    (
        'labels .npy wrong rank',
        lambda t, g: io.load_labels(_npy(t, 'y.npy', np.ones((4, 1), np.int64))),
        ValueError,
        '1-D',
    ),
    (
        'kNN cache k',
        lambda t, g: io.read_knn(g['root'] / 'knn.npz', k=K + 1),
        ValueError,
        f'expected k={K + 1}',
    ),
    (
        'kNN cache N',
        lambda t, g: io.read_knn(g['root'] / 'knn.npz', num_nodes=N + 1),
        ValueError,
        f'expected num_nodes={N + 1}',
    ),
    (
        'kNN cache fractional ids',
        lambda t, g: io.read_knn(_knn_file(t, _knn_array(g['knn'], id=2.5))),
        ValueError,
        'finite integers',
    ),
    (
        'kNN cache Inf distances',
        lambda t, g: io.read_knn(_knn_file(t, _knn_array(g['knn'], dist=np.inf))),
        ValueError,
        'must be finite',
    ),
    # Arrays
    (
        'NaN',
        lambda t, g: knn(_with(g['x'], 2, np.nan), K),
        ValueError,
        r'NaN or Inf values \(first: row 2\)',
    ),
    (
        'Inf',
        lambda t, g: knn(torch.from_numpy(_with(g['x'], 3, -np.inf)), K),
        ValueError,
        r'NaN or Inf values \(first: row 3\)',
    ),
    (
        'zero vector',
        lambda t, g: knn(_with(g['x'], 4, 0.0), K),
        ValueError,
        r'1 zero row\(s\).*row 4',
    ),
    (
        'N = 0',
        lambda t, g: knn(np.zeros((0, D), np.float32), 1),
        ValueError,
        r'no rows \(N = 0\)',
    ),
    (
        'N = 1',
        lambda t, g: knn(g['x'][:1], 1),
        ValueError,
        r'smaller than the number of points \(1\)',
    ),
    (
        'N <= k',
        lambda t, g: knn(g['x'][:5], 5),
        ValueError,
        r'k=5 must be smaller than the number of points \(5\)',
    ),
    (
        'no columns',
        lambda t, g: knn(np.zeros((5, 0), np.float32), 2),
        ValueError,
        'at least one feature column',
    ),
    (
        'integer features',
        lambda t, g: knn(g['y'].reshape(-1, 1), 2),
        ValueError,
        'floating-point',
    ),
    (
        'labels of the wrong length',
        lambda t, g: evaluate(g['y'][:-1], g['y']),
        ValueError,
        'same length',
    ),
    (
        'negative labels other than -1',
        lambda t, g: evaluate(g['y'], np.where(np.arange(N) == 4, -3, g['y'])),
        ValueError,
        r'negative class id -3 \(item 4\)',
    ),
    (
        'negative training labels',
        lambda t, g: fit(_model(), g['x'], -g['y'] - 1),
        ValueError,
        'non-negative',
    ),
    (
        'float training labels',
        lambda t, g: fit(_model(), g['x'], g['y'] + 0.5),
        ValueError,
        'integer labels',
    ),
    (
        'training labels of the wrong length',
        lambda t, g: fit(_model(), g['x'], g['y'][:-1]),
        ValueError,
        r'x must be \[N, D\] and y \[N\]',
    ),
    (
        'training batch size 0',
        lambda t, g: fit(_model(), g['x'], g['y'], pair_batch_size=0),
        ValueError,
        'pair_batch_size must be an integer >= 1',
    ),
    (
        'training lr 0',
        lambda t, g: fit(_model(), g['x'], g['y'], lr=0.0),
        ValueError,
        'lr must be positive',
    ),
    (
        'training eta grid outside [0, 1]',
        lambda t, g: fit(_model(), g['x'], g['y'], eta_grid=(0.5, 2.0)),
        ValueError,
        r'eta_grid must hold values in \[0, 1\]',
    ),
    (
        'training val_fraction 1',
        lambda t, g: fit(_model(), g['x'], g['y'], val_fraction=1.0),
        ValueError,
        r'val_fraction must lie in \(0, 1\)',
    ),
    (
        'SDT on N <= k',
        lambda t, g: _model().cluster(g['x'][:K]),
        ValueError,
        'smaller than the number of points',
    ),
    # Graphs
    (
        'edge_index out of range',
        lambda t, g: infomap(torch.tensor([[0, 1], [1, 9]]), num_nodes=3),
        ValueError,
        "refers to node 9, out of range for 'num_nodes=3'",
    ),
    (
        'edge_index negative',
        lambda t, g: infomap(torch.tensor([[0, -1], [1, 0]])),
        ValueError,
        'negative node indices',
    ),
    (
        'edge_index float',
        lambda t, g: infomap(torch.zeros(2, 3)),
        ValueError,
        'integer dtype',
    ),
    (
        'edge_index shape',
        lambda t, g: infomap(torch.zeros(3, 3, dtype=torch.long)),
        ValueError,
        r'shape \[2, num_edges\]',
    ),
    (
        'edge_weight negative',
        lambda t, g: infomap(torch.tensor([[0], [1]]), torch.tensor([-1.0])),
        ValueError,
        'non-negative',
    ),
    (
        'edge form out of range',
        lambda t, g: topk_jaccard(
            torch.tensor([[0, 5], [1, 0]]), torch.ones(2), num_nodes=3
        ),
        ValueError,
        'num_nodes=3',
    ),
    (
        'edge form negative',
        lambda t, g: topk_jaccard(torch.tensor([[0, -1], [1, 0]]), torch.ones(2)),
        ValueError,
        'negative',
    ),
    (
        'edge form float',
        lambda t, g: topk_jaccard(torch.zeros(2, 2), torch.ones(2)),
        ValueError,
        'integer tensor',
    ),
    (
        'kNN index out of range',
        lambda t, g: infomap_knn(
            g['knn']._replace(
                index=g['knn'].index.masked_fill(g['knn'].index == N - 1, N)
            )
        ),
        ValueError,
        f'refers to node {N}, out of range',
    ),
    (
        'kNN index negative',
        lambda t, g: fc_es(g['knn']._replace(index=-g['knn'].index - 2)),
        ValueError,
        'negative ids other than -1',
    ),
    (
        'kNN index float',
        lambda t, g: cluster_knn(g['knn']._replace(index=g['knn'].index.double())),
        ValueError,
        'integer dtype',
    ),
    (
        'kNN shape mismatch',
        lambda t, g: cluster_knn(g['knn']._replace(sim=g['knn'].sim[:, :2])),
        ValueError,
        r'shape \[N, k\]',
    ),
    (
        'kNN NaN similarity',
        lambda t, g: infomap_knn(
            g['knn']._replace(
                sim=g['knn'].sim.masked_fill(g['knn'].index == 7, float('nan'))
            )
        ),
        ValueError,
        'NaN or infinite similarities',
    ),
    (
        'kNN list without self first',
        lambda t, g: _model().cluster(
            graph=KNN(g['knn'].index.flip(1), g['knn'].sim.flip(1))
        ),
        ValueError,
        'self at rank 0',
    ),
    (
        'Top-K wrong length',
        lambda t, g: _bad_topk(g, torch.ones(N - 1, dtype=int)),
        ValueError,
        rf'shape \[{N}\]',
    ),
    (
        'Top-K zero',
        lambda t, g: _bad_topk(g, torch.zeros(N, dtype=torch.long)),
        ValueError,
        r'\[1, degree\]',
    ),
    (
        'Top-K above k',
        lambda t, g: _bad_topk(g, torch.full((N,), K + 1)),
        ValueError,
        rf'topk={K + 1} and {K} neighbours',
    ),
    (
        'Top-K float',
        lambda t, g: _bad_topk(g, torch.ones(N)),
        ValueError,
        'integer tensor',
    ),
    (
        'SDT Top-K out of range',
        lambda t, g: _model().cluster(graph=g['knn'], topk=torch.full((N,), 99)),
        ValueError,
        r'\[1, degree\]',
    ),
    (
        'SDT Top-K wrong length',
        lambda t, g: _model().cluster(
            graph=g['knn'], topk=torch.ones(3, dtype=torch.long)
        ),
        ValueError,
        rf'shape \[{N}\]',
    ),
    # Options
    ('k = 0', lambda t, g: knn(g['x'], 0), ValueError, 'k must be positive'),
    ('k < 0', lambda t, g: knn(g['x'], -1), ValueError, 'k must be positive'),
    ('k float', lambda t, g: knn(g['x'], 2.5), ValueError, 'k must be an integer'),
    (
        'infomap-knn threshold > 1',
        lambda t, g: infomap_knn(g['knn'], 1.01),
        ValueError,
        r"'threshold' must lie in \[0, 1\]",
    ),
    (
        'fc-es threshold < 0',
        lambda t, g: fc_es(g['knn'], -0.5),
        ValueError,
        r"'threshold' must lie in \[0, 1\]",
    ),
    (
        'threshold NaN',
        lambda t, g: cluster_knn(g['knn'], threshold=float('nan')),
        ValueError,
        r'\[0, 1\]',
    ),
    (
        'SDT eta > 1',
        lambda t, g: _model().cluster(graph=g['knn'], eta=1.5),
        ValueError,
        r'eta must lie in \[0, 1\]',
    ),
    (
        'SDT eta in config',
        lambda t, g: SDTClusterer(k=K, eta=-0.1),
        ValueError,
        r'eta must lie in \[0, 1\]',
    ),
    (
        'SDT theta in config',
        lambda t, g: SDTClusterer(k=K, theta=2.0),
        ValueError,
        r'theta must lie in \[0, 1\]',
    ),
    ('SDT k <= 1', lambda t, g: SDTClusterer(k=1), ValueError, 'k must be at least 2'),
    (
        'unknown method',
        lambda t, g: cluster_knn(g['knn'], method='kmeans'),
        ValueError,
        "Unknown method 'kmeans'",
    ),
    (
        'unknown backend',
        lambda t, g: knn(g['x'], K, backend='annoy'),
        ValueError,
        "unknown backend 'annoy'",
    ),
    (
        'unknown metric',
        lambda t, g: knn(g['x'], K, metric='manhattan'),
        ValueError,
        "unknown metric 'manhattan'",
    ),
    (
        'unknown backend option',
        lambda t, g: knn(g['x'], K, backend='faiss', M=8),
        ValueError,
        r"unknown option\(s\) \['M'\]",
    ),
    ('unknown SDT mode', lambda t, g: SDTClusterer(mode='raw'), ValueError, 'mode'),
    (
        'unknown Top-K Jaccard transform',
        lambda t, g: topk_jaccard(g['knn'], transform='tanh'),
        ValueError,
        'transform must be one of',
    ),
    ('infomap seed 0', lambda t, g: infomap_knn(g['knn'], seed=0), ValueError, 'seed'),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_refuses(tmp_path, good, call, exc, match):
    before = set(tmp_path.iterdir())
    with pytest.raises(exc, match=match):
        call(tmp_path, good)
    created = {p for p in tmp_path.iterdir() if p not in before}
    assert not any('.tmp' in p.name for p in created)


# Policy choices that are not errors ##########################################


def test_non_normalised_vectors_are_normalised_for_cosine(good):
    x = good['x']
    scale = np.random.default_rng(0).uniform(0.01, 100.0, (N, 1)).astype(np.float32)
    a, b = knn(x, K, backend='exact'), knn(x * scale, K, backend='exact')
    assert torch.equal(a.index, b.index)
    torch.testing.assert_close(a.sim, b.sim, atol=1e-5, rtol=0)
    assert torch.equal(cluster_knn(a), cluster_knn(b))


def test_duplicates_are_allowed(good):
    x = np.concatenate([good['x'], good['x'][:10]])  # rows N..N+9 repeat 0..9
    graph = knn(x, K)
    assert torch.equal(graph.index[:, 0], torch.arange(N + 10))  # self first
    # Each duplicate pair lists the other at rank 1 (similarity 1):
    assert graph.index[:10, 1].tolist() == list(range(N, N + 10))
    assert graph.index[N:, 1].tolist() == list(range(10))
    torch.testing.assert_close(graph.sim[:, 1][:10], torch.ones(10))
    for method in ('infomap-knn', 'fc-es'):
        pred = cluster_knn(graph, method=method)
        assert pred.shape == (N + 10,)
        assert torch.equal(pred[:10], pred[N:])  # duplicates cluster together
    pred = _model().cluster(x)
    assert pred.shape == (N + 10,)


def test_unlabelled_minus_one_is_allowed(good):
    y = good['y'].copy()
    y[:5] = -1
    out = evaluate(good['y'], y)
    assert out['num_unlabeled'] == 5 and out['pairwise_fscore'] == 1.0
    # Without dropping, every id is a plain class id, negatives included:
    assert evaluate(good['y'], y - 10, drop_unlabeled=False)['num_items'] == N


# Interrupted runs ############################################################

ROOT = Path(__file__).resolve().parents[1]


def _start_cluster(features: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [
        sys.executable,
        '-m',
        'torch_geometric_sdt',
        'cluster',
        str(features),
        '-o',
        str(out),
        '-k',
        '30',
        '--backend',
        'exact',
    ]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait_for(proc: subprocess.Popen, text: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:  # Stage lines end with a newline.
        if text in line:
            return
    raise AssertionError(f'the run ended before {text!r} (status {proc.wait()})')


def test_interrupted_cli_run_leaves_nothing(tmp_path):
    # Large enough that the kNN stage alone takes seconds; each process is
    # stopped as soon as it reports that stage.
    x = np.random.default_rng(0).standard_normal((20_000, 64)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    runs = {}
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out_dir = tmp_path / sig.name
        out_dir.mkdir()
        runs[sig] = (_start_cluster(tmp_path / 'x.npy', out_dir / 'pred.meta'), out_dir)
    try:
        for sig, (proc, _) in runs.items():
            _wait_for(proc, '[sdt] kNN')
            proc.send_signal(sig)
        for sig, (proc, out_dir) in runs.items():
            rc = proc.wait(timeout=120)
            err = proc.stderr.read()
            if sig == signal.SIGKILL:
                assert rc == -signal.SIGKILL
            else:  # SIGTERM unwinds like Ctrl-C: message, status 130.
                assert rc == 130, err
                assert 'sdt cluster: interrupted' in err and 'Traceback' not in err
            assert list(out_dir.iterdir()) == []  # no output, no temporary
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:  # pragma: no cover
                proc.kill()
                proc.wait()
            proc.stderr.close()
