from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_geometric_sdt.defaults import METHODS
from torch_geometric_sdt.memory import available_memory, check_memory, estimate_memory

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


@pytest.mark.parametrize('method', METHODS)
def test_estimate_grows_linearly(method):
    # Above the chunk sizes every stage is linear in N: doubling N doubles
    # each stage's growth.
    a, b, c = (
        estimate_memory(n, 256, 80, method=method, backend='faiss-hnsw')
        for n in (1_000_000, 2_000_000, 3_000_000)
    )
    assert set(a) == set(b) == set(c)
    assert a['peak'] == max(v for key, v in a.items() if key != 'peak')
    for key in a:
        assert b[key] > a[key] > 0
        assert (c[key] - b[key]) == pytest.approx(b[key] - a[key], rel=1e-6)
    stages = {'sdt': 7, 'infomap-knn': 3, 'fc-es': 4}[method]
    assert len(a) == stages + 1


def test_estimate_stages_and_structures():
    est = estimate_memory(100_000, 256, 80)
    assert list(est) == [
        'knn',
        'context',
        'topk',
        'jaccard',
        'sdt',
        'links_infomap',
        'metrics',
        'peak',
    ]
    # Every stage holds at least the features and the kNN lists:
    floor = 100_000 * 256 * 4 + 100_000 * 80 * 12
    assert all(value >= floor for value in est.values())
    # More dimensions and more neighbours cost more:
    assert estimate_memory(100_000, 512)['peak'] > est['peak']
    assert estimate_memory(100_000, 256, 160)['peak'] > est['peak']
    # A larger assumed Top-K costs more; the baselines cost less than SDT:
    assert estimate_memory(100_000, 256, mean_topk=40)['peak'] > est['peak']
    assert estimate_memory(100_000, 256, method='infomap-knn')['peak'] < est['peak']
    # 'auto' resolves to the exact backend up to 200K points, HNSW above:
    assert estimate_memory(100_000, 256, backend='auto') == est
    assert estimate_memory(100_000, 256, backend='exact') == est
    big = estimate_memory(300_000, 256, method='infomap-knn')
    assert big == estimate_memory(
        300_000, 256, method='infomap-knn', backend='pynndescent'
    )


def test_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match='num_nodes'):
        estimate_memory(0, 256)
    with pytest.raises(ValueError, match='dim'):
        estimate_memory(10, 2.5)
    with pytest.raises(ValueError, match='method'):
        estimate_memory(10, 8, method='kmeans')
    with pytest.raises(ValueError, match='backend'):
        estimate_memory(10, 8, backend='annoy')
    with pytest.raises(ValueError, match='mean_topk'):
        estimate_memory(10, 8, k=5, mean_topk=6)


def test_check_memory_raises_with_a_tiny_limit():
    est = estimate_memory(100_000, 256)
    assert check_memory(est, available=est['peak']) == est['peak']
    with pytest.raises(MemoryError) as info:
        check_memory(est, available=100 * MB)
    msg = str(info.value)
    assert '0.10 GiB is available' in msg
    assert f'{est["peak"] / 2**30:.2f} GiB' in msg
    assert 'largest stage: sdt' in msg and 'knn' in msg
    assert 'backend' in msg and 'chunk' in msg
    with pytest.raises(ValueError, match='peak'):
        check_memory({'knn': 1})
    with pytest.raises(ValueError, match='non-negative'):
        check_memory(est, available=-1)


def test_available_memory_sees_rlimit():
    num, source = available_memory()
    assert num > 0 and isinstance(source, str)
    # An address-space limit 1 GiB above the current size binds (the soft
    # limit only, restored at once):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open('/proc/self/status') as f:
        vm = int(re.search(r'VmSize:\s+(\d+)', f.read()).group(1)) * 1024
    if num < 2**30:
        pytest.skip('less than 1 GiB available')
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, hard))
    try:
        num, source = available_memory()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert source == 'RLIMIT_AS' and 0 < num <= 2**30


def _import_vm_bytes() -> int:
    code = (
        'import re, torch_geometric_sdt.cli\n'
        "s = open('/proc/self/status').read()\n"
        "print(int(re.search(r'VmSize:\\s+(\\d+)', s).group(1)) * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True
    )
    return int(out.stdout.strip())


def test_cli_refuses_a_run_that_does_not_fit(tmp_path):
    # 20,000 x 64 features: the SDT estimate is about 1 GiB (one batch of
    # Top-K attention maps dominates), while the address space left after
    # the imports is 400 MiB: the check must refuse the run before it starts.
    n, dim = 20_000, 64
    assert estimate_memory(n, dim, method='sdt')['peak'] > 900 * MB
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    out = tmp_path / 'pred.npy'
    limit = _import_vm_bytes() + 400 * MB

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [
        sys.executable,
        '-m',
        'torch_geometric_sdt',
        'cluster',
        str(tmp_path / 'x.npy'),
        '-o',
        str(out),
        '--method',
        'sdt',
        '--quiet',
    ]
    res = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, preexec_fn=preexec
    )
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert err.startswith('sdt cluster: error: this run needs about')
    assert 'RLIMIT_AS' in err and 'Traceback' not in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_memory_check_can_be_skipped(tmp_path, monkeypatch, capsys):
    import torch_geometric_sdt.memory as memory
    from torch_geometric_sdt.cli import main

    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / 'x.npy', x)
    monkeypatch.setattr(memory, 'available_memory', lambda: (1024, 'test limit'))
    argv = ['knn', str(tmp_path / 'x.npy'), '-o', str(tmp_path / 'a.npz'), '-k', '5']
    assert main([*argv, '--quiet']) == 2
    assert 'available (test limit)' in capsys.readouterr().err
    assert not (tmp_path / 'a.npz').exists()
    assert main([*argv, '--quiet', '--no-memory-check']) == 0
    assert (tmp_path / 'a.npz').exists()
