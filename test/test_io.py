from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torch_geometric_sdt import io
from torch_geometric_sdt.io import (
    atomic_write,
    count_lines,
    load_features,
    load_labels,
    read_knn,
    save_features,
    save_labels,
    write_knn,
)
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.testing import GOOD_D as D
from torch_geometric_sdt.testing import GOOD_K as K
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import (
    assert_api_refuses,
    knn_array,
    write_bin,
    write_knn_file,
    write_meta,
    write_npy,
)

ROOT = Path(__file__).resolve().parents[1]
IO_FILE = ROOT / 'torch_geometric_sdt' / 'io.py'


def _features(n: int = 50, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _knn(x: np.ndarray, k: int) -> KNN:
    t = torch.from_numpy(x)
    sim, index = (t @ t.t()).topk(k, dim=1)
    index[:, 0] = torch.arange(x.shape[0])  # Self first (ties are impossible).
    return KNN(index, sim)


def _no_temporaries(directory: Path) -> bool:
    return not any('.tmp' in p.name for p in directory.iterdir())


# atomic_write ################################################################


def test_atomic_write_replaces_only_at_end(tmp_path):
    path = tmp_path / 'out.txt'
    with atomic_write(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == '.txt'
        tmp.write_text('hello')
        assert not path.exists()
    assert path.read_text() == 'hello'
    assert _no_temporaries(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text('again')
    assert path.stat().st_mode & 0o777 == 0o640


def test_atomic_write_refuses_existing(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        with atomic_write(path):
            raise AssertionError('body must not run')  # pragma: no cover
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text('new')
    assert path.read_text() == 'new'


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        with atomic_write(tmp_path / 'nope' / 'out.txt'):
            pass  # pragma: no cover


@pytest.mark.parametrize('exc', [RuntimeError, KeyboardInterrupt])
def test_atomic_write_exception_cleans_up(tmp_path, exc):
    new = tmp_path / 'new.bin'
    with pytest.raises(exc):
        with atomic_write(new) as tmp:
            tmp.write_bytes(b'partial' * 1000)
            raise exc('boom')
    assert not new.exists()
    assert _no_temporaries(tmp_path)

    old = tmp_path / 'old.bin'
    old.write_bytes(b'precious')
    with pytest.raises(exc):
        with atomic_write(old, overwrite=True) as tmp:
            tmp.write_bytes(b'partial')
            raise exc('boom')
    assert old.read_bytes() == b'precious'
    assert _no_temporaries(tmp_path)


def test_writer_exception_leaves_existing_file(tmp_path, monkeypatch):
    path = tmp_path / 'x.npy'
    save_features(path, _features())
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(np.lib.format, 'open_memmap', fail)
    with pytest.raises(OSError, match='disk full'):
        save_features(path, _features(seed=1), overwrite=True)
    assert path.read_bytes() == before
    assert _no_temporaries(tmp_path)


# The child loads io.py by path, skipping the package's heavier imports.
_CHILD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location('sdt_io', sys.argv[2])
io = importlib.util.module_from_spec(spec)
sys.modules['sdt_io'] = io  # as an import would (dataclasses look it up)
spec.loader.exec_module(io)
with io.atomic_write(sys.argv[1]) as tmp:
    with open(tmp, 'wb') as f:
        for _ in range(10_000):
            f.write(b'x' * (1 << 16))
            f.flush()
            print('writing', flush=True)
            time.sleep(0.01)
"""


def test_atomic_write_sigkill_leaves_no_file(tmp_path):
    path = tmp_path / 'big.bin'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, '-c', _CHILD, str(path), str(IO_FILE)],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == b'writing'
        for _ in range(5):  # Let it write a few chunks.
            proc.stdout.readline()
        temporaries = [p for p in tmp_path.iterdir() if '.tmp' in p.name]
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.05)
    assert not path.exists()


# Features ####################################################################


@pytest.mark.parametrize('suffix', ['.bin', '.npy', '.npz'])
def test_features_round_trip(tmp_path, suffix):
    x = _features(37, 6)
    path = save_features(tmp_path / f'f{suffix}', torch.from_numpy(x))
    out = load_features(path, dim=6)
    assert out.shape == (37, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    with pytest.raises(FileExistsError):
        save_features(path, x)


def test_features_mmap(tmp_path):
    x = _features(20, 4)
    save_features(tmp_path / 'f.bin', x)
    save_features(tmp_path / 'f.npy', x)
    assert isinstance(load_features(tmp_path / 'f.bin', 4), np.memmap)
    assert isinstance(load_features(tmp_path / 'f.npy'), np.memmap)
    assert not isinstance(load_features(tmp_path / 'f.npy', mmap=False), np.memmap)
    np.testing.assert_array_equal(load_features(tmp_path / 'f.bin', 4, mmap=False), x)


def test_bin_dim_from_meta(tmp_path):
    x = _features(25, 12)
    save_features(tmp_path / 'part.bin', x)
    with pytest.raises(ValueError, match='pass dim='):
        load_features(tmp_path / 'part.bin')
    save_labels(tmp_path / 'part.meta', np.arange(25) % 3)
    np.testing.assert_array_equal(load_features(tmp_path / 'part.bin'), x)
    save_labels(tmp_path / 'part.meta', np.arange(24) % 3, overwrite=True)
    with pytest.raises(ValueError, match='N=24'):
        load_features(tmp_path / 'part.bin')


def test_bin_truncated(tmp_path):
    path = tmp_path / 'f.bin'
    save_features(path, _features(10, 8))
    with open(path, 'r+b') as f:
        f.truncate(10 * 8 * 4 - 4)
    with pytest.raises(ValueError, match='316 bytes.*divisible by 4 \\* dim = 32'):
        load_features(path, dim=8)


@pytest.mark.parametrize('suffix', ['.bin', '.npy', '.meta', '.npz'])
def test_empty_and_missing_files(tmp_path, suffix):
    path = tmp_path / f'empty{suffix}'
    with pytest.raises(FileNotFoundError, match=str(path.name)):
        (load_labels if suffix == '.meta' else load_features)(path)
    path.write_bytes(b'')
    with pytest.raises(ValueError, match='empty'):
        (load_labels if suffix == '.meta' else load_features)(path)


def test_features_bad_arrays(tmp_path):
    np.save(tmp_path / 'rank.npy', np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match='2-D'):
        load_features(tmp_path / 'rank.npy')
    np.save(tmp_path / 'int.npy', np.zeros((5, 2), dtype=np.int64))
    with pytest.raises(ValueError, match='floating point'):
        load_features(tmp_path / 'int.npy')
    np.save(tmp_path / 'dim.npy', np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match='expected dim=3'):
        load_features(tmp_path / 'dim.npy', dim=3)
    (tmp_path / 'junk.npy').write_bytes(b'not numpy at all')
    with pytest.raises(ValueError, match='not a valid .npy'):
        load_features(tmp_path / 'junk.npy')
    np.savez(tmp_path / 'keys.npz', a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match='no features key'):
        load_features(tmp_path / 'keys.npz')
    assert load_features(tmp_path / 'keys.npz', key='b').shape == (2, 2)
    (tmp_path / 'f.csv').write_text('1,2')
    with pytest.raises(ValueError, match="extension '.csv'"):
        load_features(tmp_path / 'f.csv')
    with pytest.raises(ValueError, match='2-D floating point'):
        save_features(tmp_path / 'out.npy', np.zeros((3, 2), dtype=np.int32))


# Labels ######################################################################


@pytest.mark.parametrize('suffix', ['.meta', '.txt', '.npy'])
def test_labels_round_trip(tmp_path, suffix):
    y = np.array([3, -1, 0, 12345678901, 3, -7])
    path = save_labels(tmp_path / f'y{suffix}', torch.from_numpy(y))
    out = load_labels(path, num_samples=6)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, y)
    with pytest.raises(FileExistsError):
        save_labels(path, y)
    save_labels(path, y[:2], overwrite=True)
    np.testing.assert_array_equal(load_labels(path), y[:2])


def test_labels_npz(tmp_path):
    np.savez(tmp_path / 'y.npz', labels=np.arange(4, dtype=np.int32), other=np.ones(2))
    np.testing.assert_array_equal(load_labels(tmp_path / 'y.npz'), np.arange(4))


def test_meta_parsing(tmp_path):
    path = tmp_path / 'y.meta'
    path.write_bytes(b'1\r\n 2 \n-1')  # CRLF, padding, no final newline.
    np.testing.assert_array_equal(load_labels(path), [1, 2, -1])
    assert count_lines(path) == 3
    path.write_bytes(b'1\n2\n3.5\n4\n')
    with pytest.raises(ValueError, match="line 3: .*'3.5'"):
        load_labels(path)
    path.write_bytes(b'1\n\n2\n')
    with pytest.raises(ValueError, match='line 2'):
        load_labels(path)
    path.write_bytes(b'\n')
    with pytest.raises(ValueError, match='line 1'):
        load_labels(path)


def test_labels_errors(tmp_path):
    np.save(tmp_path / 'y2.npy', np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match='1-D'):
        load_labels(tmp_path / 'y2.npy')
    np.save(tmp_path / 'yf.npy', np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match='integers'):
        load_labels(tmp_path / 'yf.npy')
    save_labels(tmp_path / 'y.meta', np.arange(5))
    with pytest.raises(ValueError, match='holds 5 labels, expected 6'):
        load_labels(tmp_path / 'y.meta', num_samples=6)
    with pytest.raises(ValueError, match='1-D integer'):
        save_labels(tmp_path / 'z.meta', np.zeros(3))
    with pytest.raises(ValueError, match='extension'):
        save_labels(tmp_path / 'z.npz', np.zeros(3, dtype=np.int64))


# kNN #########################################################################


@pytest.mark.parametrize('similarity', [False, True])
@pytest.mark.parametrize('with_self', [True, False])
def test_knn_round_trip(tmp_path, similarity, with_self):
    x = _features(40, 5)
    knn = _knn(x, 6)
    path = write_knn(
        tmp_path / 'knn.npz', knn, similarity=similarity, with_self=with_self
    )
    with np.load(path) as f:
        data = f['data']
    assert data.shape == (40, 2, 6 if with_self else 5)
    if not similarity:  # Distances ascending, self first at distance 0.
        assert (np.diff(data[:, 1], axis=1) >= -1e-6).all()
        if with_self:
            np.testing.assert_allclose(data[:, 1, 0], 0, atol=1e-6)
    out = read_knn(path, num_nodes=40, k=6, similarity=similarity, with_self=with_self)
    assert out.index.dtype == torch.long and out.sim.dtype == torch.float32
    assert torch.equal(out.index, knn.index)
    torch.testing.assert_close(out.sim, knn.sim, atol=1e-6, rtol=0)


def test_knn_learn_to_cluster_layout(tmp_path):
    ids = np.array([[0, 2, 1], [1, 0, 2], [2, 1, 0]], dtype=np.float32)
    dist = np.array([[0, 0.1, 0.4], [0, 0.2, 0.3], [0, 0.1, 0.5]], dtype=np.float32)
    np.savez(tmp_path / 'knn.npz', data=np.stack([ids, dist], axis=1))
    out = read_knn(tmp_path / 'knn.npz')
    assert out.index.tolist() == ids.astype(int).tolist()
    torch.testing.assert_close(out.sim, torch.from_numpy(1 - dist))
    # The same file read as a no-self file gains a self column.
    out = read_knn(tmp_path / 'knn.npz', with_self=False)
    assert out.k == 4 and out.index[:, 0].tolist() == [0, 1, 2]
    assert out.sim[:, 0].tolist() == [1.0, 1.0, 1.0]


def test_knn_errors(tmp_path):
    good = np.zeros((4, 2, 3), dtype=np.float32)
    good[:, 0] = np.arange(3)
    np.savez(tmp_path / 'key.npz', knn=good)
    with pytest.raises(ValueError, match="no key 'data'"):
        read_knn(tmp_path / 'key.npz')
    np.savez(tmp_path / 'rank.npz', data=good[:, 0])
    with pytest.raises(ValueError, match=r'\[N, 2, k\]'):
        read_knn(tmp_path / 'rank.npz')
    np.savez(tmp_path / 'shape.npz', data=np.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match=r'\[N, 2, k\]'):
        read_knn(tmp_path / 'shape.npz')
    np.savez(tmp_path / 'good.npz', data=good)
    with pytest.raises(ValueError, match='expected num_nodes=5'):
        read_knn(tmp_path / 'good.npz', num_nodes=5)
    with pytest.raises(ValueError, match='expected k=2'):
        read_knn(tmp_path / 'good.npz', k=2)
    with pytest.raises(ValueError, match=r'3 stored \+ self.*k=3'):
        read_knn(tmp_path / 'good.npz', k=3, with_self=False)
    bad = good.copy()
    bad[2, 0, 1] = 4
    np.savez(tmp_path / 'range.npz', data=bad)
    with pytest.raises(ValueError, match=r'\[0, 4\).*\[0, 4\]'):
        read_knn(tmp_path / 'range.npz')
    bad[2, 0, 1] = -1
    np.savez(tmp_path / 'neg.npz', data=bad)
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        read_knn(tmp_path / 'neg.npz')
    bad[2, 0, 1] = 1.5
    np.savez(tmp_path / 'frac.npz', data=bad)
    with pytest.raises(ValueError, match='integers'):
        read_knn(tmp_path / 'frac.npz')
    (tmp_path / 'junk.npz').write_bytes(b'garbage')
    with pytest.raises(ValueError, match='not a valid .npz'):
        read_knn(tmp_path / 'junk.npz')
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        read_knn(tmp_path / 'missing.npz')


def test_write_knn_errors(tmp_path):
    knn = _knn(_features(10, 4), 3)
    write_knn(tmp_path / 'k.npz', knn)
    with pytest.raises(FileExistsError):
        write_knn(tmp_path / 'k.npz', knn)
    shuffled = KNN(knn.index.flip(1), knn.sim.flip(1))
    with pytest.raises(ValueError, match='must be each node itself'):
        write_knn(tmp_path / 'k2.npz', shuffled, with_self=False)
    with pytest.raises(ValueError, match=r'\[N, k\]'):
        write_knn(tmp_path / 'k3.npz', KNN(knn.index, knn.sim[:, :2]))


# Bad input ###################################################################


def _load_bin_with_meta(tmp: Path, x: np.ndarray, num: int) -> Any:
    save_labels(tmp / 'f.meta', np.zeros(num, dtype=np.int64))
    return load_features(write_bin(tmp, x))


# Each bad file is refused with an error naming the problem.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'missing file',
        lambda t, g: load_features(t / 'x.npy'),
        FileNotFoundError,
        'no such file',
    ),
    ('directory', lambda t, g: load_labels(t), IsADirectoryError, 'directory'),
    ('empty .meta', lambda t, g: load_labels(write_meta(t, '')), ValueError, 'empty'),
    (
        'truncated .bin',
        lambda t, g: load_features(write_bin(t, g['x'], trim=4), dim=D),
        ValueError,
        'truncated',
    ),
    (
        '.bin size not 4*D',
        lambda t, g: load_features(write_bin(t, g['x']), dim=7),
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
        lambda t, g: load_features(write_bin(t, g['x']), dim=0),
        ValueError,
        'dim must be a positive integer',
    ),
    (
        '.meta non-integer',
        lambda t, g: load_labels(write_meta(t, '1\nx\n')),
        ValueError,
        "line 2: .*'x'",
    ),
    (
        '.meta blank line',
        lambda t, g: load_labels(write_meta(t, '1\n\n2\n')),
        ValueError,
        'line 2',
    ),
    (
        'labels count',
        lambda t, g: load_labels(write_meta(t, '1\n2\n'), num_samples=3),
        ValueError,
        'holds 2 labels, expected 3',
    ),
    (
        '.npy wrong dtype',
        lambda t, g: load_features(write_npy(t, 'b.npy', np.ones((4, 2), bool))),
        ValueError,
        'floating point',
    ),
    (
        '.npy wrong rank',
        lambda t, g: load_features(write_npy(t, 'r.npy', np.ones(4, np.float32))),
        ValueError,
        '2-D',
    ),
    (
        'labels .npy wrong rank',
        lambda t, g: load_labels(write_npy(t, 'y.npy', np.ones((4, 1), np.int64))),
        ValueError,
        '1-D',
    ),
    (
        'kNN cache k',
        lambda t, g: read_knn(g['root'] / 'knn.npz', k=K + 1),
        ValueError,
        f'expected k={K + 1}',
    ),
    (
        'kNN cache N',
        lambda t, g: read_knn(g['root'] / 'knn.npz', num_nodes=N + 1),
        ValueError,
        f'expected num_nodes={N + 1}',
    ),
    (
        'kNN cache fractional ids',
        lambda t, g: read_knn(write_knn_file(t, knn_array(g['knn'], id=2.5))),
        ValueError,
        'finite integers',
    ),
    (
        'kNN cache Inf distances',
        lambda t, g: read_knn(write_knn_file(t, knn_array(g['knn'], dist=np.inf))),
        ValueError,
        'must be finite',
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


def test_float128_features_are_refused_with_the_file(tmp_path):
    if not hasattr(np, 'float128'):  # pragma: no cover (platform without it)
        pytest.skip('numpy has no float128 on this platform')
    path = tmp_path / 'x.npy'
    np.save(path, np.ones((4, 3), dtype=np.float128))
    with pytest.raises(ValueError, match=r'x\.npy have dtype float128'):
        load_features(path)


def test_big_endian_features_are_read_in_native_order(tmp_path):
    x = np.random.default_rng(0).standard_normal((20, 4))
    path = tmp_path / 'x.npy'
    np.save(path, x.astype('>f4'))
    y = load_features(path)
    assert y.dtype.isnative and y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    from torch_geometric_sdt.nn.knn import knn

    assert knn(y, 3).index.shape == (20, 3)


def test_huge_integer_label_names_its_line(tmp_path):
    path = tmp_path / 'y.meta'
    path.write_text('1\n2\n' + '9' * 23 + '\n')
    with pytest.raises(ValueError, match=r'line 3: label .* 64-bit integer range'):
        load_labels(path)


def _knn_npz(path, ids, dist):
    np.savez(path, data=np.stack([np.asarray(ids, float), np.asarray(dist)], axis=1))
    return path


def test_read_knn_sorts_rows_and_puts_self_first(tmp_path):
    ids = [[0, 2, 1], [1, 0, 2], [1, 2, 0]]  # row 2: a duplicate listed first
    dist = [[0.0, 0.5, 0.2], [0.0, 0.1, 0.3], [0.0, 0.0, 0.4]]
    graph = read_knn(_knn_npz(tmp_path / 'a.npz', ids, dist))
    assert graph.index.tolist() == [[0, 1, 2], [1, 0, 2], [2, 1, 0]]
    assert graph.sim[0].tolist() == pytest.approx([1.0, 0.8, 0.5])
    assert graph.sim[2].tolist() == pytest.approx([1.0, 1.0, 0.6])


def test_read_knn_refuses_rows_without_self_first(tmp_path):
    path = _knn_npz(tmp_path / 'a.npz', [[0, 1], [0, 1]], [[0.0, 0.1], [0.0, 0.1]])
    with pytest.raises(ValueError, match='row 1 does not list node 1 first'):
        read_knn(path)
    assert read_knn(path, with_self=False).index.tolist() == [[0, 0, 1], [1, 0, 1]]


# Sharded features ############################################################


def _parts(tmp_path, x, sizes, suffix):
    folder = tmp_path / 'parts'
    folder.mkdir()
    lo = 0
    for i, size in enumerate(sizes):
        part = x[lo : lo + size]
        if suffix == '.npy':
            np.save(folder / f'part-{i:05d}.npy', part)
        elif suffix == '.bin':
            part.astype('<f4').tofile(folder / f'part-{i:05d}.bin')
        else:
            pa = pytest.importorskip('pyarrow')
            pq = pytest.importorskip('pyarrow.parquet')
            table = pa.table({'id': np.arange(lo, lo + size), 'emb': list(part)})
            pq.write_table(table, folder / f'part-{i:05d}.parquet')
        lo += size
    return folder


@pytest.mark.parametrize('suffix', ['.npy', '.bin', '.parquet'])
def test_feature_shards_of_a_folder(tmp_path, suffix):
    x = np.random.default_rng(0).standard_normal((23, 5)).astype(np.float32)
    folder = _parts(tmp_path, x, [10, 3, 10], suffix)
    (folder / 'README.txt').write_text('not a part')
    shards = io.feature_shards(
        folder, dim=5 if suffix == '.bin' else None, column='emb'
    )
    assert shards.sizes == [10, 3, 10] and shards.dim == 5
    assert shards.names == [f'part-{i:05d}{suffix}' for i in range(3)]
    got = np.concatenate([shards.read(p) for p in range(len(shards))])
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(shards.take(np.array([2, 12, 22])), x[[2, 12, 22]])


def test_feature_shards_split_one_file_into_row_ranges(tmp_path):
    x = np.random.default_rng(1).standard_normal((25, 4)).astype(np.float32)
    path = tmp_path / 'x.npy'
    np.save(path, x)
    shards = io.feature_shards(path, rows_per_part=10)
    assert shards.sizes == [10, 10, 5]
    assert shards.names == ['x.npy[0:10]', 'x.npy[10:20]', 'x.npy[20:25]']
    np.testing.assert_array_equal(shards.read(2), x[20:])
    assert io.feature_shards(path).sizes == [25]


def test_feature_shards_refuse_bad_folders(tmp_path):
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(FileNotFoundError):
        io.feature_shards(tmp_path / 'missing')
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='holds no feature parts'):
        io.feature_shards(empty)
    mixed = tmp_path / 'mixed'
    mixed.mkdir()
    np.save(mixed / 'a.npy', x)
    x.tofile(mixed / 'b.bin')
    with pytest.raises(ValueError, match='mixes part formats'):
        io.feature_shards(mixed)
    dims = tmp_path / 'dims'
    dims.mkdir()
    np.save(dims / 'a.npy', x)
    np.save(dims / 'b.npy', np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match='different dimensions'):
        io.feature_shards(dims)
    with pytest.raises(ValueError, match='pass dim='):
        io.feature_shards(_parts(tmp_path, x, [4], '.bin'))
    npz = tmp_path / 'x.npz'
    np.savez(npz, x=x)
    with pytest.raises(ValueError, match='extension'):
        io.feature_shards(npz)
    with pytest.raises(ValueError, match='rows_per_part'):
        io.feature_shards(dims / 'a.npy', rows_per_part=0)


def test_feature_shards_refuse_bad_parquet(tmp_path):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    path = tmp_path / 'x.parquet'
    pq.write_table(pa.table({'emb': [[1.0, 2.0], [3.0, 4.0]]}), path)
    with pytest.raises(ValueError, match="no column 'embedding'"):
        io.feature_shards(path)
    pq.write_table(pa.table({'embedding': [1.0, 2.0]}), path)
    with pytest.raises(ValueError, match='lists of floats'):
        io.feature_shards(path)
    pq.write_table(pa.table({'embedding': [[1.0, 2.0], [3.0]]}), path)
    shards = io.feature_shards(path)
    with pytest.raises(ValueError, match='different lengths'):
        shards.read(0)
    path.write_bytes(b'not parquet at all')
    with pytest.raises(ValueError, match='not a valid Parquet file'):
        io.feature_shards(path)


def test_save_shard_labels_writes_one_file_per_part_atomically(tmp_path):
    x = np.zeros((7, 2), np.float32)
    folder = _parts(tmp_path, x, [3, 4], '.npy')
    shards = io.feature_shards(folder)
    y = np.arange(7)
    out = tmp_path / 'labels'
    io.save_shard_labels(out, y, shards)
    assert sorted(p.name for p in out.iterdir()) == [
        'part-00000.meta',
        'part-00001.meta',
    ]
    np.testing.assert_array_equal(io.load_labels(out / 'part-00001.meta'), y[3:])
    with pytest.raises(ValueError, match='exists'):
        io.save_shard_labels(out, y, shards)
    io.save_shard_labels(out, y[::-1].copy(), shards, suffix='.npy', overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ['part-00000.npy', 'part-00001.npy']
    with pytest.raises(ValueError, match='shape'):
        io.save_shard_labels(tmp_path / 'other', y[:3], shards)
    # Parts of one file are numbered; nothing is left beside the folder.
    single = io.feature_shards(folder / 'part-00001.npy', rows_per_part=2)
    io.save_shard_labels(tmp_path / 'single', y[:4], single)
    assert sorted(p.name for p in (tmp_path / 'single').iterdir()) == [
        'part-00001-00000.meta',
        'part-00001-00001.meta',
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []
