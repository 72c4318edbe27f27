from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_geometric_sdt import io
from torch_geometric_sdt.cli import main
from torch_geometric_sdt.datasets import synthetic_faces

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
    results = json.loads(capsys.readouterr().out)
    assert list(results) == ['infomap-knn', 'fc-es']
    for r in results.values():
        assert 0.0 <= r['pairwise_fscore'] <= 1.0 and r['seconds'] >= 0
    assert results['infomap-knn']['pairwise_fscore'] > 0.5
    # The thresholds come from the separate draw's grid:
    from torch_geometric_sdt.baselines import THRESHOLD_GRIDS

    assert results['fc-es']['threshold'] in THRESHOLD_GRIDS['fc-es']


def test_demo_table_with_the_shipped_model(capsys):
    rc = main(['demo', '--num-samples', '1200', '-q', '--methods', 'sdt'])
    assert rc == 0
    out = capsys.readouterr().out
    assert 'pairwise F' in out and out.splitlines()[2].startswith('sdt')
    assert 'ground truth' in out


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
