"""Shared fixtures.

Real data and prebuilt wheels live in ``../shared`` beside the clone (or in
``$SDT_SHARED``). Tests that need them skip with a reason when it is absent.
Slow tests use :func:`torch_geometric.testing.onlyFullTest` and run only with
``FULL_TEST=1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torch_geometric_sdt import io
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.testing import GOOD_D, GOOD_K, GOOD_N

SHARED = Path(
    os.environ.get('SDT_SHARED', Path(__file__).resolve().parents[1].parent / 'shared')
)
LFW = SHARED / 'data' / 'lfw_mobilefacenet192'


@pytest.fixture(scope='module')
def ray_exclusive(tmp_path_factory: pytest.TempPathFactory):
    """Holds, for a module, a lock that every pytest-xdist worker of the
    session shares, so that modules that start Ray never overlap when the
    suite runs as plain ``pytest -n 2``: a worker whose Ray session ran
    beside another worker's two-node ``ray.cluster_utils.Cluster`` died
    ("node down"). ``scripts/test.sh`` goes further: it runs the modules
    marked ``ray`` after the others, each in a pytest process of its own."""
    from filelock import FileLock

    # The workers' temporary folders share this parent.
    root = tmp_path_factory.getbasetemp().parent
    with FileLock(str(root / 'torch_geometric_sdt_ray.lock')):
        yield


@pytest.fixture(scope='session')
def lfw() -> tuple[np.ndarray, np.ndarray]:
    """LFW MobileFaceNet embeddings ``(x [13233, 192] float32, y [13233] int64)``."""
    if not (LFW / 'features.npy').exists():
        pytest.skip(f'real data not found at {LFW} (set SDT_SHARED)')
    return np.load(LFW / 'features.npy'), np.load(LFW / 'labels.npy')


@pytest.fixture(scope='session')
def tiny_sdt() -> dict:
    """:class:`SDTClusterer` options of a model small enough to train in
    seconds."""
    return dict(
        hidden_channels=16,
        predictor_channels=16,
        heads=2,
        num_layers=1,
        predictor_layers=1,
    )


@pytest.fixture(scope='session')
def fast_fit() -> dict:
    """:func:`~torch_geometric_sdt.train.fit` options of a training run of a
    few steps."""
    return dict(
        topk_epochs=2,
        sdt_epochs=2,
        max_steps_per_epoch=3,
        topk_batch_size=64,
        pair_batch_size=128,
        eta_grid=(0.3, 0.5, 0.7),
    )


@pytest.fixture(scope='session')
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The well-formed data set the bad-input cases spoil: ``x``
    ``[GOOD_N, GOOD_D]`` float32, ``y`` ``[GOOD_N]``, their kNN graph ``knn``
    (``k = GOOD_K``) and a folder ``root`` with ``x.npy``, ``y.meta`` and
    ``knn.npz``. Tests must not write into ``root``."""
    x, y = synthetic_faces(GOOD_N, dim=GOOD_D, seed=3)
    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    root = tmp_path_factory.mktemp('good')
    np.save(root / 'x.npy', x)
    io.save_labels(root / 'y.meta', y)
    graph = knn(x, GOOD_K)
    io.write_knn(root / 'knn.npz', graph)
    return {'root': root, 'x': x, 'y': y, 'knn': graph}
