from __future__ import annotations

import numpy as np
import pytest
import torch

from torch_geometric_sdt.datasets import load_embeddings
from torch_geometric_sdt.io import save_features, save_labels


def _xy(n: int = 30, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, rng.integers(-1, 5, n)


def test_folder(tmp_path):
    x, y = _xy()
    np.save(tmp_path / 'features.npy', x)
    np.save(tmp_path / 'labels.npy', y)
    (tmp_path / 'identities.txt').write_text('\n'.join('abcde') + '\n')
    data = load_embeddings(tmp_path)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.long
    np.testing.assert_array_equal(data.x.numpy(), x)
    np.testing.assert_array_equal(data.y.numpy(), y)
    assert data.identities == list('abcde')
    xn, yn = load_embeddings(tmp_path, return_numpy=True)
    assert isinstance(xn, np.memmap)
    np.testing.assert_array_equal(yn, y)
    (tmp_path / 'identities.txt').write_text('a\nb\n')
    with pytest.raises(ValueError, match='names only 2'):
        load_embeddings(tmp_path)


def test_unlabeled_folder(tmp_path):
    x, _ = _xy()
    save_features(tmp_path / 'features.bin', x)
    with pytest.raises(ValueError, match='pass dim='):
        load_embeddings(tmp_path)
    data = load_embeddings(tmp_path, dim=6)
    assert data.y is None
    np.testing.assert_array_equal(data.x.numpy(), x)


def test_learn_to_cluster_layout(tmp_path):
    x, y = _xy(40, 8)
    (tmp_path / 'features').mkdir()
    (tmp_path / 'labels').mkdir()
    save_features(tmp_path / 'features' / 'part1_test.bin', x)
    save_labels(tmp_path / 'labels' / 'part1_test.meta', y)
    data = load_embeddings(tmp_path / 'features' / 'part1_test.bin')
    np.testing.assert_array_equal(data.x.numpy(), x)
    np.testing.assert_array_equal(data.y.numpy(), y)
    # Labels beside the features win, and dim follows from their count.
    save_labels(tmp_path / 'features' / 'part1_test.meta', y[:7])
    with pytest.raises(ValueError, match='N=7'):
        load_embeddings(tmp_path / 'features' / 'part1_test.bin')


def test_label_count_mismatch(tmp_path):
    x, y = _xy()
    np.save(tmp_path / 'x.npy', x)
    save_labels(tmp_path / 'y.txt', y[:-1])
    with pytest.raises(ValueError, match='29 labels but .* 30 feature rows'):
        load_embeddings(tmp_path / 'x.npy', labels=tmp_path / 'y.txt')


def test_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'):
        load_embeddings(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='no features file'):
        load_embeddings(tmp_path)


def test_lfw(lfw):
    from test.conftest import LFW  # noqa: PLC0415

    x, y = lfw
    data = load_embeddings(LFW)
    assert data.x.shape == (13_233, 192) and data.y.shape == (13_233,)
    assert len(data.identities) == 5_749
    assert torch.equal(data.y, torch.from_numpy(y))
    torch.testing.assert_close(data.x.norm(dim=1), torch.ones(13_233))
    assert torch.bincount(data.y).eq(1).sum() == 4_069
