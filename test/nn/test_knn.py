from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch_geometric.testing import is_full_test, onlyFullTest, withPackage

import torch_geometric_sdt.typing as sdt_typing
from torch_geometric_sdt.baselines import cluster_knn
from torch_geometric_sdt.nn import KNN, knn, knn_graph
from torch_geometric_sdt.nn.knn import (
    AUTO_EXACT_MAX_NODES,
    SCREEN_GROUP,
    exact_knn,
    pack_rows,
    resolve_backend,
    screen,
)
from torch_geometric_sdt.nn.knn.api import prepare
from torch_geometric_sdt.nn.knn.candidates import finalize_candidates
from torch_geometric_sdt.testing import GOOD_D as D
from torch_geometric_sdt.testing import GOOD_K as K
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import assert_api_refuses, small_clusterer, with_value


def brute_force(x: Tensor, k: int, metric: str) -> tuple[Tensor, Tensor]:
    r"""Reference in float64: self first, then (sim desc, id asc)."""
    x = x.double()
    if metric == 'cosine':
        x = x / x.norm(dim=1, keepdim=True)
        sim = x @ x.t()
    else:
        sim = -torch.cdist(x, x).pow(2)
    key = sim.clone()
    key.fill_diagonal_(float('inf'))
    _, index = torch.sort(key, dim=1, descending=True, stable=True)
    index = index[:, :k]
    val = sim.gather(1, index)
    val[:, 0] = 1.0 if metric == 'cosine' else 0.0
    return index, val


def clustered(num_nodes: int, dim: int, num_classes: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=gen)
    label = torch.randint(num_classes, (num_nodes,), generator=gen)
    x = centers[label] + 0.4 * torch.randn(num_nodes, dim, generator=gen)
    return torch.nn.functional.normalize(x, dim=1)


def recall(index: Tensor, ref: Tensor) -> float:
    hits = (index.unsqueeze(2) == ref.unsqueeze(1)).any(dim=2).sum()
    return float(hits) / ref.numel()


def check_invariants(out: KNN, num_nodes: int, k: int) -> None:
    assert out.index.shape == (num_nodes, k) and out.sim.shape == (num_nodes, k)
    assert out.index.dtype == torch.long
    assert torch.equal(out.index[:, 0], torch.arange(num_nodes))
    assert bool((out.sim[:, 1:] <= out.sim[:, :-1]).all())
    srt = out.index.sort(dim=1).values
    assert bool((srt[:, 1:] != srt[:, :-1]).all())  # k distinct ids per row.
    assert int(out.index.min()) >= 0 and int(out.index.max()) < num_nodes


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
@pytest.mark.parametrize('k', [1, 2, 9, 119])
def test_exact_float64_is_exact(metric: str, k: int) -> None:
    x = torch.randn(120, 6, dtype=torch.float64)
    out = knn(x, k, metric=metric, backend='exact')
    ref_index, ref_sim = brute_force(x, k, metric)
    assert out.sim.dtype == torch.float64
    assert torch.equal(out.index, ref_index)
    assert torch.allclose(out.sim, ref_sim, atol=1e-12)
    check_invariants(out, 120, k)


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_exact_float32(metric: str) -> None:
    x = torch.randn(300, 16)
    out = knn(x, 12, metric=metric, backend='exact')
    ref_index, ref_sim = brute_force(x, 12, metric)
    assert out.sim.dtype == torch.float32
    check_invariants(out, 300, 12)
    # float32 may swap neighbours whose similarities agree to ~1e-7.
    assert (out.index == ref_index).float().mean() > 0.999
    assert torch.allclose(out.sim.double(), ref_sim, atol=1e-4)
    assert float(out.sim[:, 0].unique().item()) == (1.0 if metric == 'cosine' else 0)


