from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_geometric_sdt import io
from torch_geometric_sdt.cli import main
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.testing import GOOD_D as D
from torch_geometric_sdt.testing import GOOD_K as K
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import (
    assert_cli_refuses,
    knn_array,
    run_cli,
    with_value,
    write_bin,
    write_knn_file,
    write_meta,
    write_npy,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    x, y = synthetic_faces(600, dim=32, seed=1)
    x, y = np.asarray(x), np.asarray(y)
    root = tmp_path_factory.mktemp('faces')
    np.save(root / 'x.npy', x)
    io.save_labels(root / 'y.meta', y)
    return root / 'x.npy', root / 'y.meta', y


def test_cluster_writes_labels_and_prints_metrics(faces, tmp_path, capsys):
    x_path, y_path, y = faces
    out = tmp_path / 'pred.meta'
    rc = main(
        [
            'cluster',
            str(x_path),
            '-o',
            str(out),
            '--labels',
            str(y_path),
            '-k',
            '10',
            '--method',
            'infomap-knn',
            '--threshold',
            '0.5',
            '--quiet',
        ]
    )
    assert rc == 0
    pred = io.load_labels(out)
    assert pred.shape == y.shape
    printed = capsys.readouterr().out
    assert 'pairwise_fscore' in printed and 'bcubed_fscore' in printed


@pytest.mark.parametrize('method', ['infomap-knn', 'fc-es'])
def test_cluster_methods_and_evaluate(faces, tmp_path, capsys, method):
    x_path, y_path, y = faces
    out = tmp_path / 'pred.npy'
    assert (
        main(
            [
                'cluster',
                str(x_path),
                '-o',
                str(out),
                '-k',
                '10',
                '--method',
                method,
                '-q',
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(['evaluate', str(out), str(y_path), '--json']) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics['pairwise_fscore'] <= 1.0
    assert 0.0 <= metrics['bcubed_fscore'] <= 1.0


def test_knn_cache_round_trip(faces, tmp_path, capsys):
    x_path, y_path, _ = faces
    cache = tmp_path / 'knn.npz'
    assert main(['knn', str(x_path), '-k', '8', '-o', str(cache), '-q']) == 0
    graph = io.read_knn(cache)
    assert graph.index.shape == (600, 8)
    out_a, out_b = tmp_path / 'a.meta', tmp_path / 'b.meta'
    assert main(['cluster', str(x_path), '-o', str(out_a), '-k', '8', '-q']) == 0
    assert (
        main(['cluster', str(x_path), '-o', str(out_b), '--knn', str(cache), '-q']) == 0
    )
    np.testing.assert_array_equal(io.load_labels(out_a), io.load_labels(out_b))


def test_existing_output_is_kept_unless_overwrite(faces, tmp_path, capsys):
    x_path, _, _ = faces
    out = tmp_path / 'pred.meta'
    out.write_text('keep me\n')
    rc = main(['cluster', str(x_path), '-o', str(out), '-k', '8', '-q'])
    assert rc == 2
    assert out.read_text() == 'keep me\n'
    err = capsys.readouterr().err
    assert 'exists' in err and len(err.strip().splitlines()) == 1
    assert (
        main(['cluster', str(x_path), '-o', str(out), '-k', '8', '-q', '--overwrite'])
        == 0
    )
    assert len(io.load_labels(out)) == 600


def test_user_errors_are_one_line(tmp_path, capsys):
    rc = main(
        ['cluster', str(tmp_path / 'missing.npy'), '-o', str(tmp_path / 'o.meta'), '-q']
    )
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert 'missing.npy' in err and 'Traceback' not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / 'o.meta').exists()

    bad = tmp_path / 'bad.npy'
    np.save(bad, np.zeros((5, 4), dtype=np.float32))
    rc = main(['cluster', str(bad), '-o', str(tmp_path / 'o.meta'), '-k', '3', '-q'])
    assert rc == 2
    assert 'zero' in capsys.readouterr().err.lower()


def test_evaluate_length_mismatch(tmp_path, capsys):
    io.save_labels(tmp_path / 'a.meta', np.array([0, 0, 1]))
    io.save_labels(tmp_path / 'b.meta', np.array([0, 1]))
    assert main(['evaluate', str(tmp_path / 'a.meta'), str(tmp_path / 'b.meta')]) == 2
    assert 'has 3 labels' in capsys.readouterr().err


def test_demo_prints_metrics(capsys):
    rc = main(
        [
            'demo',
            '--num-samples',
            '1500',
            '-k',
            '20',
            '--json',
            '-q',
            '--methods',
            'infomap-knn',
            'fc-es',
        ]
    )
    assert rc == 0
    every = json.loads(capsys.readouterr().out)
    assert list(every) == ['lfw', 'photo_library']
    results = every['lfw']
    assert list(results) == ['infomap-knn', 'fc-es', 'ground_truth']
    for r in (results['infomap-knn'], results['fc-es']):
        assert 0.0 <= r['pairwise_fscore'] <= 1.0 and r['seconds'] >= 0
    assert results['infomap-knn']['pairwise_fscore'] > 0.5
    # The thresholds come from the separate draw's grid:
    from torch_geometric_sdt.baselines import THRESHOLD_GRIDS

    assert results['fc-es']['threshold'] in THRESHOLD_GRIDS['fc-es']


def test_demo_table_with_the_shipped_model(capsys):
    rc = main(
        [
            'demo',
            '--num-samples',
            '1200',
            '-q',
            '--methods',
            'sdt',
            '--regimes',
            'lfw',
            'msceleb:squeezed',
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert 'pairwise F' in out and out.splitlines()[2].startswith('sdt')
    assert out.count('ground truth') == 2
    assert 'msceleb:squeezed: 1200 demo faces' in out


def test_demo_refuses_an_unknown_regime_before_any_work(capsys):
    rc, err = run_cli(['demo', '--regimes', 'lfw', 'moon'], capsys)
    assert rc == 2 and "unknown regime 'moon'" in err
    assert len(err.splitlines()) == 1


def test_module_entry_point():
    res = subprocess.run(
        [sys.executable, '-m', 'torch_geometric_sdt', '--version'],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert res.returncode == 0
    assert res.stdout.strip() == __import__('torch_geometric_sdt').__version__


def test_train_then_cluster_with_sdt(faces, tmp_path, capsys):
    x_path, y_path, y = faces
    model = tmp_path / 'model.safetensors'
    rc = main(
        [
            'train',
            str(x_path),
            str(y_path),
            '-o',
            str(model),
            '-k',
            '10',
            '--topk-epochs',
            '1',
            '--sdt-epochs',
            '1',
            '--max-steps-per-epoch',
            '2',
            '-q',
        ]
    )
    assert rc == 0 and model.exists()
    out = tmp_path / 'pred.meta'
    rc = main(
        [
            'cluster',
            str(x_path),
            '-o',
            str(out),
            '-k',
            '10',
            '--method',
            'sdt',
            '--model',
            str(model),
            '--labels',
            str(y_path),
            '-q',
        ]
    )
    assert rc == 0
    assert len(io.load_labels(out)) == len(y)
    assert 'pairwise_fscore' in capsys.readouterr().out
    # The model's k must match the kNN graph's:
    rc = main(
        [
            'cluster',
            str(x_path),
            '-o',
            str(tmp_path / 'p2.meta'),
            '-k',
            '12',
            '--method',
            'sdt',
            '--model',
            str(model),
            '-q',
        ]
    )
    assert rc == 2
    assert 'k = 10' in capsys.readouterr().err


def test_shipped_model_is_used_by_default():
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path

    path = default_model_path()
    model = SDTClusterer.load(path)
    assert model.k == 80 and model.mode == 'relational'
    assert path.stat().st_size < 20 * 2**20


def test_sdt_cluster_leaves_the_knn_graph_to_the_model(faces, tmp_path, capsys):
    # With the cosine metric the SDT model builds the kNN graph itself, so
    # that it goes with the model's context before Infomap; the labels are
    # those of the same model given the graph, and of model.cluster(x).
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path

    x_path, _, _ = faces
    built = tmp_path / 'built.meta'
    rc = main(['cluster', str(x_path), '-o', str(built), '--method', 'sdt'])
    err = capsys.readouterr().err
    assert rc == 0 and '[sdt] cluster (sdt)' in err
    assert '[sdt] kNN' not in err  # no graph of the CLI's own
    cache = tmp_path / 'g.npz'
    assert main(['knn', str(x_path), '-o', str(cache), '-q']) == 0
    given = tmp_path / 'given.meta'
    argv = ['cluster', str(x_path), '-o', str(given), '--method', 'sdt', '-q']
    assert main([*argv, '--knn', str(cache)]) == 0
    labels = io.load_labels(built)
    np.testing.assert_array_equal(labels, io.load_labels(given))
    model = SDTClusterer.load(default_model_path())
    want = model.cluster(io.load_features(x_path)).numpy()
    np.testing.assert_array_equal(labels, want)


def test_sdt_cluster_max_links_is_the_models_max_links(tmp_path, capsys):
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.pretrained import default_model_path

    # Large identities: every node has far more than 2 links.
    x, _ = regime_draw('msceleb', 600, 32, seed=0)
    np.save(tmp_path / 'x.npy', x.numpy())
    out = tmp_path / 'p.npy'
    argv = ['cluster', str(tmp_path / 'x.npy'), '-o', str(out), '--method', 'sdt']
    assert main([*argv, '-q', '--max-links', '2']) == 0
    model = SDTClusterer.load(default_model_path())
    want = model.cluster(x, max_links=2)
    np.testing.assert_array_equal(io.load_labels(out), want.numpy())
    assert not np.array_equal(want.numpy(), model.cluster(x).numpy())  # it binds


def test_sdt_cluster_precision_is_the_models_precision(tmp_path, monkeypatch):
    from torch_geometric_sdt import SDTClusterer

    seen = []
    predict = SDTClusterer.predict_topk

    def spy(self, *args, **kwargs):
        seen.append(self.precision)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(SDTClusterer, 'predict_topk', spy)
    x, _ = synthetic_faces(300, dim=32, seed=2)
    np.save(tmp_path / 'x.npy', x.numpy())
    argv = ['cluster', str(tmp_path / 'x.npy'), '--method', 'sdt', '-q']
    for option, want in ([], 'float32'), (['--precision', 'auto'], 'auto'):
        out = tmp_path / f'{want}.npy'
        assert main([*argv, '-o', str(out), *option]) == 0
        assert seen[-1] == want and out.exists()


def test_abbreviated_options_are_refused(faces, tmp_path, capsys):
    # '--k 80' used to be read as '--knn 80' ("no such file: 80").
    x, _, _ = faces
    out = tmp_path / 'p.meta'
    with pytest.raises(SystemExit) as e:
        main(['cluster', str(x), '-o', str(out), '--k', '80', '-q'])
    assert e.value.code == 2
    assert 'unrecognized arguments: --k' in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(['demo', '--num', '100'])  # not --num-samples
    assert 'unrecognized arguments: --num' in capsys.readouterr().err


@pytest.mark.parametrize('command', ['knn', 'cluster'])
def test_commands_do_not_change_their_parsed_arguments(faces, tmp_path, command):
    import argparse

    from torch_geometric_sdt import cli

    x, y, _ = faces
    out = tmp_path / ('c.npz' if command == 'knn' else 'p.meta')
    argv = [command, str(x), '-o', str(out), '-q']
    args = cli._parser().parse_args(argv)
    before = argparse.Namespace(**vars(args))
    assert cli._COMMANDS[command](args, cli._Reporter(quiet=True)) == 0
    assert vars(args) == vars(before) and args.k is None
    assert out.exists()


# Bad input: exit status 2, one line on stderr naming the problem, nothing written.
# Each case: (id, build(tmp, good) -> argv after 'sdt', regex the message has).
CLI_BAD_INPUT = [
    ('missing file', lambda t, g: ['cluster', str(t / 'nope.npy')], 'no such file'),
    (
        'empty .bin',
        lambda t, g: ['cluster', write_bin(t, g['x'][:0]), '--dim', '16'],
        'is empty',
    ),
    (
        'truncated .bin',
        lambda t, g: ['cluster', write_bin(t, g['x'], trim=3), '--dim', '16'],
        'not divisible by 4',
    ),
    (
        '.bin size not 4*D',
        lambda t, g: ['cluster', write_bin(t, g['x']), '--dim', '7'],
        r'divisible by 4 \* dim = 28',
    ),
    (
        '.bin D does not match labels count',
        lambda t, g: [
            'cluster',
            write_bin(t, g['x']),
            '--labels',
            write_meta(t, '0\n' * (N + 1)),
        ],
        rf'not N \* D \* 4 for the N={N + 1} labels',
    ),
    (
        '.bin without dim or labels',
        lambda t, g: ['cluster', write_bin(t, g['x'])],
        'pass dim=',
    ),
    (
        '.meta with a non-integer',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--labels',
            write_meta(t, '0\n1\nbob\n' + '0\n' * (N - 3)),
        ],
        "line 3: .*'bob'",
    ),
    (
        '.meta with a float',
        lambda t, g: [
            'evaluate',
            write_meta(t, '0\n1.5\n', 'p.meta'),
            write_meta(t, '0\n1\n'),
        ],
        "line 2: .*'1.5'",
    ),
    (
        '.npy of integers',
        lambda t, g: ['cluster', write_npy(t, 'i.npy', np.zeros((N, D), np.int64))],
        'floating point',
    ),
    (
        '.npy of rank 1',
        lambda t, g: ['cluster', write_npy(t, 'r.npy', np.zeros(N, np.float32))],
        '2-D',
    ),
    (
        '.npy of rank 3',
        lambda t, g: [
            'cluster',
            write_npy(t, 'r3.npy', np.zeros((N, 2, 8), np.float32)),
        ],
        '2-D',
    ),
    (
        'labels .npy of floats',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--labels',
            write_npy(t, 'yf.npy', np.zeros(N, np.float32)),
        ],
        'must be integers',
    ),
    (
        'not a .npy file',
        lambda t, g: ['cluster', str(write_meta(t, 'hello', 'junk.npy'))],
        'not a valid .npy',
    ),
    (
        'unknown extension',
        lambda t, g: ['cluster', write_meta(t, '1,2', 'x.csv')],
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
            write_knn_file(t, knn_array(knn(g['x'][: N // 2], K))),
        ],
        f'lists {N // 2} nodes, expected num_nodes={N}',
    ),
    (
        'kNN cache with ids out of range',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            write_knn_file(t, knn_array(g['knn'], id=N)),
        ],
        rf'must lie in \[0, {N}\) \(found range \[0, {N}\]\)',
    ),
    (
        'kNN cache with negative ids',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            write_knn_file(t, knn_array(g['knn'], id=-1)),
        ],
        rf'must lie in \[0, {N}\) \(found range \[-1, ',
    ),
    (
        'kNN cache with NaN distances',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            write_knn_file(t, knn_array(g['knn'], dist=np.nan)),
        ],
        'distances in .* must be finite',
    ),
    (
        'kNN cache of rank 2',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--knn',
            write_knn_file(t, np.zeros((N, K))),
        ],
        r'shape \[N, 2, k\]',
    ),
    (
        'NaN in features',
        lambda t, g: [
            'cluster',
            write_npy(t, 'nan.npy', with_value(g['x'], 5, np.nan)),
        ],
        r'NaN or Inf .*row 5',
    ),
    (
        'Inf in features',
        lambda t, g: [
            'cluster',
            write_npy(t, 'inf.npy', with_value(g['x'], 7, np.inf)),
        ],
        r'NaN or Inf .*row 7',
    ),
    (
        'zero vector',
        lambda t, g: ['cluster', write_npy(t, 'zero.npy', with_value(g['x'], 9, 0.0))],
        r'zero row.*row 9',
    ),
    (
        'N = 0',
        lambda t, g: ['cluster', write_npy(t, 'n0.npy', np.zeros((0, D), np.float32))],
        'empty',
    ),
    (
        'N = 1',
        lambda t, g: ['cluster', write_npy(t, 'n1.npy', g['x'][:1]), '-k', '1'],
        r'smaller than the number of points \(1\)',
    ),
    (
        'N <= k',
        lambda t, g: ['cluster', write_npy(t, 'small.npy', g['x'][:K]), '-k', str(K)],
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
            write_meta(t, '0\n' * (N - 1)),
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
            write_meta(t, '-7\n' + '0\n' * (N - 1)),
        ],
        'negative class id -7',
    ),
    (
        'negative training labels',
        lambda t, g: [
            'train',
            str(g['root'] / 'x.npy'),
            write_meta(t, '-2\n' * N),
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
        'max links zero',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--method',
            'sdt',
            '--max-links',
            '0',
        ],
        r'--max-links must be at least 1 \(got 0\)',
    ),
    (
        'max links without the SDT',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '--max-links', '8'],
        '--max-links is an option of --method sdt',
    ),
    (
        'precision without the SDT',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '--precision', 'float32'],
        '--precision is an option of --method sdt',
    ),
    (
        'unknown precision',
        lambda t, g: [
            'cluster',
            str(g['root'] / 'x.npy'),
            '--method',
            'sdt',
            '--precision',
            'float16',
        ],
        "invalid choice: 'float16'",
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
    (
        'l2 metric for clustering',
        lambda t, g: ['cluster', str(g['root'] / 'x.npy'), '--metric', 'l2'],
        '--metric l2: every method thresholds cosine similarities',
    ),
    (
        'NaN in training features',
        lambda t, g: [
            'train',
            write_npy(t, 'nan.npy', with_value(g['x'], 5, np.nan)),
            str(g['root'] / 'y.meta'),
            '-k',
            str(K),
        ],
        r'NaN or Inf .*row 5',
    ),
]


@pytest.mark.parametrize(
    'build,match', [c[1:] for c in CLI_BAD_INPUT], ids=[c[0] for c in CLI_BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, capsys, build, match):
    assert_cli_refuses(build, match, tmp_path, good, capsys)


def test_cli_overwrite_guard_runs_before_any_work(tmp_path, good, capsys):
    # The existing output is reported before the (bad) features are even read.
    out = tmp_path / 'pred.meta'
    out.write_text('keep\n')
    rc, err = run_cli(['cluster', str(tmp_path / 'nope.npy'), '-o', str(out)], capsys)
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
    assert run_cli(argv, capsys)[0] == 0
    assert len(io.load_labels(out)) == N


def test_cli_bin_dimension_from_labels(tmp_path, good, capsys):
    path = write_bin(tmp_path, good['x'])
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
    assert run_cli(argv, capsys)[0] == 0
    assert len(io.load_labels(out)) == N


# Interrupted runs: neither the output nor a temporary file is left behind.


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


@pytest.mark.parametrize('command', ['knn', 'cluster'])
def test_output_equal_to_an_input_is_refused(tmp_path, good, capsys, command):
    x = tmp_path / 'x.npy'
    np.save(x, good['x'])
    before = x.read_bytes()
    rc, err = run_cli([command, str(x), '-o', str(x), '--overwrite', '-q'], capsys)
    assert rc == 2 and 'is also an input' in err and len(err.splitlines()) == 1
    assert x.read_bytes() == before


def test_sdt_k_mismatch_is_refused_before_the_knn_graph(tmp_path, good, capsys):
    x = tmp_path / 'x.npy'
    np.save(x, good['x'])
    argv = ['cluster', str(x), '-o', str(tmp_path / 'p.meta'), '--method', 'sdt']
    rc, err = run_cli([*argv, '-k', str(K)], capsys)  # not -q: stages show
    assert rc == 2 and 'needs k = 80' in err
    assert '[sdt]' not in err  # refused before loading or building anything


def test_warnings_are_one_line(tmp_path, good, capsys, monkeypatch):
    import warnings

    from torch_geometric_sdt import cli

    def noisy(*args, **kwargs):
        warnings.warn('first line\nsecond line', UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(cli._COMMANDS, 'evaluate', noisy)
    rc, err = run_cli(['evaluate', 'a', 'b'], capsys)
    assert rc == 0
    assert err.strip() == 'sdt evaluate: warning: first line second line'


@pytest.mark.parametrize(
    'error',
    [
        MemoryError(),
        RuntimeError(
            '[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: '
            "can't allocate memory: you tried to allocate 123 bytes."
        ),
    ],
)
def test_allocation_failure_is_one_line_naming_the_stage(
    tmp_path, good, capsys, monkeypatch, error
):
    from torch_geometric_sdt import cli

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli, 'knn', fail)
    out = tmp_path / 'p.meta'
    rc, err = run_cli(['cluster', str(good['root'] / 'x.npy'), '-o', str(out)], capsys)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and 'Traceback' not in err
    assert last.startswith('sdt cluster: error: out of memory during kNN')
    assert 'try a smaller -k' in last
    assert not out.exists()


def test_train_quiet_prints_nothing_on_stderr(tmp_path, faces, capsys):
    # Memory-mapped features used to print a two-line "not writable" warning.
    x, y, _ = faces
    out = tmp_path / 'm.safetensors'
    argv = ['train', str(x), str(y), '-o', str(out), '-k', '10']
    argv += ['--topk-epochs', '1', '--sdt-epochs', '1', '--max-steps-per-epoch', '1']
    rc, err = run_cli([*argv, '-q'], capsys)
    assert rc == 0 and err == ''
    assert out.exists()


@pytest.mark.parametrize('command', ['cluster', 'demo'])
def test_infomap_seed_is_refused_before_any_work(tmp_path, good, capsys, command):
    argv = ['demo', '--num-samples', '200']
    if command == 'cluster':
        argv = ['cluster', str(good['root'] / 'x.npy'), '-o', str(tmp_path / 'p')]
    rc, err = run_cli([*argv, '--infomap-seed', str(2**32)], capsys)
    assert rc == 2 and "'seed' must be an integer in [1, 4294967295]" in err
    assert '[sdt]' not in err and len(err.splitlines()) == 1
