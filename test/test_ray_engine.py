"""The Ray engine on a local Ray cluster (``ray.init(num_cpus=2)``): the same
kNN lists, scores and partitions as the local engine, Ray's retries after a
killed worker, and the CLI. One Ray session per module (a few seconds); no
two modules that start Ray run at once (``ray_exclusive`` in conftest)."""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_geometric_sdt import io
from torch_geometric_sdt.baselines import cluster_knn
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.pretrained import default_model_path
from torch_geometric_sdt.testing import assert_ray_stages_match_local, run_cli
from torch_geometric_sdt.utils.distributed import FeatureShards, connect, map_stage

ray = pytest.importorskip('ray', reason="the Ray engine needs the 'ray' extra")

pytestmark = pytest.mark.ray


@pytest.fixture(scope='module', autouse=True)
def ray_session(ray_exclusive):
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address='local',  # a new cluster, whatever RAY_ADDRESS says
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=300 * 2**20,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope='module')
def faces() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_faces(3000, dim=64, seed=3)


@pytest.fixture(scope='module')
def model() -> SDTClusterer:
    return SDTClusterer.load(default_model_path())


def kill_once(task: str, timeout: float = 60.0) -> dict:
    """Starts a thread that SIGKILLs the first worker process running the Ray
    task function :obj:`task` (its process title is ``ray::<task>``);
    ``state['killed']`` holds the pid it killed."""
    state: dict = {'killed': None, 'stop': False}

    def run() -> None:
        end = time.monotonic() + timeout
        while not state['stop'] and time.monotonic() < end:
            for pid in os.listdir('/proc'):
                if not pid.isdigit():
                    continue
                try:
                    title = Path(f'/proc/{pid}/cmdline').read_bytes()
                except OSError:
                    continue
                if title.split(b'\0')[0] == f'ray::{task}'.encode():
                    os.kill(int(pid), 9)
                    state['killed'] = int(pid)
                    return
            time.sleep(0.005)

    state['thread'] = threading.Thread(target=run, daemon=True)
    state['thread'].start()
    return state


# kNN ##########################################################################


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_sharded_knn_equals_the_local_exact_search(faces, metric):
    x = faces[0][:700]
    if metric == 'l2':
        x = x.double() * 1e-30  # float64, scaled by a power of two inside
    local = knn(x, 15, metric=metric, backend='exact', col_chunk_size=200)
    shards = FeatureShards.from_array(x, rows_per_part=300)
    dist = knn(shards, 15, metric=metric, engine='ray', block_rows=110)
    assert dist.sim.dtype == local.sim.dtype
    assert torch.equal(dist.index, local.index)
    torch.testing.assert_close(dist.sim, local.sim, rtol=1e-6, atol=0)
    # The default (symmetric) local search: the same ids.
    assert torch.equal(knn(x, 15, metric=metric).index, dist.index)
    # Query chunks and column blocks smaller than the parts (of unequal size).
    small = knn(
        shards, 15, metric=metric, engine='ray', chunk_size=40, col_chunk_size=64
    )
    assert torch.equal(small.index, local.index)
    torch.testing.assert_close(small.sim, local.sim, rtol=1e-6, atol=0)


def test_sharded_knn_reads_parts_from_files(tmp_path, faces):
    x = faces[0][:500].numpy()
    for i, lo in enumerate(range(0, 500, 200)):
        np.save(tmp_path / f'part-{i}.npy', x[lo : lo + 200])
    shards = io.feature_shards(tmp_path)
    assert shards.sizes == [200, 200, 100]
    assert torch.equal(knn(shards, 10, engine='ray').index, knn(x, 10).index)


def test_sharded_knn_refuses_bad_input(faces):
    x = faces[0][:100].clone()
    with pytest.raises(ValueError, match='searches exactly'):
        knn(x, 5, engine='ray', backend='pynndescent')
    with pytest.raises(ValueError, match='smaller than the number of points'):
        knn(x, 100, engine='ray')
    with pytest.raises(ValueError, match='unknown option'):
        knn(x, 5, engine='ray', nprobe=3)
    with pytest.raises(ValueError, match='metric'):
        knn(x, 5, engine='ray', metric='dot')
    x[70] = float('nan')
    # The error raised in the task that read the part, naming it.
    with pytest.raises(ValueError, match=r'part 1: x has 1 row\(s\) with NaN'):
        knn(FeatureShards.from_array(x, rows_per_part=50), 5, engine='ray')
    with pytest.raises(ValueError, match='already initialised'):
        connect('auto')


