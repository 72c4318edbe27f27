from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba

import torch_geometric_sdt
from torch_geometric_sdt.utils import _numba

PACKAGE = Path(torch_geometric_sdt.__file__).resolve().parent

RUN_KERNELS = """
import torch
from torch_geometric_sdt.utils import topk_jaccard
index = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
sim = torch.tensor([[1.0, 0.9, 0.2], [1.0, 0.9, 0.3], [1.0, 0.3, 0.2]])
topk_jaccard(index, sim, 2)
"""


def numba_files() -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in PACKAGE.rglob('*.nb[ic]')}


def test_kernels_cache_outside_the_package(tmp_path: Path):
    before = numba_files()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    env.pop('NUMBA_CACHE_DIR', None)
    env.pop('NUMBA_DISABLE_JIT', None)
    subprocess.run([sys.executable, '-c', RUN_KERNELS], env=env, check=True)
    assert numba_files() == before  # nothing written into the package
    cached = list((tmp_path / 'torch_geometric_sdt' / 'numba').rglob('*.nbi'))
    assert any('_topk_jaccard_kernels.scores' in p.name for p in cached)


def test_cache_dir(monkeypatch):
    monkeypatch.setattr(numba.config, 'CACHE_DIR', '')
    monkeypatch.setenv('XDG_CACHE_HOME', '/xdg')
    assert _numba.cache_dir() == os.path.join('/xdg', 'torch_geometric_sdt', 'numba')
    monkeypatch.delenv('XDG_CACHE_HOME')
    monkeypatch.setenv('HOME', '/home/someone')
    assert _numba.cache_dir() == os.path.join(
        '/home/someone', '.cache', 'torch_geometric_sdt', 'numba'
    )
    monkeypatch.setattr(numba.config, 'CACHE_DIR', '/numba-cache')
    assert _numba.cache_dir() == '/numba-cache'


def test_other_dispatchers_keep_numba_defaults():
    # Only the kernels made by _numba.njit get the user cache folder:
    from numba.core.caching import FunctionCache

    @numba.njit(cache=True)
    def add_one(value: int) -> int:  # pragma: no cover (compiled)
        return value + 1

    assert type(add_one._cache) is FunctionCache
