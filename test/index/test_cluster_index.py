import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.index import ClusterIndex, IndexLockedError
from torch_geometric_sdt.index.store import FORMAT_VERSION
from torch_geometric_sdt.metrics import evaluate
from torch_geometric_sdt.testing import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def faces():
    x, y = synthetic_faces(1400, 64, seed=5)
    perm = torch.randperm(1400, generator=torch.Generator().manual_seed(0))
    return x[perm].numpy(), y[perm].numpy()


@pytest.fixture(params=['sdt', 'infomap-knn', 'fc-es'])
def method(request):
    return request.param


def _create(path, x, method, **kw):
    threshold = {'sdt': None, 'infomap-knn': 0.6, 'fc-es': 0.22}[method]
    return ClusterIndex.create(path, x, method=method, threshold=threshold, **kw)


def test_create_add_remove(tmp_path, faces, method):
    x, y = faces
    with _create(tmp_path / 'idx', x[:1200], method) as index:
        assert index.method == method
        assert len(index.ids()) == 1200 and index.ids()[:2] == ['0', '1']
        first = index.labels()
        new = index.add(x[1200:1220], ids=[f'n{i}' for i in range(20)])
        assert new.shape == (20,)
        labels = index.labels()
        assert torch.equal(labels[1200:], new)
        # Stable ids: faces of clusters the update did not touch keep theirs.
        touched = torch.tensor(index.last_update['touched'], dtype=torch.long)
        kept = ~torch.isin(first, touched)
        assert bool(kept.any())
        assert torch.equal(labels[:1200][kept], first[kept])
        index.remove(['n0', 'n1', '7'])
        ids = index.ids()
        assert len(ids) == 1217 and 'n0' not in ids and '7' not in ids
        assert len(index.labels()) == 1217
        info = index.info()
        assert info['num_faces'] == 1217 and info['version'] == 3
        ops = [h['op'] for h in index.history()]
        assert ops[0] == 'create' and set(ops) <= {'create', 'add', 'remove'}
    # The state persists.
    with ClusterIndex.open(tmp_path / 'idx', writable=False) as index:
        assert index.ids() == ids and len(index.labels()) == 1217


def test_incremental_quality_close_to_clustering_at_once(tmp_path, faces, method):
    x, y = faces
    with _create(tmp_path / 'idx', x[:1000], method) as index:
        for lo in range(1000, 1400, 100):
            index.add(x[lo : lo + 100])
        inc = evaluate(index.labels(), torch.from_numpy(y))
    with _create(tmp_path / 'all', x, method) as index:
        once = evaluate(index.labels(), torch.from_numpy(y))
    assert abs(inc['pairwise_fscore'] - once['pairwise_fscore']) < 0.02
    assert abs(inc['bcubed_fscore'] - once['bcubed_fscore']) < 0.02


def test_untouched_clusters_keep_their_ids(tmp_path, faces):
    x, _ = faces
    with _create(tmp_path / 'idx', x[:1200], 'infomap-knn') as index:
        before = index.labels()
        index.add(x[1200:1210])
        after = index.labels()[:1200]
        touched = torch.tensor(index.last_update['touched'], dtype=torch.long)
        kept = ~torch.isin(before, touched)
        assert 0 < index.last_update['region_size'] < 1210
        assert torch.equal(after[kept], before[kept])
        assert float((after == before).float().mean()) > 0.97


def test_history_records_merges_and_new_clusters(tmp_path):
    # Two groups just too far apart to link (cosine 0.75 < 0.8); faces added
    # between them join them into one cluster.
    g = torch.Generator().manual_seed(0)
    unit = torch.nn.functional.normalize
    c, d = unit(torch.randn(2, 32, generator=g), dim=1)
    d = unit(d - (d @ c) * c, dim=0)
    a1, a2 = unit(c + 0.38 * d, dim=0), unit(c - 0.38 * d, dim=0)

    def around(centre, n, s=0.02):
        return unit(centre + s * torch.randn(n, 32, generator=g), dim=1)

    noise = unit(torch.randn(200, 32, generator=g), dim=1)
    x0 = torch.cat([around(a1, 10), around(a2, 10), noise])
    with ClusterIndex.create(
        tmp_path / 'idx', x0, method='infomap-knn', threshold=0.8
    ) as index:
        la, lb = index.labels()[0].item(), index.labels()[10].item()
        assert la != lb
        index.add(around(c, 40))
        labels = index.labels()
        assert bool((labels[:20] == labels[0]).all())
        merge = [h for h in index.history() if h['event'] == 'merge']
        assert merge and {la, lb} <= set(merge[0]['source'])
        assert merge[0]['size'] == 60
        assert labels[0].item() in (la, lb)  # The merged cluster keeps one id.
        index.add(around(-c, 10))  # A new identity far from everything.
        new = [h for h in index.history() if h['event'] == 'new' and h['version'] == 3]
        assert any(e['size'] == 10 for e in new)


