import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.index.graph import offer_reverse, search_both_ways
from torch_geometric_sdt.index.links import (
    TOPK_REACH,
    EarlyStopLinker,
    SDTLinker,
    same_pairs,
)
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.nn.models.knn_context import topk_positions
from torch_geometric_sdt.pretrained import default_model_path


@pytest.fixture(scope='module')
def model():
    return SDTClusterer.load(default_model_path())


@pytest.fixture(scope='module')
def grown():
    """A graph of 700 faces and the same graph after 35 more were added."""
    x, _ = synthetic_faces(735, 64, seed=3)
    x = x.float()
    old = knn(x[:700], 80, backend='exact')
    new_rows = torch.arange(700, 735)
    idx, sim, *offers = search_both_ways(
        x, torch.arange(735), new_rows, 80, old.sim[:, -1]
    )
    index, sims = torch.cat([old.index, idx]), torch.cat([old.sim, sim])
    changed = torch.zeros(735, dtype=torch.bool)
    changed[new_rows] = True
    changed[offer_reverse(index, sims, torch.ones(735, dtype=torch.bool), *offers)] = (
        True
    )
    return x, old, KNN(index, sims), changed


def test_node_states_of_some_nodes_equal_the_full_graph(model, grown):
    x, old, _, _ = grown
    linker = SDTLinker(model)
    ctx = linker.context(x[:700], old)
    topk = model.predict_topk(ctx)
    jac = model.jaccard(ctx, topk)
    full = model.node_states(ctx, topk, jac)
    nodes = torch.tensor([0, 5, 17, 300, 699])
    part = model.node_states(ctx, topk, jac, nodes=nodes)
    assert torch.allclose(part, full[nodes], atol=1e-5)
    field, within = model.receptive_field(ctx, topk, nodes)
    assert field.numel() == int(within[-1]) < 700
    assert torch.equal(field[: nodes.numel()], nodes)  # Hop 0 first, by id.
    assert field.unique().numel() == field.numel()
    assert bool((within[1:] >= within[:-1]).all())
    # Each ring reads only the ring inside it: the Top-K sources of the
    # first |U_l| nodes lie within the first |U_{l+1}|.
    for ring, outer in zip(within[:-1].tolist(), within[1:].tolist()):
        pos = topk_positions(field[:ring], topk, model.k)
        assert bool(torch.isin(ctx.knn.index.view(-1)[pos], field[:outer]).all())


def test_predict_topk_of_some_nodes(model, grown):
    x, old, _, _ = grown
    ctx = SDTLinker(model).context(x[:700], old)
    nodes = torch.tensor([3, 400, 9])
    assert torch.equal(
        model.predict_topk(ctx, nodes=nodes), model.predict_topk(ctx)[nodes]
    )


def test_sdt_update_without_tolerance_equals_a_full_computation(model, grown):
    x, old, new, changed = grown
    linker = SDTLinker(model, tolerance=0.0)
    before = linker.compute(x[:700], old)
    after = linker.update(x, new, old, before, changed)
    ref = SDTLinker(model, scale=linker.scale).compute(x, new)
    assert torch.equal(after['topk'], ref['topk'])
    assert torch.equal(after['shared'], ref['shared'])
    assert torch.equal(after['jaccard'], ref['jaccard'])
    assert torch.allclose(after['h'], ref['h'], atol=1e-5)
    assert torch.equal(torch.isnan(after['band']), torch.isnan(ref['band']))
    assert torch.allclose(after['band'], ref['band'], atol=1e-5, equal_nan=True)
    assert torch.equal(torch.isnan(after['links']), torch.isnan(ref['links']))


def test_sdt_update_with_tolerance_asks_fewer_nodes(model, grown):
    x, old, new, changed = grown
    exact = SDTLinker(model, tolerance=0.0)
    before = exact.compute(x[:700], old)
    asked = {}
    for tol in (0.0, 0.02):
        linker = SDTLinker(model, scale=exact.scale, tolerance=tol)
        spy = linker.model.predict_topk

        def count(ctx, nodes=None, _spy=spy, _tol=tol, **kw):
            asked[_tol] = nodes.numel()
            return _spy(ctx, nodes=nodes, **kw)

        linker.model.predict_topk = count
        try:
            state = linker.update(x, new, old, before, changed)
        finally:
            del linker.model.predict_topk
        assert state['topk'].numel() == 735
    assert 35 <= asked[0.02] < asked[0.0]


@pytest.mark.parametrize('method', ['infomap-knn', 'fc-es'])
def test_baseline_links_follow_the_early_stop_rule(method, grown):
    x, old, _, _ = grown
    links = EarlyStopLinker(method, 0.5).compute(x[:700], old)['links']
    linked = ~torch.isnan(links)
    assert not bool(linked[:, 0].any())  # Never to itself.
    # A prefix of ranks 1.. is linked, the rest not.
    run = linked[:, 1:].int().cummin(dim=1).values.bool()
    assert torch.equal(run, linked[:, 1:])
    if method == 'infomap-knn':
        assert bool((links[linked] >= 0.5).all())
        assert torch.allclose(links[linked], old.sim[linked])


