import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.index.graph import (
    merge_candidates,
    offer_reverse,
    refill,
    search,
    search_both_ways,
)
from torch_geometric_sdt.nn.knn import knn


def _data(n=400, seed=0):
    x, _ = synthetic_faces(n, 32, seed=seed)
    return x.float()


def _recall(index, exact):
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(index, exact))
    return hits / exact.numel()


def test_search_is_exact_among_live_rows():
    x = _data()
    alive = torch.arange(0, 400, 2)  # Every other row.
    query = alive[:10]
    index, sim = search(x, alive, query, 8)
    ref = knn(x[alive], 8, backend='exact')
    assert torch.equal(index, alive[ref.index[:10]])
    assert torch.allclose(sim, ref.sim[:10])
    assert torch.equal(index[:, 0], query)


def test_merge_candidates_dedupes_and_keeps_self_first():
    index = torch.tensor([[0, 1, 2]])
    sim = torch.tensor([[1.0, 0.9, 0.5]])
    cand = torch.tensor([[2, 3, -1, 0]])
    cand_sim = torch.tensor([[0.5, 0.7, -torch.inf, 1.0]])
    out, out_sim = merge_candidates(index, sim, torch.tensor([0]), cand, cand_sim)
    assert out.tolist() == [[0, 1, 3]]
    assert torch.allclose(out_sim, torch.tensor([[1.0, 0.9, 0.7]]))


@pytest.mark.parametrize('block_size', [16, 64])  # Several query chunks, or one.
@pytest.mark.parametrize('low_precision', [False, True])
def test_additions_keep_the_graph_exact(block_size, low_precision):
    x = _data(500)
    k = 10
    old = knn(x[:450], k, backend='exact')
    new_rows = torch.arange(450, 500)
    alive = torch.ones(500, dtype=torch.bool)
    new_index, new_sim, *offers = search_both_ways(
        x,
        torch.arange(500),
        new_rows,
        k,
        old.sim[:, -1],
        block_size=block_size,
        low_precision=low_precision,
    )
    index = torch.cat([old.index, new_index])
    sim = torch.cat([old.sim, new_sim])
    # Several chunks of rows, each padded to its own widest row.
    changed = offer_reverse(index, sim, alive, *offers, chunk_size=block_size // 4)
    exact = knn(x, k, backend='exact')
    assert torch.equal(index, exact.index)
    assert torch.allclose(sim, exact.sim, atol=1e-6)
    # The rows reported changed are exactly those whose list changed.
    moved = (exact.index[:450] != old.index).any(dim=1).nonzero().view(-1)
    assert torch.equal(changed, moved)


def _removed(n, k, every):
    """Faces, their exact graph, copies of its lists and every
    :obj:`every`-th face removed."""
    x = _data(n)
    graph = knn(x, k, backend='exact')
    dead = torch.zeros(n, dtype=torch.bool)
    dead[::every] = True
    return x, graph, graph.index.clone(), graph.sim.clone(), dead


def test_refill_drops_removed_points():
    x, graph, index, sim, dead = _removed(500, 10, 10)
    changed = refill(x, index, sim, dead)
    live = (~dead).nonzero().view(-1)
    assert not bool(dead[index[live]].any())
    assert bool(dead[graph.index[changed]].any(dim=1).all())
    assert torch.equal(index[live, 0], live)
    assert bool((sim[live, 1:-1] >= sim[live, 2:]).all())
    # Similarities are the true cosines of the listed pairs.
    true = (x[live].unsqueeze(1) * x[index[live]]).sum(-1)
    assert torch.allclose(sim[live, 1:], true[:, 1:], atol=1e-5)
    exact = knn(x[live], 10, backend='exact')
    assert _recall(index[live], live[exact.index]) > 0.97


def test_refill_searches_lists_its_neighbours_cannot_fill():
    # Two tight groups of 6: removing 2 points of a group leaves lists
    # whose neighbours only know the group itself.
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(2, 16, generator=g), dim=1)
    x = centres.repeat_interleave(6, 0) + 0.01 * torch.randn(12, 16, generator=g)
    x = torch.nn.functional.normalize(x, dim=1)
    graph = knn(x, 6, backend='exact')
    index, sim = graph.index.clone(), graph.sim.clone()
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[0, 1]] = True
    refill(x, index, sim, dead)
    live = (~dead).nonzero().view(-1)
    exact = knn(x[live], 6, backend='exact')
    assert torch.equal(index[live], live[exact.index])


