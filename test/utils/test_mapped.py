from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from torch_geometric_sdt.io import load_features
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.nn.knn.common import prepare
from torch_geometric_sdt.utils.mapped import (
    readonly_mapping,
    release_rows,
)

MB = 2**20
linux = pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='reads /proc/self/status'
)


def rss_file() -> int:
    r"""Resident pages of mapped files in this process (bytes)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('RssFile:'):
                return int(line.split()[1]) * 1024
    raise AssertionError('no RssFile in /proc/self/status')


@pytest.fixture
def features(tmp_path):
    # 64 MiB of float32: large against what a test process maps otherwise.
    x = np.random.default_rng(0).standard_normal((65_536, 256), dtype=np.float32)
    x[3] *= 1e30  # a row that prepare rescales before normalising
    np.save(tmp_path / 'x.npy', x)
    return tmp_path / 'x.npy', x


def test_readonly_mapping_only_for_read_only_memmaps(features, tmp_path):
    path, x = features
    mapped = np.load(path, mmap_mode='r')
    assert readonly_mapping(mapped) is not None
    assert readonly_mapping(mapped[10:20]) is not None  # a view of one
    assert readonly_mapping(load_features(path)) is not None
    # Releasing the pages of these would drop changes never written back:
    assert readonly_mapping(np.load(path, mmap_mode='c')) is None
    assert readonly_mapping(np.load(path, mmap_mode='r+')) is None
    assert readonly_mapping(x) is None
    assert readonly_mapping(torch.from_numpy(x)) is None
    assert readonly_mapping(None) is None


@linux
def test_release_rows_hands_pages_back_and_keeps_the_data(features):
    path, x = features
    mapped = np.load(path, mmap_mode='r')
    before = rss_file()
    total = float(np.asarray(mapped, dtype=np.float64).sum())  # maps every page
    assert rss_file() - before > 48 * MB
    release_rows(mapped, 0, len(mapped))
    assert rss_file() - before < 4 * MB
    # The data read again equal the file's:
    assert float(np.asarray(mapped, dtype=np.float64).sum()) == total
    np.testing.assert_array_equal(mapped[:5], x[:5])
    # Anything else is left alone:
    release_rows(x, 0, len(x))
    release_rows(mapped, 5, 5)


@linux
def test_prepare_reads_mapped_features_without_keeping_them(features):
    path, x = features
    want, _ = prepare(torch.from_numpy(x), 'cosine')  # maps torch's kernels
    mapped = load_features(path)
    before = rss_file()
    got, device = prepare(mapped, 'cosine')
    assert rss_file() - before < 8 * MB  # the 64 MiB file is not kept mapped
    assert device == torch.device('cpu') and torch.equal(got, want)
    # Rows are unit-norm, the rescaled one too:
    norms = torch.linalg.vector_norm(got, dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64])
def test_prepare_by_chunks_equals_one_pass(dtype):
    # Rows normalised chunk by chunk equal the whole matrix divided by its
    # row norms.
    x = torch.randn(70_000, 300, generator=torch.Generator().manual_seed(1))
    x = x.to(dtype)
    got, _ = prepare(x, 'cosine')
    ref = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    want = ref / torch.linalg.vector_norm(ref, dim=1, keepdim=True)
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert not got.data_ptr() == x.data_ptr()  # the caller's x is not changed


def test_knn_of_mapped_features_equals_in_memory(features):
    path, x = features
    a = knn(load_features(path)[:3000], 10, backend='exact')
    b = knn(x[:3000].copy(), 10, backend='exact')
    assert torch.equal(a.index, b.index) and torch.equal(a.sim, b.sim)


@linux
def test_noise_scale_reads_a_sample_of_mapped_rows_only(features):
    from torch_geometric_sdt.utils.knn_features import noise_scale

    path, x = features
    want = noise_scale(x)
    noise_scale(x)  # maps the code it runs
    mapped = load_features(path)
    before = rss_file()
    got = noise_scale(mapped)
    # Read-ahead maps megabytes around every sampled row; they go back:
    assert rss_file() - before < 8 * MB
    assert got == want