def _spied_update(model, grown, name):
    """A tolerant update after an exact computation, recording the keyword
    arguments of every call of the model method :obj:`name`."""
    x, old, new, changed = grown
    exact = SDTLinker(model, tolerance=0.0)
    before = exact.compute(x[:700], old)
    linker = SDTLinker(model, scale=exact.scale, tolerance=0.02)
    method = getattr(linker.model, name)
    calls: list = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return method(*args, **kwargs)

    setattr(linker.model, name, spy)
    try:
        after = linker.update(x, new, old, before, changed)
    finally:
        delattr(linker.model, name)
    return linker, before, after, calls


def test_sdt_update_rescores_only_the_pairs_whose_inputs_moved(model, grown):
    _, before, after, calls = _spied_update(model, grown, 'score_band')
    pos = calls[0]['pos']
    rows = torch.unique(pos // 80)
    # Whole rows would be every scored pair of the rows touched; the update
    # scores fewer.
    every = model.scored_positions(after['topk'])
    assert pos.numel() < int(torch.isin(every // 80, rows).sum())
    # Pairs not rescored, in rows whose K_i stayed, keep their probability.
    kept = torch.ones(735 * 80, dtype=torch.bool)
    kept[pos] = False
    kept = kept.view(735, 80)[:700]
    kept &= (after['topk'][:700] == before['topk']).unsqueeze(1)
    kept &= ~torch.isnan(before['band'])
    assert bool(kept.any())
    assert torch.equal(after['band'][:700][kept], before['band'][kept])


def test_sdt_update_asks_topk_where_the_list_moved_within_reach(model, grown):
    x, old, new, _ = grown
    linker, before, _, calls = _spied_update(model, grown, 'predict_topk')
    asked = calls[0]['nodes']
    # Old rows asked: those with a new id at a rank below K_i + TOPK_REACH;
    # every new row.
    listed = new.index[:700] != old.index
    reach = torch.arange(80) < (before['topk'] + TOPK_REACH).unsqueeze(1)
    expected = torch.cat(
        [(listed & reach).any(dim=1).nonzero().view(-1), torch.arange(700, 735)]
    )
    assert torch.equal(asked, expected)
    # A change past the reach alone asks nothing.
    far = (listed & ~reach).any(dim=1) & ~(listed & reach).any(dim=1)
    assert bool(far.any()) and not bool(torch.isin(far.nonzero().view(-1), asked).any())
    # Nor does a set Jaccard index that moved within reach while the ids
    # there stayed.
    shared = linker.context(x, new).shared[:700]
    moved = ((shared - before['shared']).abs() > 0.02) & reach
    alone = moved.any(dim=1) & ~(listed & reach).any(dim=1)
    assert bool(alone.any()) and not bool(
        torch.isin(alone.nonzero().view(-1), asked).any()
    )


def test_same_pairs_finds_every_old_pair_after_an_addition(grown):
    _, old, new, _ = grown
    rank = same_pairs(new.index, old.index)
    assert bool((rank[700:] == -1).all())
    found = rank[:700] >= 0
    # Every old point still listed is found, at a rank holding it before.
    assert torch.equal(found, new.index[:700] < 700)
    held = old.index.gather(1, rank[:700].clamp(min=0))
    assert torch.equal(held[found], new.index[:700][found])
    # A list changed otherwise (a removal's refill) finds a pair only where
    # it kept its rank.
    index = old.index.clone()
    index[0, 5:] = old.index[1, 5:]
    rank = same_pairs(index, old.index)
    assert rank[0, :5].tolist() == list(range(5))
    changed = (index[0] != old.index[0]).nonzero().view(-1)
    assert bool((rank[0, changed] == -1).all())


def test_sdt_update_rescores_the_jaccard_of_the_pairs_whose_lists_moved(model, grown):
    x, old, new, _ = grown
    _, before, after, calls = _spied_update(model, grown, 'jaccard')
    pos = calls[0]['positions']
    assert 35 * 80 < pos.numel() < 735 * 80
    # A pair of two old faces whose Top-K sets both stayed is not rescored,
    # and keeps its score at its (maybe shifted) rank.
    rank = same_pairs(new.index, old.index)
    stay = rank[:700] == torch.arange(80)
    head = torch.arange(80) < after['topk'][:700].unsqueeze(1)
    kept = (after['topk'][:700] == before['topk']) & (stay | ~head).all(dim=1)
    kept = torch.cat([kept, torch.zeros(35, dtype=torch.bool)])
    pair = kept[new.index[:700]] & kept[:700].unsqueeze(1) & (rank[:700] >= 0)
    assert bool(pair.any())
    flat = (torch.arange(700).unsqueeze(1) * 80 + torch.arange(80))[pair]
    assert not bool(torch.isin(flat, pos).any())
    old_rank = rank[:700][pair]
    rows = torch.arange(700).unsqueeze(1).expand(700, 80)[pair]
    assert torch.equal(after['jaccard'][:700][pair], before['jaccard'][rows, old_rank])