# SDT and baselines ###########################################################


def test_sdt_on_ray_gives_the_local_partition(faces, model):
    x, _ = faces
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # self-diagnosis of synthetic data
        local, ld = model.cluster(x, backend='exact', return_details=True)
        dist, dd = model.cluster(x, engine='ray', return_details=True)
    assert torch.equal(dist, local)
    for key in ('topk', 'band_pos'):
        assert torch.equal(dd[key], ld[key]), key
    # The Jaccard kernel's vectorised sums (fastmath) may round differently
    # in another process.
    torch.testing.assert_close(dd['jaccard'], ld['jaccard'], rtol=0, atol=1e-6)
    assert torch.equal(dd['ctx'].shared, ld['ctx'].shared)
    torch.testing.assert_close(dd['band_prob'], ld['band_prob'], rtol=0, atol=1e-4)
    stages = dd['engine']
    assert {'knn', 'set jaccard', 'Top-K', 'topk jaccard', 'SDT band'} <= set(stages)
    assert all(s['tasks'] >= 1 and s['seconds'] >= 0 for s in stages.values())
    assert stages['knn']['bytes_in'] >= x.numel() * 4
    assert 'engine' not in ld


def test_sdt_on_ray_uses_a_given_scale(faces, model):
    from torch_geometric_sdt.utils import SimilarityScale, noise_scale

    x, _ = faces
    own = noise_scale(x)
    other = SimilarityScale(float(own.center) - 0.05, float(own.scale) * 0.8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # self-diagnosis of synthetic data
        local, ld = model.cluster(x, backend='exact', scale=other, return_details=True)
        dist, dd = model.cluster(x, engine='ray', scale=other, return_details=True)
    assert dd['ctx'].scale == other == ld['ctx'].scale
    assert torch.equal(dd['topk'], ld['topk'])
    assert torch.equal(dist, local)


@pytest.mark.parametrize('mode', ['relational', 'embedding'])
def test_sdt_stages_on_many_blocks_equal_the_local_chunks(faces, mode):
    x = faces[0][:1500]
    torch.manual_seed(0)
    model = SDTClusterer(
        k=12,
        mode=mode,
        embedding_channels=64 if mode == 'embedding' else None,
        hidden_channels=8,
        predictor_channels=8,
        heads=2,
    )
    stats = assert_ray_stages_match_local(
        model, x, 300, dict(topk=64, nodes=128, band=256)
    )
    assert stats['Top-K']['tasks'] == 6  # 300 rounded down to 256 nodes
    assert stats['knn']['tasks'] == 5  # parts of 300 rows


def test_sdt_on_ray_refuses_bad_input(faces, model):
    x = faces[0][:200]
    with pytest.raises(ValueError, match='searches exactly'):
        model.cluster(x, engine='ray', backend='faiss')
    with pytest.raises(ValueError, match='engine'):
        model.cluster(x, engine='dask')
    with pytest.raises(ValueError, match='address'):
        model.cluster(x, address='auto')
    with pytest.raises(ValueError, match='smaller than the number of points'):
        model.cluster(x[:50], engine='ray')
    graph = knn(x, 20)
    with pytest.raises(ValueError, match='k = 20'):
        model.cluster(x, graph=graph, engine='ray')


@pytest.mark.parametrize('method', ['infomap-knn', 'fc-es'])
def test_baselines_on_ray_give_the_local_partition(faces, method):
    graph = knn(faces[0], 40)
    assert torch.equal(
        cluster_knn(graph, method, engine='ray'), cluster_knn(graph, method)
    )


# Faults #######################################################################


def test_a_killed_worker_changes_nothing(faces, model):
    x, _ = faces
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        local = model.cluster(x, backend='exact')
        state = kill_once('_topk_block')
        dist = model.cluster(x, engine='ray')
    state['stop'] = True
    assert state['killed'] is not None, 'no Top-K task was caught running'
    assert torch.equal(dist, local)


def _record_cancels(monkeypatch: pytest.MonkeyPatch) -> list:
    cancelled: list = []
    real = ray.cancel

    def cancel(ref, **kwargs):
        cancelled.append(ref)
        return real(ref, **kwargs)

    monkeypatch.setattr(ray, 'cancel', cancel)
    return cancelled


def test_a_failing_task_fails_the_stage_once_the_other_tasks_end(tmp_path, monkeypatch):
    # No task is cancelled after an error: cancelling tasks of a failed stage
    # aborted the test process now and then (a race in Ray 2.60's task
    # manager, "Check failed: it != submissible_tasks_.end()").
    cancelled = _record_cancels(monkeypatch)

    def task(block: int) -> int:
        if block == 0:
            raise ValueError('block 0 is bad')
        time.sleep(0.5)
        (tmp_path / f'{block}.done').touch()
        return block

    with pytest.raises(ValueError, match='block 0 is bad'):
        map_stage(task, [(b,) for b in range(4)], name='test')
    assert cancelled == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f'{b}.done' for b in (1, 2, 3)
    ]