def test_numpy_and_half_input() -> None:
    x = torch.randn(100, 8)
    ref = knn(x, 5, backend='exact')
    out = knn(x.numpy(), 5, backend='exact')
    assert isinstance(out.index, Tensor)
    assert torch.equal(out.index, ref.index) and torch.equal(out.sim, ref.sim)
    half = knn(x.half(), 5, backend='exact')
    assert half.sim.dtype == torch.float32
    assert recall(half.index, ref.index) > 0.95
    out64 = knn(x.double().numpy(), 5, backend='exact')
    assert out64.sim.dtype == torch.float64


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_chunking_matches_single_chunk(metric: str) -> None:
    x = torch.randn(101, 12)
    ref = knn(x, 10, metric=metric, chunk_size=1000, col_chunk_size=1000)
    for chunk_size, col_chunk_size in [(1, 1000), (7, 13), (64, 5), (300, 40)]:
        out = knn(
            x,
            10,
            metric=metric,
            backend='exact',
            chunk_size=chunk_size,
            col_chunk_size=col_chunk_size,
        )
        assert torch.equal(out.index, ref.index)
        # The product's summation order depends on the block shape.
        assert torch.allclose(out.sim, ref.sim, rtol=0, atol=1e-5)


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
@pytest.mark.parametrize('block', [16, 37, 64, 1000])
def test_symmetric_blocks_match_query_chunks(metric: str, block: int) -> None:
    # The default exact path (symmetric square blocks, candidates screened
    # against each row's running (k+1)-th value) against the query-chunk path
    # and the float64 brute force, with block sides that are and are not
    # multiples of the screening group, and k + 1 larger than a block.
    x = clustered(203, 8, 9, seed=3)
    ref = knn(x, 40, metric=metric, backend='exact', symmetric=False)
    out = knn(x, 40, metric=metric, backend='exact', chunk_size=block)
    assert torch.equal(out.index, ref.index)
    assert torch.allclose(out.sim, ref.sim, rtol=0, atol=1e-5)
    index, _ = brute_force(x, 40, metric)
    assert recall(out.index, index) == 1.0
    check_invariants(out, 203, 40)


def test_symmetric_ties_at_the_cut_keep_smallest_ids() -> None:
    # Integer points give exact ties at the k-th place; those rows are
    # recomputed with the id rule.
    x = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6 + [[1.0, 1.0]] * 5)
    out = knn(x, 3, backend='exact', chunk_size=4)
    ref = knn(x, 3, backend='exact', symmetric=False)
    assert torch.equal(out.index, ref.index)
    assert out.index[5].tolist() == [5, 0, 1]
    assert out.index[16].tolist() == [16, 12, 13]


@pytest.mark.parametrize('dim', [0, 1])
@pytest.mark.parametrize('shape', [(37, 53), (2 * SCREEN_GROUP, 3 * SCREEN_GROUP)])
def test_screen_finds_the_entries_above_each_threshold(
    dim: int, shape: tuple[int, int]
) -> None:
    gen = torch.Generator().manual_seed(0)
    block = torch.rand(shape, generator=gen)
    thr = torch.rand(shape[1 - dim], generator=gen) * 0.5 + 0.5
    thr[0] = -torch.inf  # A line where every entry passes.
    thr[1] = torch.inf  # And one where none does.
    row, col, val = screen(block, thr, dim=dim)
    above = block > (thr.unsqueeze(1) if dim == 1 else thr.unsqueeze(0))
    assert 0 < row.numel() < block.numel()
    assert sorted(zip(row.tolist(), col.tolist())) == [
        tuple(e) for e in above.nonzero().tolist()
    ]
    assert torch.equal(val, block[row, col])
    # An inclusive test: pass the float just below the threshold.
    edge = thr.clone()
    edge[2] = block[2, 0] if dim == 1 else block[0, 2]
    below = torch.nextafter(edge, torch.tensor(-torch.inf))
    row, col, _ = screen(block, below, dim=dim)
    assert ((2, 0) if dim == 1 else (0, 2)) in set(zip(row.tolist(), col.tolist()))