@pytest.mark.parametrize('low_precision', [False, True])
def test_offers_are_the_pairs_that_reach_an_old_rows_bound(low_precision):
    x = _data(300)
    k = 8
    old = knn(x[:280], k, backend='exact')
    new_rows = torch.arange(280, 300)
    _, _, rows, cand, cand_sim = search_both_ways(
        x,
        torch.arange(300),
        new_rows,
        k,
        old.sim[:, -1],
        block_size=64,
        low_precision=low_precision,
    )
    full = x[:280] @ x[280:].t()
    reach = (full >= old.sim[:, -1:]).nonzero()
    assert rows.numel() == reach.size(0) < full.numel() // 4
    assert bool((rows[1:] >= rows[:-1]).all())  # Ordered by old row.
    got = sorted(zip(rows.tolist(), cand.tolist()))
    assert got == sorted((int(i), int(q) + 280) for i, q in reach)
    assert torch.allclose(cand_sim, full[rows, cand - 280])


def test_search_both_ways_breaks_ties_at_the_cut_by_id():
    # Integer points tie exactly at the k-th place; the smaller ids win, as
    # in an exact search.
    x = torch.tensor([[1.0, 0.0]] * 7 + [[0.0, 1.0]] * 7 + [[1.0, 1.0]] * 6)
    x = x / x.norm(dim=1, keepdim=True)
    k = 4
    old = knn(x[:16], k, backend='exact')
    new_rows = torch.arange(16, 20)
    new_index, new_sim, *_ = search_both_ways(
        x, torch.arange(20), new_rows, k, old.sim[:, -1], block_size=16
    )
    exact = knn(x, k, backend='exact')
    assert torch.equal(new_index, exact.index[16:])
    assert new_index[0].tolist() == [16, 14, 15, 17]
    assert torch.allclose(new_sim, exact.sim[16:])


def test_search_both_ways_orders_cosines_closer_than_bfloat16_can_tell():
    # Past the first block the products run in bfloat16, whose spacing near
    # 0.5 is 2**-9: the cosines of k - 1 points (the list holds the new
    # point first) to the new point, 1e-4 apart, look equal there (the cut
    # after them does not), and the float32 comparison of the survivors
    # orders them.
    k = 5
    far = torch.tensor([[0.0, 1.0, 0.0]]).repeat(16, 1)  # The first block.
    gen = torch.Generator().manual_seed(0)
    cos = torch.cat(
        [
            0.5 + 1e-4 * torch.randperm(k - 1, generator=gen),
            0.4 + 1e-4 * torch.randperm(24 - k + 1, generator=gen),
        ]
    )
    near = torch.stack([cos, torch.zeros(24), (1 - cos**2).sqrt()], dim=1)
    x = torch.cat([far, near, torch.tensor([[1.0, 0.0, 0.0]])])
    x = x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    x = x / x.norm(dim=1, keepdim=True)
    old = knn(x[:40], k, backend='exact')
    new_index, new_sim, rows, cand, _ = search_both_ways(
        x,
        torch.arange(41),
        torch.arange(40, 41),
        k,
        old.sim[:, -1],
        block_size=16,
        low_precision=True,
    )
    exact = knn(x, k, backend='exact')
    assert torch.equal(new_index, exact.index[40:])
    assert torch.allclose(new_sim, exact.sim[40:], atol=1e-6)
    reach = ((x[:40] @ x[40]) >= old.sim[:, -1]).nonzero().view(-1)
    assert torch.equal(rows, reach) and bool((cand == 40).all())


def test_offer_reverse_skips_removed_rows():
    x = _data(120)
    k = 6
    old = knn(x[:100], k, backend='exact')
    new_rows = torch.arange(100, 120)
    new_index, new_sim, *offers = search_both_ways(
        x, torch.arange(120), new_rows, k, old.sim[:, -1]
    )
    index, sim = torch.cat([old.index, new_index]), torch.cat([old.sim, new_sim])
    alive = torch.ones(120, dtype=torch.bool)
    gone = offers[0][:1]  # A row that had an offer.
    alive[gone] = False
    before = index[gone].clone()
    changed = offer_reverse(index, sim, alive, *offers)
    assert torch.equal(index[gone], before)
    assert not bool(torch.isin(gone, changed).any())


def test_refill_takes_candidates_from_the_lists_of_its_group():
    k = 12
    x, graph, index, sim, dead = _removed(600, k, 25)
    changed = refill(x, index, sim, dead, min_rows=1)  # One group per block.
    # A list's group: the lists whose first removed point is its own.
    held = graph.index[changed]
    first = held.gather(1, dead[held].int().argmax(dim=1, keepdim=True)).view(-1)
    exact = knn(x[~dead], k, backend='exact')
    live = (~dead).nonzero().view(-1)
    searched = 0
    for row, point in zip(changed.tolist(), first.tolist()):
        gained = set(index[row].tolist()) - set(graph.index[row].tolist())
        pool = set(graph.index[changed[first == point]].view(-1).tolist())
        if not gained <= pool:  # Only a list its group could not fill...
            local = int(torch.searchsorted(live, torch.tensor(row)))
            assert index[row].tolist() == live[exact.index[local]].tolist()
            searched += 1  # ...is searched exactly.
    assert searched < changed.numel() // 4