def test_a_stop_request_cancels_only_the_unfinished_tasks(monkeypatch):
    cancelled = _record_cancels(monkeypatch)
    real_wait = ray.wait
    calls = []

    def wait(refs, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # The stage's second wait: block 0 has ended.
            raise KeyboardInterrupt
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(ray, 'wait', wait)

    def task(block: int) -> int:
        if block > 0:
            time.sleep(300)
        return block

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        map_stage(task, [(0,), (1,)], name='test')
    assert time.monotonic() - start < 60  # Not held until block 1 ends.
    assert len(cancelled) == 1  # Block 1, not the finished block 0.
    # A task that was not cancelled would still be asleep: GetTimeoutError.
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(cancelled[0], timeout=120)


def test_cli_with_a_killed_worker_writes_the_local_labels(tmp_path, faces, capsys):
    x, y = faces
    np.save(tmp_path / 'x.npy', x.numpy())
    parts = tmp_path / 'parts'
    parts.mkdir()
    for i, lo in enumerate(range(0, 3000, 1000)):
        np.save(parts / f'part-{i:05d}.npy', x[lo : lo + 1000].numpy())
    io.save_labels(tmp_path / 'y.meta', y.numpy())
    local = tmp_path / 'local.meta'
    out = tmp_path / 'out' / 'labels.meta'
    out.parent.mkdir()
    rc, err = run_cli(
        ['cluster', str(tmp_path / 'x.npy'), '-o', str(local), '--method', 'sdt', '-q'],
        capsys,
    )
    assert rc == 0, err
    state = kill_once('_search_block')
    rc, err = run_cli(
        ['cluster', str(parts), '-o', str(out), '--method', 'sdt', '--engine', 'ray']
        + ['--shard-labels', str(tmp_path / 'per-part'), '-q'],
        capsys,
    )
    state['stop'] = True
    assert rc == 0, err
    assert state['killed'] is not None, 'no kNN task was caught running'
    assert out.read_bytes() == local.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ['labels.meta']
    per_part = sorted((tmp_path / 'per-part').iterdir())
    assert [p.name for p in per_part] == [f'part-{i:05d}.meta' for i in range(3)]
    joined = np.concatenate([io.load_labels(p) for p in per_part])
    np.testing.assert_array_equal(joined, io.load_labels(out))


def test_cli_ray_refuses_bad_input(tmp_path, faces, capsys):
    np.save(tmp_path / 'x.npy', faces[0][:300].numpy())
    x = str(tmp_path / 'x.npy')
    out = tmp_path / 'labels.meta'
    for extra, match in [
        (['--backend', 'pynndescent'], 'searches exactly'),
        (['--metric', 'l2'], 'cosine'),
        (['--threshold', '2'], 'threshold'),
    ]:
        rc, err = run_cli(
            ['cluster', x, '-o', str(out), '--engine', 'ray'] + extra, capsys
        )
        assert rc == 2 and match in err and err.count('\n') == 1, err
    for extra in (['--address', 'auto'], ['--column', 'e'], ['--shard-labels', 'd']):
        rc, err = run_cli(['cluster', x, '-o', str(out)] + extra, capsys)
        assert rc == 2 and 'is an option of --engine ray' in err, err
    (tmp_path / 'taken').mkdir()
    rc, err = run_cli(
        ['cluster', x, '-o', str(out), '--engine', 'ray']
        + ['--shard-labels', str(tmp_path / 'taken')],
        capsys,
    )
    assert rc == 2 and 'exists' in err, err
    assert not out.exists()


# The benchmark ################################################################


@pytest.mark.parametrize('graph', ['sharded', 'given'])
def test_benchmark_compares_the_engines(graph):
    from benchmarks.ray_engine import markdown, run

    res = run(1200, [None], graph, dim=32)
    local, dist = res['configs']['local'], res['configs']['ray']
    assert dist['equals_local'] is True
    assert dist['pairwise_fscore'] == local['pairwise_fscore']
    assert ('knn' in dist['stages']) == (graph == 'sharded')
    assert ('knn' in local['stages']) == (graph == 'sharded')
    assert dist['bytes_in'] > 0 and dist['total_s'] > 0
    assert dist['topk_differ'] == 0 and dist['band_pos_equal'] is True
    assert dist['jaccard_max_abs_diff'] <= 1e-6
    assert dist['band_prob_max_abs_diff'] <= 1e-4
    text = '\n'.join(markdown(res))
    assert '| labels equal local | - | yes |' in text
    assert '| **total** |' in text
    assert '| Top-K values that differ | - | 0 |' in text
    comp = local['components']
    assert 1 <= comp['num_components'] <= 1200
    assert comp['groups'] == 8 and comp['group_seconds_max'] > 0
    assert 0.0 < comp['pairwise_f_against_single_call'] <= 1.0
    assert 'grouped_scores' in comp and 'Infomap per group of whole' in text


def test_auto_block_rows_aims_at_four_tasks_per_cpu():
    from torch_geometric_sdt.utils.distributed import (
        DEFAULT_BLOCK_ROWS,
        MIN_BLOCK_ROWS,
        auto_block_rows,
    )

    assert ray.cluster_resources()['CPU'] == 2
    assert auto_block_rows(200_000) == 25_000  # 8 tasks on 2 CPUs
    assert auto_block_rows(200_000, align=8192) == 32_768
    assert auto_block_rows(1000) == MIN_BLOCK_ROWS
    assert auto_block_rows(10**8) == DEFAULT_BLOCK_ROWS


@pytest.mark.parametrize('mode', ['weighted', 'set'])
def test_topk_jaccard_ray_equals_the_local_scores(faces, mode):
    from torch_geometric_sdt.utils import topk_jaccard, topk_jaccard_ray
    from torch_geometric_sdt.utils.distributed import EngineStats

    graph = knn(faces[0][:1000], 20, backend='exact')
    topk = torch.randint(1, 21, (1000,), generator=torch.Generator().manual_seed(0))
    stats = EngineStats()
    dist = topk_jaccard_ray(*graph, topk, block_rows=300, stats=stats, mode=mode)
    assert torch.equal(dist, topk_jaccard(*graph, topk, mode=mode))
    assert stats.as_dict()['topk_jaccard']['tasks'] == 4  # 300, 300, 300, 100 rows


def test_topk_jaccard_ray_checks_lists_before_any_task(faces):
    from torch_geometric_sdt.utils import topk_jaccard_ray
    from torch_geometric_sdt.utils.distributed import EngineStats

    index, sim = knn(faces[0][:200], 10, backend='exact')
    bad = index.clone()
    bad[5, 3] = 200  # out of range
    stats = EngineStats()
    with pytest.raises(ValueError, match='list of node 5'):
        topk_jaccard_ray(bad, sim, 5, stats=stats)
    assert stats.stages == []
    edge_index = torch.stack(
        [index[:, 1:].reshape(-1), torch.arange(200).repeat_interleave(9)]
    )
    with pytest.raises(ValueError, match='kNN form'):
        topk_jaccard_ray(edge_index, sim[:, 1:].reshape(-1), 5)