def test_pack_rows_sets_each_rows_entries_side_by_side() -> None:
    row = torch.tensor([2, 0, 2, 2])
    col = torch.tensor([5, 7, 1, 3])
    val = torch.tensor([0.5, 0.1, 0.9, 0.3])
    out_val, out_idx = pack_rows(row, col, val, 4)
    assert out_idx.tolist() == [[7, -1, -1], [-1] * 3, [5, 1, 3], [-1] * 3]
    assert out_val[2].tolist() == pytest.approx([0.5, 0.9, 0.3])
    assert bool((out_val[[1, 3]] == -torch.inf).all())
    empty_val, empty_idx = pack_rows(row[:0], col[:0], val[:0], 2)
    assert empty_val.shape == empty_idx.shape == (2, 0)


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_duplicates(metric: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 5, generator=gen)
    copies = [3, 7, 11, 19, 25]
    x[copies] = x[3].clone()
    out = knn(x, 3, metric=metric, backend='exact', col_chunk_size=8)
    # Self first, then the tied copies by ascending id (ties at the k-th
    # place keep the smallest ids).
    assert out.index[19].tolist() == [19, 3, 7]
    assert out.index[3].tolist() == [3, 7, 11]
    assert out.index[25].tolist() == [25, 3, 7]
    out = knn(x, 6, metric=metric, backend='exact')
    assert out.index[11].tolist()[:5] == [11, 3, 7, 19, 25]
    # Deterministic.
    again = knn(x, 6, metric=metric, backend='exact')
    assert torch.equal(out.index, again.index) and torch.equal(out.sim, again.sim)


def test_all_identical_points() -> None:
    x = torch.ones(40, 3)
    out = knn(x, 4, backend='exact', chunk_size=9, col_chunk_size=16)
    expected = [[i] + [j for j in range(4) if j != i][:3] for i in range(40)]
    assert out.index.tolist() == expected
    assert torch.allclose(out.sim, torch.ones(40, 4))


