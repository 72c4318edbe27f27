from __future__ import annotations

import math
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torch_geometric_sdt.defaults import METHODS
from torch_geometric_sdt.memory import (
    address_space_reserve,
    available_memory,
    check_memory,
    estimate_memory,
    topk_batch_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


@pytest.mark.parametrize('method', METHODS)
def test_estimate_grows_linearly(method):
    # Above the chunk sizes every stage is linear in N: doubling N doubles
    # each stage's growth (links_infomap is the larger of two linear terms,
    # making the links and Infomap; from 2.1M nodes on, Infomap's).
    a, b, c = (
        estimate_memory(n, 256, 80, method=method, backend='faiss-hnsw')
        for n in (3_000_000, 4_000_000, 5_000_000)
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
    # A larger assumed Top-K costs more; the baselines no more than SDT (at
    # 100K the exact search sets the peak of both):
    more = estimate_memory(100_000, 256, mean_topk=40)
    assert more['sdt'] > est['sdt'] and more['links_infomap'] > est['links_infomap']
    base = estimate_memory(100_000, 256, method='infomap-knn')
    assert base['peak'] <= est['peak']
    # 'auto' resolves to the exact backend up to 200K points, HNSW above:
    assert estimate_memory(100_000, 256, backend='auto') == est
    assert estimate_memory(100_000, 256, backend='exact') == est
    big = estimate_memory(300_000, 256, method='infomap-knn')
    assert big == estimate_memory(
        300_000, 256, method='infomap-knn', backend='pynndescent'
    )


@pytest.mark.parametrize('backend', ['exact', 'pynndescent', 'faiss-hnsw'])
def test_mapped_features_count_in_no_stage(backend):
    # Features on a read-only mapped file are read by chunks whose pages are
    # handed back: every stage needs F = 4 N D less, the search still holds
    # its normalised copy.
    n, dim = 300_000, 256
    held = estimate_memory(n, dim, backend=backend)
    mapped = estimate_memory(n, dim, backend=backend, mapped=True)
    assert set(held) == set(mapped)
    for stage in held:
        if stage != 'peak':
            assert held[stage] - mapped[stage] == 4 * n * dim, stage
    assert mapped['knn'] >= 4 * n * dim + 34 * n * 81 * (backend == 'pynndescent')


def test_a_given_graph_outlives_the_sdt_stages():
    n, k = 300_000, 80
    built = estimate_memory(n, 256, k)
    given = estimate_memory(n, 256, k, graph_given=True)
    assert 'knn' not in given and 'knn' in built
    # cluster(x) frees the graph it built with the context before Infomap;
    # a caller's graph stays (12 bytes per entry):
    assert given['metrics'] - built['metrics'] == 12 * n * k
    assert given['links_infomap'] >= built['links_infomap']
    for stage in ('context', 'topk', 'jaccard', 'sdt'):
        assert given[stage] == built[stage]
    # The baselines always read the caller's graph:
    base = estimate_memory(n, 256, k, method='infomap-knn')
    assert base['metrics'] == built['metrics'] + 12 * n * k


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
    stages = {name: v for name, v in est.items() if name != 'peak'}
    largest = max(stages, key=stages.__getitem__)
    assert largest in ('knn', 'sdt', 'links_infomap')
    assert f'largest stage: {largest}' in msg and 'knn' in msg
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
    reserve = address_space_reserve()
    resource.setrlimit(resource.RLIMIT_AS, (vm + reserve + 2**30, hard))
    try:
        num, source = available_memory()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert source.startswith('RLIMIT_AS, less the current') and 0 < num <= 2**30
    assert 'thread stacks, malloc arenas and libraries' in source


def test_address_space_reserve_counts_threads_and_arenas(monkeypatch):
    # Under `ulimit -v` every worker thread costs its stack and a 64 MiB
    # malloc arena of address space that never becomes resident.
    import torch

    from torch_geometric_sdt import memory

    threads = memory._worker_threads()
    before = torch.get_num_threads()
    monkeypatch.delenv('MALLOC_ARENA_MAX', raising=False)
    try:
        torch.set_num_threads(threads + 3)
        assert memory._worker_threads() == threads + 3
        full = address_space_reserve()
        monkeypatch.setenv('MALLOC_ARENA_MAX', '1')
        capped = address_space_reserve()
    finally:
        torch.set_num_threads(before)
    arenas = min(threads + 3, 8 * (os.cpu_count() or 1))
    assert full == 96 * MB + 8 * MB * (threads + 3) + 64 * MB * arenas
    assert capped == 96 * MB + 8 * MB * (threads + 3) + 64 * MB


# Measured peaks of the Top-K prediction with the shipped model, above the
# level the memory check sees (`sdt cluster --method sdt`, 256-d synthetic
# faces, k = 80, 2 threads, batches of TOPK_BATCH_SIZE = 256;
# benchmarks/topk_memory.py): MiB per N.
TOPK_MEASURED = {20_000: 210, 100_000: 330}
# With batches of 256 the batch itself is ~60 MiB and the fixed allowance for
# the runtime (memory.RUNTIME, 192 MiB: measured 140-230 MiB across stages)
# dominates the estimate at these sizes, so it may exceed the measured peak
# by half.
TOPK_SLACK = 1.5
# One batch of 4096 nodes through the predictor's transformer, k -> MiB
# (benchmarks/topk_memory.py with --batch-size 4096).
TOPK_BATCH_MEASURED = {40: 369, 80: 891, 160: 2583}


# Peaks of whole runs, MiB above the level before the features were mapped,
# with the mean Top-K the shipped model predicted there
# (`python -m benchmarks.scale`, benchmarks/results/scale.md: 256-d synthetic
# faces read memory-mapped, k = 80; exact kNN up to 100K, pynndescent at 1M).
# Issue 14's goal: the estimate at that Top-K within 25 % of the peak.
SCALE_MEASURED = {10_000: (322, 14.2), 100_000: (520, 11.4), 1_000_000: (3500, 12.6)}
SCALE_SLACK = 1.25


@pytest.mark.parametrize('n', sorted(SCALE_MEASURED))
def test_estimate_is_close_to_the_measured_peak(n):
    measured, mean_topk = SCALE_MEASURED[n]
    est = estimate_memory(n, 256, 80, mean_topk=mean_topk, mapped=True)['peak']
    assert measured <= est / MB <= SCALE_SLACK * measured


@pytest.mark.parametrize('n', sorted(TOPK_MEASURED))
def test_topk_estimate_covers_the_measured_peak(n):
    est = estimate_memory(n, 256, 80)['topk'] / MB
    assert TOPK_MEASURED[n] <= est <= TOPK_SLACK * TOPK_MEASURED[n]


@pytest.mark.parametrize('k', sorted(TOPK_BATCH_MEASURED))
def test_topk_batch_model_follows_k(k):

    batch = topk_batch_bytes(4096, k) / MB
    assert TOPK_BATCH_MEASURED[k] <= batch <= 1.25 * TOPK_BATCH_MEASURED[k]


def test_topk_estimate_uses_the_default_batch():
    from torch_geometric_sdt.memory import topk_batch_bytes
    from torch_geometric_sdt.nn.models import TOPK_BATCH_SIZE

    n = 4 * TOPK_BATCH_SIZE
    est = estimate_memory(n, 256, 80)
    # topk - metrics = graph + shared + 8N - 64N + one batch of the default
    # size (the metrics run after the kNN graph went with the context).
    batch = est['topk'] - est['metrics'] - (16 * n * 80 + 8 * n - 64 * n)
    assert batch == topk_batch_bytes(TOPK_BATCH_SIZE, 80)


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
    # 100,000 x 64 features: the SDT estimate is about 0.7 GiB, while the
    # address space left after the imports is 400 MiB: the check must refuse
    # the run before it starts.
    n, dim = 100_000, 64
    assert estimate_memory(n, dim, method='sdt')['peak'] > 600 * MB
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


def test_after_topk_splits_the_estimate_where_the_topk_is_known():
    from torch_geometric_sdt.memory import TOPK_LATER_STAGES, after_topk

    n, k = 200_000, 80
    est = estimate_memory(n, 256, k, mean_topk=70.0, mapped=True)
    later, held = after_topk(est, n, k)
    assert set(later) == {*TOPK_LATER_STAGES, 'peak'}
    assert later['peak'] == max(est[s] for s in TOPK_LATER_STAGES)
    assert held == est['topk'] - topk_batch_bytes(256, k) > 0
    # A larger mean Top-K makes the later stages larger, not what is held:
    low, held_low = after_topk(estimate_memory(n, 256, k, mapped=True), n, k)
    assert later['peak'] > low['peak'] and held == held_low
    with pytest.raises(ValueError, match="'topk' stage"):
        after_topk(estimate_memory(n, 256, k, method='infomap-knn'), n, k)


def test_max_links_bounds_the_links_and_infomap_stage():
    n, k = 5_210_000, 80
    full = estimate_memory(n, 256, k, mean_topk=70.0, mapped=True)
    capped = estimate_memory(n, 256, k, mean_topk=70.0, mapped=True, max_links=24)
    # The links and Infomap shrink with the links, nothing else changes:
    assert capped['links_infomap'] < full['links_infomap'] / 2
    assert {s: v for s, v in capped.items() if s not in ('links_infomap', 'peak')} == {
        s: v for s, v in full.items() if s not in ('links_infomap', 'peak')
    }
    # Infomap's side needs 106 bytes per link (20 held, 86 its own) and 600
    # per node; at 70 links per node it is the stage's peak:
    infomap = 106 * 70 * n + 608 * n + 192 * 2**20
    assert full['links_infomap'] == infomap
    # A cap at or above the mean Top-K changes nothing:
    same = estimate_memory(n, 256, k, mean_topk=70.0, mapped=True, max_links=70)
    assert same == full
    with pytest.raises(ValueError, match="max_links is an option of method='sdt'"):
        estimate_memory(n, 256, k, method='fc-es', max_links=24)
    with pytest.raises(ValueError, match='max_links must be a positive int'):
        estimate_memory(n, 256, k, max_links=0)
    # Refused for the links and Infomap, the message names the cap:
    with pytest.raises(MemoryError, match='largest stage: links_infomap') as e:
        check_memory(full, available=20 * 10**9)
    assert '--max-links in sdt cluster' in str(e.value)
    with pytest.raises(MemoryError, match='largest stage: knn') as e:
        check_memory(capped, available=10**9)
    assert 'max-links' not in str(e.value)


def test_cli_refuses_at_the_predicted_topk_what_no_longer_fits(
    tmp_path, monkeypatch, capsys
):
    # Large identities (50-120 faces each): the shipped model predicts a
    # mean Top-K far above the k / 4 the check before the run assumes. The
    # room seen before the run is ample, the room seen once the Top-K is
    # known is none: the run stops there with one line, writing nothing.
    import torch_geometric_sdt.memory as memory
    from torch_geometric_sdt import cli
    from torch_geometric_sdt.datasets import regime_draw

    x, _ = regime_draw('msceleb', 600, 32, seed=0)
    np.save(tmp_path / 'x.npy', x.numpy())
    out = tmp_path / 'pred.npy'
    monkeypatch.setattr(memory, 'available_memory', lambda: (1 << 40, 'ample'))
    monkeypatch.setattr(cli, 'available_memory', lambda: (0, 'test room'))
    argv = ['cluster', str(tmp_path / 'x.npy'), '-o', str(out), '--method', 'sdt']
    assert cli.main([*argv, '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists()
    mean = re.search(r'the predicted Top-K averages (\d+\.\d) per node', err)
    assert mean is not None and float(mean.group(1)) > 40  # not the assumed 20
    assert 'the check before the run assumed 20' in err
    assert 'available (test room, and the ' in err and 'holds now)' in err
    # --no-memory-check skips both checks:
    assert cli.main([*argv, '--quiet', '--no-memory-check']) == 0
    assert out.exists()


def test_cli_refuses_20k_sdt_under_ulimit_v(tmp_path):
    # 20,000 x 256 faces with the shipped model under `ulimit -v 2200000`:
    # the Top-K batch and the threads' address space do not fit, so the run
    # is refused at the check with the estimate, not killed by an allocation
    # failure in the Top-K stage (it would complete with 0 if it fitted).
    x = np.random.default_rng(0).standard_normal((20_000, 256)).astype(np.float32)
    np.save(tmp_path / 'x20k.npy', x)
    out = tmp_path / 'p.meta'
    script = (
        'ulimit -v 2200000; exec "$0" -m torch_geometric_sdt cluster "$1" '
        '-o "$2" --method sdt --quiet'
    )
    cmd = ['bash', '-c', script, sys.executable, str(tmp_path / 'x20k.npy'), str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert 'Traceback' not in res.stderr, res.stderr
    assert res.returncode in (0, 2), res.stderr
    if res.returncode == 2:
        err = res.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert re.match(r'sdt cluster: error: this run needs about \d+\.\d\d GiB', err)
        assert 'largest stage: topk' in err and 'RLIMIT_AS' in err
        assert not out.exists()
    else:
        assert out.exists()


def test_exact_estimate_counts_the_padded_last_block():
    from torch_geometric_sdt.memory import _exact_block_bytes
    from torch_geometric_sdt.nn.knn import DEFAULT_BLOCK_NUMEL, SCREEN_GROUP

    side = math.isqrt(DEFAULT_BLOCK_NUMEL)
    block = _exact_block_bytes(side)
    # A last block of a multiple of 16 columns needs no padded copy; one of
    # 17 columns is copied, padded to 32.
    assert _exact_block_bytes(side + SCREEN_GROUP) == block
    assert _exact_block_bytes(side + 17) == block + 4 * side * 32
    # Below one block the block is N x N:
    assert _exact_block_bytes(1000) == int((4 + 5 / 16) * 1000 * 1000)
    one = estimate_memory(side + 16, 256, backend='exact')['knn']
    padded = estimate_memory(side + 17, 256, backend='exact')['knn']
    assert padded - one >= 4 * side * 32


def test_ray_memory_model():
    from torch_geometric_sdt.memory import RAY_WORKER_RUNTIME, estimate_ray_memory

    small = estimate_ray_memory(200_000, 256)
    large = estimate_ray_memory(2_000_000, 256)
    assert {'worker', 'object_store', 'driver', 'worker_knn', 'worker_jaccard'} <= set(
        small
    )
    assert small['worker'] == max(
        v for s, v in small.items() if s.startswith('worker_')
    )
    assert all(
        v >= RAY_WORKER_RUNTIME for s, v in small.items() if s.startswith('worker_')
    )
    # Bounded per task: only the Jaccard task's mark array grows with N (4 N).
    for stage in ('worker_knn', 'worker_topk', 'worker_sdt', 'worker_band'):
        assert large[stage] == small[stage], stage
    assert large['worker_jaccard'] - small['worker_jaccard'] == 1_800_000 * 4
    # The object store holds each shared array once: F + G + 4Nk + 8N and the
    # larger of the Jaccard stages' lists (8Nk + 24N) and the Top-K Jaccard
    # with two generations of states (4Nk + 2*4NH).
    assert small['object_store'] == 200_000 * (4 * 256 + 12 * 80 + 4 * 80 + 8 + 832)
    small_k = estimate_ray_memory(200_000, 256, k=200)
    assert small_k['object_store'] == 200_000 * (
        4 * 256 + 12 * 200 + 4 * 200 + 8 + 8 * 200 + 24
    )
    assert small['driver'] <= estimate_memory(200_000, 256)['peak'] + 4 * 200_000 * 80
    # Smaller blocks, smaller kNN tasks.
    assert (
        estimate_ray_memory(200_000, 256, block_rows=1024)['worker_knn']
        < small['worker_knn']
    )
    with pytest.raises(ValueError, match='block_rows'):
        estimate_ray_memory(10, 4, block_rows=0)


@pytest.mark.parametrize(
    'method, metric, cached',
    [
        ('sdt', 'cosine', False),  # the model builds the graph and frees it
        ('sdt', 'l2', False),  # built by the CLI, kept to the end
        ('sdt', 'cosine', True),  # read from a cache: no knn stage
        ('infomap-knn', 'l2', False),
        (None, 'cosine', False),  # sdt knn
    ],
)
def test_cli_memory_check_counts_the_stages_of_the_run(
    monkeypatch, method, metric, cached
):
    import argparse

    from torch_geometric_sdt import cli

    seen: dict[str, int] = {}
    monkeypatch.setattr(cli, 'check_memory', lambda est: seen.update(est))
    args = argparse.Namespace(
        no_memory_check=False,
        backend='auto',
        metric=metric,
        knn='g.npz' if cached else None,
    )
    n = 300_000
    cli._check_memory(args, np.zeros((n, 8), np.float32), method, 80)
    full = estimate_memory(n, 8, 80, method=method or 'infomap-knn')
    kept = estimate_memory(n, 8, 80, method=method or 'infomap-knn', graph_given=True)
    assert ('knn' in seen) == (not cached)
    if method is None:
        assert seen == {'knn': full['knn'], 'peak': full['knn']}
        return
    if not cached:
        assert seen['knn'] == full['knn']
    want = full if (metric == 'cosine' and not cached) else kept
    assert seen['metrics'] == want['metrics']
    assert seen['links_infomap'] == want['links_infomap']
    assert seen['peak'] == max(v for key, v in seen.items() if key != 'peak')