def test_bad_input_changes_nothing(tmp_path, faces):
    x, _ = faces
    with _create(tmp_path / 'idx', x[:300], 'infomap-knn') as index:
        version = index.info()['version']
        with pytest.raises(ValueError, match='64-d'):
            index.add(np.ones((3, 8), dtype=np.float32))
        with pytest.raises(ValueError, match='already in the index'):
            index.add(x[300:302], ids=['1', 'new'])
        with pytest.raises(ValueError, match='distinct'):
            index.add(x[300:302], ids=['a', 'a'])
        with pytest.raises(ValueError, match='not in the index'):
            index.remove(['0', 'nope'])
        with pytest.raises(ValueError, match='NaN'):
            index.add(np.full((2, 64), np.nan, dtype=np.float32))
        assert index.info()['version'] == version
        assert len(index.ids()) == 300
    with pytest.raises(ValueError, match='not an empty directory'):
        _create(tmp_path / 'idx', x[:300], 'infomap-knn')
    with pytest.raises(ValueError, match='at least k'):
        ClusterIndex.create(tmp_path / 'small', x[:10], method='infomap-knn')
    assert not (tmp_path / 'small').exists()
    with ClusterIndex.open(tmp_path / 'idx', writable=False) as index:
        with pytest.raises(ValueError, match='read-only'):
            index.add(x[300:302])


def test_one_writer_at_a_time(tmp_path, faces):
    x, _ = faces
    with _create(tmp_path / 'idx', x[:300], 'infomap-knn'):
        with pytest.raises(IndexLockedError, match='open for writing'):
            ClusterIndex.open(tmp_path / 'idx')
        with ClusterIndex.open(tmp_path / 'idx', writable=False) as reader:
            assert len(reader.ids()) == 300
        # Another process is refused too.
        code = (
            'import sys; from torch_geometric_sdt.index import ClusterIndex\n'
            'try:\n    ClusterIndex.open(sys.argv[1])\n'
            'except ValueError as e:\n    print(e); sys.exit(3)\n'
        )
        out = subprocess.run(
            [sys.executable, '-c', code, str(tmp_path / 'idx')],
            capture_output=True,
            text=True,
            env={**os.environ, 'PYTHONPATH': str(ROOT)},
        )
        assert out.returncode == 3, out.stderr
        assert 'open for writing' in out.stdout
    with ClusterIndex.open(tmp_path / 'idx'):  # Released on close.
        pass