def test_bad_input() -> None:
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match='k must be positive'):
        knn(x, 0)
    with pytest.raises(ValueError, match='smaller than the number of points'):
        knn(x, 10)
    with pytest.raises(ValueError, match='k must be an integer'):
        knn(x, 2.0)
    y = x.clone()
    y[3, 1] = float('nan')
    y[7, 0] = float('inf')
    with pytest.raises(ValueError, match=r'2 row\(s\) with NaN or Inf.*row 3'):
        knn(y, 2)
    z = x.clone()
    z[4] = 0
    with pytest.raises(ValueError, match=r'1 zero row\(s\).*row 4'):
        knn(z, 2, metric='cosine')
    assert knn(z, 2, metric='l2').index.shape == (10, 2)
    with pytest.raises(ValueError, match='floating-point'):
        knn(torch.randint(0, 5, (10, 4)), 2)
    with pytest.raises(ValueError, match='floating-point'):
        knn(torch.ones(10, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match='floating-point'):
        knn(np.ones((10, 4), dtype=np.int64), 2)
    with pytest.raises(ValueError, match='2-D'):
        knn(torch.randn(10), 2)
    with pytest.raises(ValueError, match='2-D'):
        knn(torch.randn(10, 2, 2), 2)
    with pytest.raises(ValueError, match='torch.Tensor or numpy'):
        knn([[1.0, 2.0]], 1)
    with pytest.raises(ValueError, match='unknown metric'):
        knn(x, 2, metric='manhattan')
    with pytest.raises(ValueError, match='unknown backend'):
        knn(x, 2, backend='annoy')
    with pytest.raises(ValueError, match='unknown option'):
        knn(x, 2, backend='exact', ef_search=3)
    with pytest.raises(ValueError, match='chunk_size'):
        knn(x, 2, backend='exact', chunk_size=0)
    with pytest.raises(ValueError, match='col_chunk_size'):
        knn(x, 2, backend='exact', col_chunk_size=-1)


def test_missing_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(10, 4)
    monkeypatch.setattr(sdt_typing, 'WITH_FAISS', False)
    message = r'requires faiss: pip install torch_geometric_sdt\[faiss\]'
    for backend in ['faiss', 'faiss-hnsw', 'faiss-ivf']:
        with pytest.raises(ImportError, match=message):
            knn(x, 2, backend=backend)
    # knn_graph searches a graph no larger than k + 1 exactly.
    assert knn_graph(x, 9, backend='faiss').shape == (2, 10 * 9)


def test_auto_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device('cpu')
    big = AUTO_EXACT_MAX_NODES + 1
    assert resolve_backend('auto', 1000, cpu) == 'exact'
    assert resolve_backend('auto', AUTO_EXACT_MAX_NODES, cpu) == 'exact'
    assert resolve_backend('auto', big, torch.device('meta')) == 'exact'
    assert resolve_backend('auto', big, cpu) == 'pynndescent'
    # NN-descent is a dependency: faiss takes no part in the choice.
    for with_faiss in [False, True]:
        monkeypatch.setattr(sdt_typing, 'WITH_FAISS', with_faiss)
        assert resolve_backend('auto', big, cpu) == 'pynndescent'
    assert resolve_backend('faiss', 10, cpu) == 'faiss'
    with pytest.raises(ValueError, match='unknown backend'):
        resolve_backend('annoy', 10, cpu)


def test_package_exports() -> None:
    import importlib

    package = importlib.import_module('torch_geometric_sdt.nn.knn')
    assert package.KNN is KNN and package.knn is knn
    assert package.knn_graph is knn_graph
    assert package.BACKENDS == (
        'auto',
        'exact',
        'faiss',
        'faiss-hnsw',
        'faiss-ivf',
        'pynndescent',
    )
    assert package.METRICS == ('cosine', 'l2')
    assert package.AUTO_EXACT_MAX_NODES == 200_000
    assert package.DEFAULT_BLOCK_NUMEL == 2**25
    assert package.DEFAULT_COL_CHUNK_SIZE == 32_768
    assert package.resolve_backend is resolve_backend
    assert package.exact_knn is exact_knn
    assert package.screen is screen and package.pack_rows is pack_rows


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_exact_knn_is_the_query_chunk_path(metric: str) -> None:
    x = torch.randn(50, 4)
    ref = knn(x, 6, metric=metric, backend='exact', symmetric=False)
    prepared, _ = prepare(x, metric)
    index, sim = exact_knn(prepared, 6, metric)
    assert torch.equal(index, ref.index) and torch.equal(sim, ref.sim)
    rows = torch.tensor([7, 3])
    index, sim = exact_knn(prepared, 6, metric, query=rows, chunk_size=1)
    assert torch.equal(index, ref.index[rows])
    # Other block shapes sum the products in another order.
    assert torch.allclose(sim, ref.sim[rows], rtol=0, atol=1e-5)


def test_progress() -> None:
    x = torch.randn(50, 4)
    out = knn(x, 3, backend='exact', chunk_size=10, progress=True)
    assert torch.equal(out.index, knn(x, 3, backend='exact').index)


@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_finalize_candidates(metric: str) -> None:
    x, _ = prepare(torch.randn(8, 3, dtype=torch.float64), metric)
    ref_index, ref_sim = exact_knn(x, 3, metric)
    cand = ref_index[:, [2, 1, 0]].clone()  # Self last; must move to rank 0.
    cand_sim = torch.zeros_like(cand, dtype=torch.float64)
    cand_sim[:, 0] = ref_sim[:, 2]
    cand_sim[:, 1] = ref_sim[:, 1]
    cand[5] = ref_index[5, [1, 2, 1]]  # A repeated id: recomputed exactly.
    cand[6, 0] = -1  # Missing: recomputed exactly.
    index, sim = finalize_candidates(x, cand, cand_sim, 3, metric)
    assert torch.equal(index, ref_index)
    assert torch.allclose(sim, ref_sim)
    # pynndescent's int32 ids give the same (int64) lists:
    index, sim = finalize_candidates(x, cand.int(), cand_sim, 3, metric)
    assert index.dtype == torch.long
    assert torch.equal(index, ref_index)
    # Self missing from the candidates: inserted, the last one dropped.
    cand = ref_index[:, 1:].clone()
    index, _ = finalize_candidates(x, cand, ref_sim[:, 1:].clone(), 3, metric)
    assert torch.equal(index, ref_index)


@withPackage('faiss')
@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_faiss_backends(metric: str) -> None:
    x = clustered(3000, 32, 60)
    ref = knn(x, 20, metric=metric, backend='exact')
    flat = knn(x, 20, metric=metric, backend='faiss')
    check_invariants(flat, 3000, 20)
    assert recall(flat.index, ref.index) > 0.999
    assert torch.allclose(flat.sim, ref.sim, atol=1e-4)
    hnsw = knn(x, 20, metric=metric, backend='faiss-hnsw')
    check_invariants(hnsw, 3000, 20)
    assert recall(hnsw.index, ref.index) > 0.95
    ivf = knn(x, 20, metric=metric, backend='faiss-ivf', nprobe=8)
    check_invariants(ivf, 3000, 20)
    assert recall(ivf.index, ref.index) > 0.8
    again = knn(x, 20, metric=metric, backend='faiss-ivf', nprobe=8)
    assert torch.equal(ivf.index, again.index)


@withPackage('faiss')
def test_faiss_options_and_duplicates() -> None:
    x = torch.randn(200, 8)
    x[[5, 9, 100]] = x[9].clone()
    out = knn(x, 3, backend='faiss-hnsw', M=8, ef_construction=40, ef_search=16)
    check_invariants(out, 200, 3)
    assert out.index[100].tolist() == [100, 5, 9]
    out = knn(x, 3, backend='faiss')
    assert out.index[9].tolist() == [9, 5, 100]
    with pytest.raises(ValueError, match='unknown option'):
        knn(x, 3, backend='faiss', nprobe=3)


@onlyFullTest
@withPackage('pynndescent')
@pytest.mark.parametrize('metric', ['cosine', 'l2'])
def test_pynndescent(metric: str) -> None:
    x = clustered(1500, 16, 30)
    ref = knn(x, 15, metric=metric, backend='exact')
    out = knn(x, 15, metric=metric, backend='pynndescent', random_state=3)
    check_invariants(out, 1500, 15)
    assert recall(out.index, ref.index) > 0.9
    again = knn(x, 15, metric=metric, backend='pynndescent', random_state=3)
    assert torch.equal(out.index, again.index)
    with pytest.raises(ValueError, match='not as pynndescent options'):
        knn(x, 5, backend='pynndescent', metric='cosine', n_neighbors=4)


@withPackage('pynndescent')
def test_nndescent_normalises_the_callers_copy_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pynndescent normalises cosine data in a copy of a float32 NumPy
    # array; given the tensor that knn() prepared, it works on that tensor
    # itself (one copy of the features less), and finds the same lists.
    import numpy as np
    import pynndescent

    from torch_geometric_sdt.nn.knn.nndescent import nndescent_search

    seen: list[bool] = []
    real = pynndescent.NNDescent

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, data, **kwargs):
            super().__init__(data, **kwargs)
            seen.append(np.shares_memory(self._raw_data, x.numpy()))

    monkeypatch.setattr(pynndescent, 'NNDescent', Spy)
    x = torch.nn.functional.normalize(clustered(400, 8, 10), dim=1)
    before = x.numpy().copy()
    options = {'random_state': 3, 'n_iters': 2}
    ids, sim = nndescent_search(x, 6, 'cosine', dict(options))
    assert seen == [True]
    ref = real(before, metric='cosine', n_neighbors=7, **options)
    ref_ids, ref_dist = ref.neighbor_graph
    assert ids.dtype == torch.int32
    assert torch.equal(ids, torch.from_numpy(ref_ids))
    assert torch.equal(sim, 1.0 - torch.from_numpy(ref_dist.astype(np.float32)))


