"""End to end through the command line, in subprocesses: a run leaves no
file behind in ``$TMPDIR`` or beside its output, and removes what a run
killed outright (``SIGKILL``) left there."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path):
    """Runs ``python -c CODE`` or ``python -m torch_geometric_sdt ARGS`` with
    its own ``$TMPDIR`` (``tmp_path / 'tmp'``), bytecode writing on and
    torch's compile cache elsewhere, so that ``$TMPDIR`` holds only what this
    package leaves."""
    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    env['TORCHINDUCTOR_CACHE_DIR'] = str(tmp_path / 'inductor')
    env.pop('PYTHONDONTWRITEBYTECODE', None)

    def call(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, '-c', code, *args] if code else [sys.executable]
        if code is None:
            cmd += ['-m', 'torch_geometric_sdt', *args]
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    call.tmp = tmp
    return call


@pytest.fixture
def points(tmp_path) -> Path:
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    return tmp_path / 'x.npy'


def _cluster(points: Path, out: Path, *extra: str) -> list[str]:
    args = ['cluster', str(points), '-o', str(out), '-k', '10', '--quiet']
    return [*args, *extra] if extra else [*args, '--method', 'infomap-knn']


def test_sdt_run_leaves_nothing_in_tmpdir(run, points, tmp_path):
    # The conv's generated propagate/edge_updater modules (and their
    # bytecode) and Infomap's scratch folder all go.
    from torch_geometric_sdt.nn.models import SDTClusterer

    model = tmp_path / 'tiny.safetensors'
    SDTClusterer(
        k=10, hidden_channels=8, predictor_channels=8, heads=2, band=(2, 8)
    ).save(model)
    out = tmp_path / 'out' / 'p.meta'
    out.parent.mkdir()
    res = run(*_cluster(points, out, '--method', 'sdt', '--model', str(model)))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(run.tmp)) == []
    assert os.listdir(out.parent) == ['p.meta']


_KILL_IN_WRITE = """
import os, signal, sys
from torch_geometric_sdt.utils.atomic import atomic_write
with atomic_write(sys.argv[1]) as tmp:
    tmp.write_bytes(b'partial')
    os.kill(os.getpid(), signal.SIGKILL)
"""

_KILL_IN_INFOMAP = """
import os, signal, sys, torch
import torch_geometric_sdt.utils.infomap
module = sys.modules['torch_geometric_sdt.utils.infomap']
def die(*args, **kwargs):  # once Infomap has written its modules
    os.kill(os.getpid(), signal.SIGKILL)
module.np.loadtxt = die
module.infomap(torch.tensor([[0, 1], [1, 0]]))
"""


def test_next_run_removes_a_killed_write_temporary(run, points, tmp_path):
    out = tmp_path / 'out' / 'p.meta'
    out.parent.mkdir()
    killed = run(str(out), code=_KILL_IN_WRITE)
    assert killed.returncode == -signal.SIGKILL
    (left,) = os.listdir(out.parent)
    assert re.fullmatch(r'\.p\.\d+\.[a-z0-9_]+\.tmp\.meta', left)
    res = run(*_cluster(points, out))
    assert res.returncode == 0, res.stderr
    assert os.listdir(out.parent) == ['p.meta']


def test_next_run_removes_a_killed_infomap_scratch(run, points, tmp_path):
    killed = run(code=_KILL_IN_INFOMAP)
    assert killed.returncode == -signal.SIGKILL
    (left,) = os.listdir(run.tmp)
    assert re.fullmatch(r'sdt-infomap-\d+-[a-z0-9_]+', left)
    assert os.listdir(run.tmp / left) == ['modules.clu']
    # The scratch of a live process and others' files stay:
    live = run.tmp / f'sdt-infomap-{os.getpid()}-live01'
    live.mkdir()
    other = run.tmp / 'sdt-infomap-notapid'
    other.mkdir()
    res = run(*_cluster(points, tmp_path / 'p.meta'))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(run.tmp)) == sorted([live.name, other.name])


def test_infomap_seed_outside_its_range_is_one_line(run, points, tmp_path):
    out = tmp_path / 'p.meta'
    for seed in ('99999999999999999999', str(2**32)):
        res = run(*_cluster(points, out), '--infomap-seed', seed)
        assert res.returncode == 2, res.stderr
        err = res.stderr.strip()
        assert 'Traceback' not in err and len(err.splitlines()) == 1, err
        assert "'seed' must be an integer in [1, 4294967295]" in err
        assert not out.exists()