def test_newer_format_is_refused(tmp_path, faces):
    x, _ = faces
    _create(tmp_path / 'idx', x[:300], 'infomap-knn').close()
    db = sqlite3.connect(tmp_path / 'idx' / 'index.sqlite')
    db.execute(
        "UPDATE meta SET value = ? WHERE key = 'format_version'",
        (str(FORMAT_VERSION + 1),),
    )
    db.commit()
    db.close()
    with pytest.raises(ValueError, match='newer than this library'):
        ClusterIndex.open(tmp_path / 'idx')


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from torch_geometric_sdt.index import ClusterIndex, store

    path, phase, op = sys.argv[1], sys.argv[2], sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    Store = store.IndexStore
    if phase == 'vectors':
        orig_append = Store.append_vectors
        Store.append_vectors = lambda self, *a: (orig_append(self, *a), die())
    elif phase == 'arrays':
        orig_write = Store.write_arrays
        def write(self, version, arrays):
            first = dict(list(arrays.items())[:1])
            orig_write(self, version, first)
            die()
        Store.write_arrays = write
    elif phase == 'commit':
        orig_history = Store.add_history
        def history(self, *a):
            orig_history(self, *a)
            die()  # Inside the transaction, before COMMIT.
        Store.add_history = history
    elif phase == 'cleanup':  # After COMMIT (the first call is at open).
        orig_discard = Store.discard_uncommitted
        calls = []
        def discard(self):
            calls.append(1)
            if len(calls) == 2:
                die()
            return orig_discard(self)
        Store.discard_uncommitted = discard
    x = np.load(sys.argv[4])
    with ClusterIndex.open(path) as index:
        if op == 'add':
            index.add(x)
        else:
            index.remove(['3', '4'])
    """
)


@pytest.mark.parametrize(
    'op, phase',
    [
        ('add', 'vectors'),
        ('add', 'arrays'),
        ('add', 'commit'),
        ('add', 'cleanup'),
        ('remove', 'arrays'),  # remove writes no vectors
        ('remove', 'commit'),
        ('remove', 'cleanup'),
    ],
)
def test_sigkill_during_an_update_leaves_a_consistent_index(tmp_path, faces, op, phase):
    x, _ = faces
    _create(tmp_path / 'idx', x[:300], 'infomap-knn').close()
    np.save(tmp_path / 'new.npy', x[300:340])
    script = tmp_path / 'killer.py'
    script.write_text(_KILLER)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / 'idx'),
            phase,
            op,
            str(tmp_path / 'new.npy'),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    committed = phase == 'cleanup'
    with ClusterIndex.open(tmp_path / 'idx') as index:  # Writable: lock freed.
        info = index.info()
        if op == 'add':
            expected = 340 if committed else 300
        else:
            expected = 298 if committed else 300
        assert info['num_faces'] == expected
        assert info['version'] == (2 if committed else 1)
        assert len(index.labels()) == expected
        # Only the committed version's state is left.
        assert [p.name for p in (tmp_path / 'idx' / 'state').iterdir()] == [
            f'v{info["version"]}'
        ]
        # And the update succeeds when run again.
        if op == 'add':
            index.add(x[300:340], ids=[f'again{i}' for i in range(40)])
            assert index.info()['num_faces'] == expected + 40
        else:
            index.remove(['5'])
            assert index.info()['num_faces'] == expected - 1
    size = (tmp_path / 'idx' / 'vectors.f32').stat().st_size
    assert size == index_rows(tmp_path / 'idx') * 64 * 4


def index_rows(path):
    with ClusterIndex.open(path, writable=False) as index:
        return index.info()['num_rows']


def test_cli_index_commands(tmp_path, faces, capsys):
    x, y = faces
    np.save(tmp_path / 'a.npy', x[:1000])
    np.save(tmp_path / 'b.npy', x[1000:1100])
    (tmp_path / 'b.txt').write_text('\n'.join(f'img{i}.jpg' for i in range(100)))
    (tmp_path / 'rm.txt').write_text('img3.jpg\n12\n')
    d = str(tmp_path / 'idx')
    cmds = [
        ['index', 'create', d, str(tmp_path / 'a.npy'), '--method', 'infomap-knn'],
        ['index', 'add', d, str(tmp_path / 'b.npy'), '--ids', str(tmp_path / 'b.txt')],
        ['index', 'remove', d, str(tmp_path / 'rm.txt')],
        ['index', 'export', d, '-o', str(tmp_path / 'labels.csv')],
    ]
    for argv in cmds:
        rc, err = run_cli(argv + ['-q'], capsys)
        assert rc == 0, err
    rows = (tmp_path / 'labels.csv').read_text().splitlines()
    assert rows[0] == 'id,cluster' and len(rows) == 1 + 1098
    assert rows[1].startswith('0,') and not any(r.startswith('img3.jpg,') for r in rows)
    rc, _ = run_cli(['index', 'info', d, '--json'], capsys)
    assert rc == 0
    # Bad input: one line, exit 2, the index unchanged.
    for argv, match in [
        (
            [
                'index',
                'add',
                d,
                str(tmp_path / 'b.npy'),
                '--ids',
                str(tmp_path / 'b.txt'),
            ],
            'already in the index',
        ),
        (['index', 'remove', d, str(tmp_path / 'rm.txt')], 'not in the index'),
        (['index', 'info', str(tmp_path / 'none')], 'not a cluster index'),
        (['index', 'create', d, str(tmp_path / 'a.npy')], 'not an empty directory'),
        (['index', 'export', d, '-o', str(tmp_path / 'labels.csv')], 'exists'),
    ]:
        rc, err = run_cli(argv + ['-q'], capsys)
        assert rc == 2, err
        assert len(err.strip().splitlines()) == 1 and match in err, err
    with ClusterIndex.open(d, writable=False) as index:
        assert index.info()['num_faces'] == 1098