def test_auto_runs_nndescent_with_its_own_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch_geometric_sdt.nn.knn import AUTO_NNDESCENT_OPTIONS, api

    seen: list[dict] = []

    def spy(x, k, metric, kwargs):  # what pynndescent would be given
        seen.append(dict(kwargs))
        return exact_knn(x, k + 1, metric)

    monkeypatch.setattr(api, 'nndescent_search', spy)
    monkeypatch.setattr(api, 'AUTO_EXACT_MAX_NODES', 100)
    x = clustered(300, 8, 10)
    ref = knn(x, 6, backend='exact')
    out = knn(x, 6, backend='auto')
    assert torch.equal(out.index, ref.index)
    knn(x, 6, backend='auto', n_iters=2)
    knn(x, 6, backend='pynndescent')
    assert seen == [
        AUTO_NNDESCENT_OPTIONS,
        {**AUTO_NNDESCENT_OPTIONS, 'n_iters': 2},  # the caller's option wins
        {},  # pynndescent's own defaults
    ]
    assert AUTO_NNDESCENT_OPTIONS == {'n_iters': 4, 'max_candidates': 30}


@withPackage('pynndescent')
def test_stop_request_during_nndescent_is_held_back_then_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stop request that arrives inside pynndescent's compiled code is held
    # back and raised when the construction returns, never lost.
    import signal

    import pynndescent

    real = pynndescent.NNDescent
    calls = []

    def stopped_inside(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Arrives while "native code" runs.
        calls.append(1)  # ... which goes on to the end.
        return real(*args, **kwargs)

    monkeypatch.setattr(pynndescent, 'NNDescent', stopped_inside)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            knn(clustered(500, 8, 10), 10, backend='pynndescent')
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == [1]


@onlyFullTest
@withPackage('faiss')
def test_exact_matches_faiss_on_lfw(lfw: tuple[np.ndarray, np.ndarray]) -> None:
    x = lfw[0]
    ref = knn(x, 30, backend='faiss')
    out = knn(x, 30, backend='exact')
    assert recall(out.index, ref.index) > 0.999
    assert torch.allclose(out.sim, ref.sim, atol=1e-4)


# knn_graph ##################################################################


def graph_reference(
    x: Tensor,
    k: int,
    batch: Tensor | None,
    loop: bool,
    cosine: bool,
) -> set[tuple[int, int]]:
    r"""Edges (source j, target i) of PyG's knn_graph, by brute force."""
    x = x.double()
    if cosine:
        x = x / x.norm(dim=1, keepdim=True)
    dist = torch.cdist(x, x).pow(2)
    if batch is not None:
        dist[batch.view(-1, 1) != batch.view(1, -1)] = float('inf')
    edges = set()
    for i in range(x.size(0)):
        row = dist[i].clone()
        row[i] = -1.0  # Self is nearest.
        order = torch.sort(row, stable=True).indices.tolist()
        order = [j for j in order if row[j] != float('inf')]
        if not loop:
            order = order[1 : k + 1]
        else:
            order = order[:k]
        edges |= {(j, i) for j in order}
    return edges


def as_set(edge_index: Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edge_index.t().tolist()))


