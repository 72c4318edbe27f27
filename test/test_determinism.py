r"""Same input and seed, same result on the CPU: for every kNN backend that
is seedable and for every clustering method, within one process and across
processes (a fresh interpreter with another hash seed).

Training is covered in ``test/test_train.py`` (two runs with one seed give
identical weights; a run stopped after an epoch and resumed from its
checkpoint reaches the same weights and :math:`\eta` as an uninterrupted one)
and below: two processes train the same weights, and, with ``FULL_TEST=1``, a
run interrupted by Ctrl-C in the middle of an epoch resumes to the same
weights and labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.testing import onlyFullTest
from torch_geometric.testing.decorators import is_full_test

import torch_geometric_sdt.typing as sdt_typing
from torch_geometric_sdt.baselines import cluster_knn
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer
from torch_geometric_sdt.pretrained import default_model_path

ROOT = Path(__file__).resolve().parents[1]
NUM, DIM, K = 500, 32, 80  # k of the shipped model


@pytest.fixture(scope='module')
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = synthetic_faces(NUM, dim=DIM, seed=11)
    return np.asarray(x, dtype=np.float32), np.asarray(y)


def _labels(x: np.ndarray, method: str, seed: int = 123) -> torch.Tensor:
    graph = knn(x, K, backend='exact')
    if method == 'sdt':
        return SDTClusterer.load(default_model_path()).cluster(
            x, graph=graph, seed=seed
        )
    return cluster_knn(graph, method=method, seed=seed)


_SLOW = pytest.mark.skipif(
    not is_full_test(), reason='numba compilation takes ~30 s (FULL_TEST=1)'
)
_FAISS = pytest.mark.skipif(not sdt_typing.WITH_FAISS, reason='needs faiss')


@pytest.mark.parametrize(
    'backend,options',
    [
        ('exact', {}),
        ('exact', {'symmetric': False, 'col_chunk_size': 256}),
        pytest.param('faiss', {}, marks=_FAISS),
        pytest.param('faiss-hnsw', {}, marks=_FAISS),
        pytest.param('faiss-ivf', {'nlist': 8}, marks=_FAISS),
        pytest.param('pynndescent', {'random_state': 7}, marks=_SLOW),
    ],
    ids=['exact', 'exact-chunked', 'faiss', 'faiss-hnsw', 'faiss-ivf', 'pynndescent'],
)
def test_knn_backends_are_deterministic(data, backend, options):
    x, _ = data
    a = knn(x, 20, backend=backend, **dict(options))
    b = knn(x, 20, backend=backend, **dict(options))
    assert torch.equal(a.index, b.index)
    assert torch.equal(a.sim, b.sim)
    assert torch.equal(a.index[:, 0], torch.arange(NUM))


@pytest.mark.parametrize('method', ['infomap-knn', 'fc-es', 'sdt'])
def test_methods_are_deterministic(data, method):
    x, y = data
    a, b = _labels(x, method), _labels(x, method)
    assert torch.equal(a, b)
    assert a.shape == (NUM,) and int(a.min()) == 0
    assert 1 < int(a.max()) + 1 < NUM  # neither one cluster nor all singletons


_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_determinism import _labels
x = np.load(sys.argv[1])
print(json.dumps({m: _labels(x, m).tolist() for m in ('infomap-knn', 'fc-es', 'sdt')}))
"""


def _child_output(code: str, *args: str, hash_seed: str = '12345') -> str:
    r"""Runs :obj:`code` in a fresh interpreter (another hash seed) and
    returns the last line it printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=hash_seed)
    res = subprocess.run(
        [sys.executable, '-c', code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


@onlyFullTest  # A second interpreter pays the whole import again.
def test_same_labels_in_a_fresh_process(data, tmp_path):
    x, _ = data
    np.save(tmp_path / 'x.npy', x)
    line = _child_output(_CHILD, str(tmp_path / 'x.npy'), str(ROOT / 'test'))
    child = json.loads(line)
    for method, labels in child.items():
        assert labels == _labels(x, method).tolist(), method


def test_cli_gives_the_api_labels(data, tmp_path):
    from torch_geometric_sdt import io
    from torch_geometric_sdt.cli import main

    x, _ = data
    np.save(tmp_path / 'x.npy', x)
    out = tmp_path / 'pred.meta'
    argv = [
        'cluster',
        str(tmp_path / 'x.npy'),
        '-o',
        str(out),
        '--method',
        'fc-es',
        '-k',
        str(K),
        '--backend',
        'exact',
        '-q',
    ]
    assert main(argv) == 0
    np.testing.assert_array_equal(io.load_labels(out), _labels(x, 'fc-es').numpy())


# Training interrupted mid-epoch ##############################################


@onlyFullTest  # Three short trainings; test_train.py resumes by default.
def test_training_interrupted_mid_epoch_resumes_to_the_same_result(
    tmp_path, monkeypatch, tiny_sdt, fast_fit
):
    from torch_geometric_sdt.train import STATE_FILE, fit

    fast_fit = {**fast_fit, 'seed': 4}

    x, y = synthetic_faces(400, dim=16, seed=8)
    ref = SDTClusterer(k=10, **tiny_sdt)
    fit(ref, x, y, **fast_fit)

    # Ctrl-C in the middle of the first SDT epoch (optimiser step 8 of 12):
    steps = {'n': 0}
    step = torch.optim.Adam.step

    def interrupting_step(self, *args, **kwargs):
        steps['n'] += 1
        if steps['n'] == 8:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, 'step', interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        fit(SDTClusterer(k=10, **tiny_sdt), x, y, checkpoint_dir=tmp_path, **fast_fit)
    monkeypatch.setattr(torch.optim.Adam, 'step', step)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temp

    resumed = SDTClusterer(k=10, **tiny_sdt)
    fit(resumed, x, y, checkpoint_dir=tmp_path, resume=True, **fast_fit)
    for (name, p), q in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.config == ref.config
    assert torch.equal(resumed.cluster(x), ref.cluster(x))


# Training across processes ###################################################

_TRAIN_CHILD = r"""
import hashlib, torch
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer
from torch_geometric_sdt.train import fit

x, y = synthetic_faces(3000, 64, seed=0)
model = SDTClusterer(k=20)
fit(model, x, y, seed=0, topk_epochs=2, sdt_epochs=2, max_steps_per_epoch=10)
h = hashlib.sha256()
for value in model.state_dict().values():
    h.update(value.detach().contiguous().numpy().tobytes())
print(h.hexdigest(), model.config['eta'])
"""


def test_training_gives_the_same_weights_in_two_processes():
    # Two runs inside one process agreed while separate processes did not
    # (the SDT blocks' scatter-based attention), until fit() ran with
    # deterministic algorithms.
    out = [_child_output(_TRAIN_CHILD, hash_seed=seed) for seed in ('1', '2')]
    assert out[0] == out[1]


def test_fit_restores_the_deterministic_setting(tiny_sdt, fast_fit):
    from torch_geometric_sdt.train import fit

    x, y = synthetic_faces(300, dim=16, seed=5)
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    seen = {}

    class Probe(SDTClusterer):
        def train(self, mode: bool = True):
            seen['deterministic'] = torch.are_deterministic_algorithms_enabled()
            return super().train(mode)

    fit(Probe(k=10, **tiny_sdt), x, y, **fast_fit)
    assert seen['deterministic'] is True
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