@pytest.mark.parametrize('loop', [False, True])
@pytest.mark.parametrize('cosine', [False, True])
def test_knn_graph(loop: bool, cosine: bool) -> None:
    x = torch.randn(60, 3)
    edge_index = knn_graph(x, 4, loop=loop, cosine=cosine)
    assert edge_index.shape == (2, 60 * 4)
    assert as_set(edge_index) == graph_reference(x, 4, None, loop, cosine)
    # Every target has k sources; targets are grouped in order.
    assert torch.equal(edge_index[1], torch.arange(60).repeat_interleave(4))
    assert bool((edge_index[0] == edge_index[1]).any()) == loop
    flipped = knn_graph(x, 4, loop=loop, cosine=cosine, flow='target_to_source')
    assert torch.equal(flipped, edge_index.flip(0))


def test_knn_graph_batch() -> None:
    x = torch.randn(23, 3)
    batch = torch.tensor([0] * 10 + [2] * 3 + [1] * 9 + [3])  # Unsorted.
    edge_index = knn_graph(x, 4, batch, loop=False)
    assert as_set(edge_index) == graph_reference(x, 4, batch, False, False)
    # Graphs with fewer points than k + 1 get all of their other points.
    assert edge_index.size(1) == 10 * 4 + 3 * 2 + 9 * 4 + 0
    assert bool((batch[edge_index[0]] == batch[edge_index[1]]).all())
    edge_index = knn_graph(x, 4, batch, loop=True, batch_size=5)
    assert as_set(edge_index) == graph_reference(x, 4, batch, True, False)
    with pytest.raises(ValueError, match='batch_size'):
        knn_graph(x, 4, batch, batch_size=2)
    with pytest.raises(ValueError, match='batch must have shape'):
        knn_graph(x, 4, batch[:-1])
    with pytest.raises(ValueError, match="flow must be one of 'source_to_target'"):
        knn_graph(x, 4, flow='both')
    with pytest.raises(ValueError, match='k must be a positive'):
        knn_graph(x, 0)


def test_knn_graph_matches_pyg() -> None:
    import torch_geometric

    if not getattr(torch_geometric.typing, 'WITH_KNN', False):
        pytest.skip('torch_geometric.nn.knn_graph needs pyg-lib or torch-cluster')
    x = torch.randn(80, 3)
    batch = torch.tensor([0] * 50 + [1] * 30)
    for loop in [False, True]:
        for flow in ['source_to_target', 'target_to_source']:
            ref = torch_geometric.nn.knn_graph(x, 5, batch, loop=loop, flow=flow)
            out = knn_graph(x, 5, batch, loop=loop, flow=flow)
            assert as_set(out) == as_set(ref)


# KNN container ##############################################################


def test_to_edge_index() -> None:
    out = knn(torch.randn(7, 3), 3, backend='exact')
    edge_index, rank, sim = out.to_edge_index()
    assert out.num_nodes == 7 and out.k == 3
    assert edge_index.shape == (2, 21)
    assert torch.equal(edge_index[1], torch.arange(7).repeat_interleave(3))
    assert torch.equal(edge_index[0], out.index.view(-1))
    assert torch.equal(rank, torch.arange(3).repeat(7))
    assert torch.equal(sim, out.sim.view(-1))
    assert bool((edge_index[0][rank == 0] == edge_index[1][rank == 0]).all())
    reverse, _, _ = out.to_edge_index(flow='target_to_source')
    assert torch.equal(reverse, edge_index.flip(0))
    with pytest.raises(ValueError, match='flow'):
        out.to_edge_index(flow='up')
    # Same edges as knn_graph with loop=True and cosine=True.
    x = torch.randn(30, 4)
    edge_index, _, _ = knn(x, 5, backend='exact').to_edge_index()
    assert as_set(edge_index) == as_set(knn_graph(x, 5, loop=True, cosine=True))


# Huge and tiny magnitudes ###################################################

# Cosine does not depend on the magnitude: these scalings of the points give
# the same neighbours and similarities (the squared norms of the scaled rows
# overflow or underflow unless the rows are first brought to a safe range).
SCALES = {
    torch.float32: [1e20, 1e30, 1e-30],
    torch.float64: [1e20, 1e30, 1e-30, 1e200, 1e-200],
}
# pynndescent compiles its numba code for seconds: full runs only.
_PYNNDESCENT = pytest.param(
    'pynndescent',
    marks=pytest.mark.skipif(not is_full_test(), reason='Fast test run'),
)
_FAISS = pytest.mark.skipif(not sdt_typing.WITH_FAISS, reason='faiss not found')
MAGNITUDE_BACKENDS = ['exact', pytest.param('faiss', marks=_FAISS)]


def _atol(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float32 else 1e-12


@pytest.mark.parametrize('backend', [*MAGNITUDE_BACKENDS, _PYNNDESCENT])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cosine_of_huge_and_tiny_values(backend: str, dtype: torch.dtype) -> None:
    x = clustered(500, 16, 12).to(dtype)
    ref = knn(x, 10, backend=backend)
    for scale in SCALES[dtype]:
        out = knn(x * scale, 10, backend=backend)
        assert torch.equal(out.index, ref.index), scale
        torch.testing.assert_close(out.sim, ref.sim, atol=_atol(dtype), rtol=0)
    # Rows of very different magnitudes in one set, numpy input too:
    mixed = x.clone()
    mixed[::3] *= SCALES[dtype][0]
    mixed[1::3] *= SCALES[dtype][2]
    out = knn(mixed.numpy(), 10, backend=backend)
    assert torch.equal(out.index, ref.index)
    torch.testing.assert_close(out.sim, ref.sim, atol=_atol(dtype), rtol=0)


# For l2 the whole set is scaled by one power of two: the neighbours stay
# those of the unscaled points, the similarities are reported in the units of
# the input (so those of tiny values underflow towards 0).
L2_SCALES = {
    torch.float32: [1e-20, 1e-30, 1e15],
    torch.float64: [1e-30, 1e-200, 1e150],
}


@pytest.mark.parametrize('backend', [*MAGNITUDE_BACKENDS, _PYNNDESCENT])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_l2_of_huge_and_tiny_values(backend: str, dtype: torch.dtype) -> None:
    x = clustered(500, 16, 12).to(dtype)
    ref = knn(x, 10, metric='l2', backend=backend)
    tiny = torch.finfo(dtype).tiny
    for scale in L2_SCALES[dtype]:
        out = knn(x * scale, 10, metric='l2', backend=backend)
        assert torch.equal(out.index, ref.index), scale
        expected = (ref.sim.double() * scale**2).to(dtype)
        torch.testing.assert_close(out.sim, expected, atol=tiny, rtol=1e-4)
        assert bool((out.sim[:, 1:] <= out.sim[:, :-1]).all())
    graph = knn_graph(x * L2_SCALES[dtype][1], 9, backend=backend)
    assert torch.equal(graph, knn_graph(x, 9, backend=backend))


def test_ordinary_values_are_not_rescaled() -> None:
    # Values far from overflow and underflow are searched as they are.
    x = torch.randn(200, 8)
    for metric in ('cosine', 'l2'):
        prepared, _ = prepare(x, metric)
        index, sim = exact_knn(prepared, 5, metric)
        out = knn(x, 5, metric=metric, backend='exact', symmetric=False)
        assert torch.equal(out.index, index) and torch.equal(out.sim, sim)


# Bad input ##################################################################

# Each bad array or option is refused, naming the problem.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'NaN',
        lambda t, g: knn(with_value(g['x'], 2, np.nan), K),
        ValueError,
        r'NaN or Inf values \(first: row 2\)',
    ),
    (
        'Inf',
        lambda t, g: knn(torch.from_numpy(with_value(g['x'], 3, -np.inf)), K),
        ValueError,
        r'NaN or Inf values \(first: row 3\)',
    ),
    (
        'zero vector',
        lambda t, g: knn(with_value(g['x'], 4, 0.0), K),
        ValueError,
        r'1 zero row\(s\).*row 4',
    ),
    (
        'l2 squares overflow',
        lambda t, g: knn(g['x'] * np.float32(1e20), K, metric='l2'),
        ValueError,
        r"too large for metric='l2' in float32",
    ),
    (
        'N = 0',
        lambda t, g: knn(np.zeros((0, D), np.float32), 1),
        ValueError,
        r'no rows \(N = 0\)',
    ),
    (
        'N = 1',
        lambda t, g: knn(g['x'][:1], 1),
        ValueError,
        r'smaller than the number of points \(1\)',
    ),
    (
        'N <= k',
        lambda t, g: knn(g['x'][:5], 5),
        ValueError,
        r'k=5 must be smaller than the number of points \(5\)',
    ),
    (
        'no columns',
        lambda t, g: knn(np.zeros((5, 0), np.float32), 2),
        ValueError,
        'at least one feature column',
    ),
    (
        'integer features',
        lambda t, g: knn(g['y'].reshape(-1, 1), 2),
        ValueError,
        'floating-point',
    ),
    ('k = 0', lambda t, g: knn(g['x'], 0), ValueError, 'k must be positive'),
    ('k < 0', lambda t, g: knn(g['x'], -1), ValueError, 'k must be positive'),
    ('k float', lambda t, g: knn(g['x'], 2.5), ValueError, 'k must be an integer'),
    (
        'unknown backend',
        lambda t, g: knn(g['x'], K, backend='annoy'),
        ValueError,
        "unknown backend 'annoy'",
    ),
    (
        'unknown metric',
        lambda t, g: knn(g['x'], K, metric='manhattan'),
        ValueError,
        "unknown metric 'manhattan'",
    ),
    (
        'unknown backend option',
        lambda t, g: knn(g['x'], K, backend='faiss', M=8),
        ValueError,
        r"unknown option\(s\) \['M'\]",
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


# Policy choices that are not errors #########################################


def test_non_normalised_vectors_are_normalised_for_cosine(good):
    x = good['x']
    scale = np.random.default_rng(0).uniform(0.01, 100.0, (N, 1)).astype(np.float32)
    a, b = knn(x, K, backend='exact'), knn(x * scale, K, backend='exact')
    assert torch.equal(a.index, b.index)
    torch.testing.assert_close(a.sim, b.sim, atol=1e-5, rtol=0)
    assert torch.equal(cluster_knn(a), cluster_knn(b))


def test_duplicates_are_allowed(good):
    x = np.concatenate([good['x'], good['x'][:10]])  # rows N..N+9 repeat 0..9
    graph = knn(x, K)
    assert torch.equal(graph.index[:, 0], torch.arange(N + 10))  # self first
    # Each duplicate pair lists the other at rank 1 (similarity 1):
    assert graph.index[:10, 1].tolist() == list(range(N, N + 10))
    assert graph.index[N:, 1].tolist() == list(range(10))
    torch.testing.assert_close(graph.sim[:, 1][:10], torch.ones(10))
    for method in ('infomap-knn', 'fc-es'):
        pred = cluster_knn(graph, method=method)
        assert pred.shape == (N + 10,)
        assert torch.equal(pred[:10], pred[N:])  # duplicates cluster together
    pred = small_clusterer().cluster(x)
    assert pred.shape == (N + 10,)
