from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch

from torch_geometric_sdt import io
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.models.knn_context import (
    KNNContext,
    band_positions,
    topk_positions,
)
from torch_geometric_sdt.nn.models.sdt_clusterer import (
    TOPK_QUANTILE,
    SDTClusterer,
    spread_key,
)
from torch_geometric_sdt.nn.models.topk_predictor import TopKPredictor
from torch_geometric_sdt.testing import GOOD_K as K
from torch_geometric_sdt.testing import GOOD_N as N
from torch_geometric_sdt.testing import assert_api_refuses, small_clusterer
from torch_geometric_sdt.utils.knn_features import noise_scale, similarity_scale


@pytest.fixture(scope='module')
def faces():
    return synthetic_faces(400, dim=16, seed=3)


def test_band_and_topk_positions_brute_force():
    k = 6
    topk = torch.tensor([1, 3, 6, 2])
    pos = band_positions(topk, k, (1, 2))
    expected = [
        i * k + r
        for i in range(4)
        for r in range(k)
        if max(1, int(topk[i]) - 1) <= r < min(k, int(topk[i]) + 2)
    ]
    assert pos.tolist() == expected
    for chunk_size in (1, 3):  # filled chunk by chunk, the same positions
        assert band_positions(topk, k, (1, 2), chunk_size).tolist() == expected
    many = torch.randint(1, 81, (1000,), generator=torch.Generator().manual_seed(0))
    want = band_positions(many, 80, (80, 10), chunk_size=10**6)
    assert torch.equal(band_positions(many, 80, (80, 10), chunk_size=77), want)
    assert band_positions(many[:0], 80, (2, 3)).numel() == 0
    nodes = torch.tensor([2, 0])
    pos = topk_positions(nodes, topk, k)
    assert pos.tolist() == [12, 13, 14, 15, 16, 17, 0]


def test_cluster_untrained_model_runs(faces):
    x, y = faces
    torch.manual_seed(0)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    labels, details = model.cluster(x, return_details=True)
    assert labels.shape == (400,) and labels.dtype == torch.long
    assert labels.min() == 0 and labels.unique().numel() == labels.max() + 1
    assert details['topk'].min() >= 1 and details['topk'].max() <= 10
    # Same input, same labels:
    torch.testing.assert_close(model.cluster(x), labels)
    # An explicit Top-K is used as given:
    ones = torch.ones(400, dtype=torch.long)
    _, details = model.cluster(x, topk=ones, return_details=True)
    assert torch.equal(details['topk'], ones)


def test_on_topk_sees_the_topk_before_the_stages_it_sizes(faces, monkeypatch):
    x, _ = faces
    torch.manual_seed(0)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    seen = []
    labels, details = model.cluster(x, on_topk=seen.append, return_details=True)
    assert len(seen) == 1 and torch.equal(seen[0], details['topk'])
    torch.testing.assert_close(labels, model.cluster(x))  # nothing else changes
    ones = torch.ones(400, dtype=torch.long)
    seen.clear()
    model.cluster(x, topk=ones, on_topk=seen.append)
    assert torch.equal(seen[0], ones)  # a given Top-K too

    # An exception it raises stops the run before the Top-K Jaccard:
    def stop(topk):
        raise ValueError('too large')

    def jaccard(*args, **kwargs):
        raise AssertionError('the Top-K Jaccard ran')

    monkeypatch.setattr(model, 'jaccard', jaccard)
    with pytest.raises(ValueError, match='too large'):
        model.cluster(x, on_topk=stop)


def test_context_is_scale_free(faces):
    x, _ = faces
    ctx = KNNContext.build(x, 10, reference='knn')
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    nodes = torch.arange(20)
    tok, _ = model.tokens(ctx, nodes)
    # An affine change of the cosine scale leaves the relational tokens as they are.
    squeezed = KNNContext.build(
        None, 10, graph=ctx.knn._replace(sim=0.3 * ctx.knn.sim + 0.6)
    )
    tok2, _ = model.tokens(squeezed, nodes)
    torch.testing.assert_close(tok, tok2, atol=1e-4, rtol=1e-4)


def test_save_load_round_trip(faces, tmp_path):
    x, _ = faces
    torch.manual_seed(0)
    model = SDTClusterer(
        k=10, hidden_channels=16, predictor_channels=16, heads=2, eta=0.3, num_experts=2
    )
    path = model.save(tmp_path / 'model.safetensors')
    loaded = SDTClusterer.load(path)
    assert loaded.config == model.config
    for (n1, p1), (n2, p2) in zip(
        model.state_dict().items(), loaded.state_dict().items()
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    torch.testing.assert_close(loaded.cluster(x), model.cluster(x))
    with pytest.raises(FileExistsError):
        model.save(path)
    model.save(path, overwrite=True)


def test_load_refuses_untrusted_or_foreign_files(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ('pwned',))

    evil = tmp_path / 'evil.safetensors'
    evil.write_bytes(pickle.dumps({'x': Payload()}))
    with pytest.raises(ValueError, match='not a safetensors checkpoint'):
        SDTClusterer.load(evil)
    torch.save({'x': torch.zeros(1)}, tmp_path / 'torch.pt')
    with pytest.raises(ValueError, match='not a safetensors checkpoint'):
        SDTClusterer.load(tmp_path / 'torch.pt')
    with pytest.raises(FileNotFoundError):
        SDTClusterer.load(tmp_path / 'missing.safetensors')

    from safetensors.torch import save_file

    other = tmp_path / 'other.safetensors'
    save_file({'w': torch.zeros(2)}, other)
    with pytest.raises(ValueError, match='not an SDTClusterer checkpoint'):
        SDTClusterer.load(other)

    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    path = model.save(tmp_path / 'm.safetensors')
    _rewrite_meta(path, format_version='999')
    with pytest.raises(ValueError, match='format version 999'):
        SDTClusterer.load(path)


def _rewrite_meta(path, **meta):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework='pt') as f:
        old = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata={**old, **meta})


def test_embedding_mode_checks_dimension(faces):
    x, _ = faces
    model = SDTClusterer(
        k=10,
        mode='embedding',
        embedding_channels=16,
        hidden_channels=16,
        predictor_channels=16,
        heads=2,
    )
    assert model.cluster(x).shape == (400,)
    with pytest.raises(ValueError, match='16-d'):
        model.cluster(torch.nn.functional.normalize(torch.randn(400, 8), dim=1))
    with pytest.raises(ValueError, match='embedding_channels'):
        SDTClusterer(mode='embedding')


def test_bad_options():
    with pytest.raises(ValueError, match='mode'):
        SDTClusterer(mode='raw')
    with pytest.raises(ValueError, match='eta'):
        SDTClusterer(eta=1.5)
    with pytest.raises(ValueError, match='band'):
        SDTClusterer(band=(0, 0))
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r'topk_quantile must lie in \(0, 1\)'):
            SDTClusterer(topk_quantile=q)
    with pytest.raises(ValueError, match='topk_quantile must be a number'):
        SDTClusterer(topk_quantile='median')


def test_knn_cache_input(faces, tmp_path):
    x, _ = faces
    from torch_geometric_sdt.nn.knn import knn

    graph = knn(x, 10)
    io.write_knn(tmp_path / 'knn.npz', graph)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    a = model.cluster(x, graph=io.read_knn(tmp_path / 'knn.npz'))
    b = model.cluster(x)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='k = 10'):
        SDTClusterer(k=8, hidden_channels=16, predictor_channels=16, heads=2).cluster(
            graph=graph
        )


def test_load_refuses_unknown_config_keys(tmp_path):
    import json

    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    path = model.save(tmp_path / 'm.safetensors')
    config = {**model.config, 'emb': 3}
    _rewrite_meta(path, config=json.dumps(config))
    with pytest.raises(ValueError, match="unknown config keys \\['emb'\\]"):
        SDTClusterer.load(path)


@pytest.mark.parametrize('veto', [False, True])
def test_final_links_veto_topk_and_add_band_beyond_it(faces, veto):
    x, _ = faces
    torch.manual_seed(0)
    model = SDTClusterer(
        k=10, hidden_channels=16, predictor_channels=16, heads=2, band=(2, 3), veto=veto
    )
    ctx = KNNContext.build(x, 10)
    topk = torch.randint(
        1, 11, (x.size(0),), generator=torch.Generator().manual_seed(1)
    )
    jac = torch.rand(x.size(0), 10, generator=torch.Generator().manual_seed(2))
    band_pos = model.scored_positions(topk)
    # The band around the boundary; with the veto, every Top-K pair too:
    expected_pos = [
        i * 10 + r
        for i in range(x.size(0))
        for r in range(1, 10)
        if r < int(topk[i]) + 3 and (veto or r >= int(topk[i]) - 2)
    ]
    assert band_pos.tolist() == expected_pos
    prob = torch.rand(band_pos.numel(), generator=torch.Generator().manual_seed(3))
    score = dict(zip(band_pos.tolist(), prob.tolist()))
    sizes = set()
    for eta in (0.0, 0.5, 1.0):
        edge_index, weight = model.final_links(ctx, topk, jac, band_pos, prob, eta)
        got = set(zip(edge_index[0].tolist(), edge_index[1].tolist()))
        expected = {}
        for i in range(x.size(0)):  # Brute force over the small graph.
            for r in range(1, int(topk[i])):
                vetoed = veto and score.get(i * 10 + r, 1.0) < eta
                if not vetoed:
                    expected[(i, int(ctx.knn.index[i, r]))] = float(jac[i, r])
        for p, q in score.items():
            i, r = divmod(p, 10)
            if r >= int(topk[i]) and q >= eta:
                expected[(i, int(ctx.knn.index[i, r]))] = q
        assert got == set(expected)
        assert edge_index.size(1) == len(expected)
        sizes.add(len(expected))
        lookup = dict(
            zip(zip(edge_index[0].tolist(), edge_index[1].tolist()), weight.tolist())
        )
        for key, value in expected.items():
            assert lookup[key] == pytest.approx(max(value, 1e-6), abs=1e-6)
    assert len(sizes) == 3  # every eta gives another graph
    # A veto threshold of its own: the Top-K pairs follow veto_eta, the
    # pairs beyond the Top-K eta (given, or the model's config).
    for veto_eta, eta in ((0.2, 0.8), (0.8, 0.2)):
        for given in (True, False):
            model.config['veto_eta'] = None if given else veto_eta
            edge_index, _ = model.final_links(
                ctx,
                topk,
                jac,
                band_pos,
                prob,
                eta,
                veto_eta=veto_eta if given else None,
            )
            got = set(zip(edge_index[0].tolist(), edge_index[1].tolist()))
            expected = set()
            for p, q in score.items():
                i, r = divmod(p, 10)
                if r >= int(topk[i]) and q >= eta:
                    expected.add((i, int(ctx.knn.index[i, r])))
            for i in range(x.size(0)):
                for r in range(1, int(topk[i])):
                    if not (veto and score.get(i * 10 + r, 1.0) < veto_eta):
                        expected.add((i, int(ctx.knn.index[i, r])))
            assert got == expected
    model.config['veto_eta'] = None


@pytest.mark.parametrize('veto', [False, True])
def test_final_links_keep_a_fixed_subset_per_node_and_chunk_alike(faces, veto):
    x, _ = faces
    torch.manual_seed(0)
    model = SDTClusterer(
        k=10, hidden_channels=16, predictor_channels=16, heads=2, band=(2, 3), veto=veto
    )
    gen = torch.Generator().manual_seed(1)
    topk = torch.randint(1, 11, (x.size(0),), generator=gen)
    jac = torch.randint(0, 6, (x.size(0), 10), generator=gen) / 5
    band_pos = model.scored_positions(topk)
    prob = torch.randint(0, 6, (band_pos.numel(),), generator=gen) / 5
    args = (topk, jac, band_pos, prob, 0.5)
    pos, weight = model.final_link_positions(*args)
    assert pos.numel() > 3 * x.size(0)  # many nodes have more than 3 links
    for chunk_size in (1, 7, 10**6):  # chunks never change the links
        got = model.final_link_positions(*args, chunk_size=chunk_size)
        assert torch.equal(got[0], pos) and torch.equal(got[1], weight)
    key = spread_key(pos)
    for cap in (1, 3):
        capped, capped_w = model.final_link_positions(*args, max_links=cap)
        # Brute force: per node, the links of its cap smallest keys.
        want = set()
        for i in range(x.size(0)):
            mine = (pos // 10 == i).nonzero().view(-1).tolist()
            mine.sort(key=lambda e: float(key[e]))
            want |= {int(pos[e]) for e in mine[:cap]}
        assert set(capped.tolist()) == want and capped.numel() == len(want)
        assert torch.bincount(capped // 10).max() == cap
        # The kept links keep their order (Top-K pairs, then the band) and
        # weights:
        keep = torch.isin(pos, capped)
        assert torch.equal(capped, pos[keep]) and torch.equal(capped_w, weight[keep])
        got = model.final_link_positions(*args, max_links=cap, chunk_size=7)
        assert torch.equal(got[0], capped)
    assert torch.equal(model.final_link_positions(*args, max_links=10)[0], pos)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='max_links must be a positive int'):
            model.final_link_positions(*args, max_links=bad)
    with pytest.raises(ValueError, match='band_pos must be in ascending order'):
        model.final_link_positions(topk, jac, band_pos.flip(0), prob.flip(0), 0.5)
    empty = model.final_link_positions(
        topk[:0], jac[:0], band_pos[:0], prob[:0], max_links=2
    )
    assert empty[0].numel() == 0 and empty[1].numel() == 0


def test_spread_key_is_a_fixed_well_spread_hash():
    pos = torch.arange(200_000)
    key = spread_key(pos)
    assert key.dtype == torch.float32 and torch.equal(key, key.floor())
    assert 0 <= key.min() and key.max() < 2**24
    assert key.unique().numel() > 0.98 * pos.numel()  # few collisions
    # The same key for a position whatever else is hashed with it:
    assert torch.equal(spread_key(pos.flip(0)), key.flip(0))
    assert spread_key(torch.tensor([2**40 + 7]))[0] != spread_key(torch.tensor([7]))[0]
    # Consecutive positions (a node's ranks) get keys spread over the range:
    # every eighth of it holds about an eighth of 80 consecutive keys.
    counts = torch.bincount((spread_key(torch.arange(80, 160)) // 2**21).long())
    assert counts.numel() == 8 and counts.min() >= 4


def test_veto_must_be_a_bool():
    with pytest.raises(ValueError, match='veto must be a bool'):
        SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2, veto=1)


@pytest.mark.parametrize('bad', [1.5, -0.1, 'a', True])
def test_veto_eta_must_lie_in_the_unit_interval(bad):
    with pytest.raises(ValueError, match='veto_eta must'):
        SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, veto_eta=bad)


def test_veto_eta_survives_a_checkpoint(tmp_path):
    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    assert model.config['veto_eta'] is None  # the veto follows eta
    model.config['veto_eta'] = 0.3
    path = model.save(tmp_path / 'm.safetensors')
    assert SDTClusterer.load(path).config['veto_eta'] == 0.3


def test_tune_eta_chooses_the_veto_threshold_up_to_eta(faces):
    x, y = faces
    torch.manual_seed(0)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    model.config['eta'] = 0.6
    sweep = model.tune_eta(x, y, grid=(0.2, 0.4, 0.6, 0.9), veto=True)
    assert [row['veto_eta'] for row in sweep] == [0.2, 0.4, 0.6]  # up to eta
    best = max(row['bcubed_fscore'] for row in sweep)
    near = sorted(r['veto_eta'] for r in sweep if r['bcubed_fscore'] >= best - 1e-3)
    assert model.config['veto_eta'] == near[(len(near) - 1) // 2]
    assert model.config['eta'] == 0.6


def test_tune_eta_chooses_from_the_grid(faces):
    x, y = faces
    torch.manual_seed(0)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    sweep = model.tune_eta(x, y, grid=(0.2, 0.6, 0.9))
    assert [row['eta'] for row in sweep] == [0.2, 0.6, 0.9]
    best = max(row['pairwise_fscore'] for row in sweep)
    near = sorted(r['eta'] for r in sweep if r['pairwise_fscore'] >= best - 1e-3)
    assert model.config['eta'] == near[(len(near) - 1) // 2]
    with pytest.raises(ValueError, match='y must have shape'):
        model.tune_eta(x, y[:-1])


@pytest.mark.parametrize('training', [True, False])
def test_inference_keeps_the_callers_mode(faces, training):
    x, _ = faces
    model = SDTClusterer(k=8, hidden_channels=8, predictor_channels=8, heads=2)
    model.train(training)
    model.encoder.eval()  # a mixed state is given back as it was, too
    modes = [m.training for m in model.modules()]
    pred = model.cluster(x)
    assert pred.shape == (x.size(0),)
    assert [m.training for m in model.modules()] == modes


# Bad input: each bad graph, Top-K or option is refused, naming it.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'SDT on N <= k',
        lambda t, g: small_clusterer().cluster(g['x'][:K]),
        ValueError,
        'smaller than the number of points',
    ),
    (
        'kNN list without self first',
        lambda t, g: small_clusterer().cluster(
            graph=KNN(g['knn'].index.flip(1), g['knn'].sim.flip(1))
        ),
        ValueError,
        'self at rank 0',
    ),
    (
        'SDT Top-K out of range',
        lambda t, g: small_clusterer().cluster(
            graph=g['knn'], topk=torch.full((N,), 99)
        ),
        ValueError,
        r'\[1, degree\]',
    ),
    (
        'SDT Top-K wrong length',
        lambda t, g: small_clusterer().cluster(
            graph=g['knn'], topk=torch.ones(3, dtype=torch.long)
        ),
        ValueError,
        rf'shape \[{N}\]',
    ),
    (
        'SDT eta > 1',
        lambda t, g: small_clusterer().cluster(graph=g['knn'], eta=1.5),
        ValueError,
        r'eta must lie in \[0, 1\]',
    ),
    (
        'SDT eta in config',
        lambda t, g: SDTClusterer(k=K, eta=-0.1),
        ValueError,
        r'eta must lie in \[0, 1\]',
    ),
    (
        'SDT theta in config',
        lambda t, g: SDTClusterer(k=K, theta=2.0),
        ValueError,
        r'theta must lie in \[0, 1\]',
    ),
    ('SDT k <= 1', lambda t, g: SDTClusterer(k=1), ValueError, r'k must lie in \[2'),
    (
        'SDT k huge',
        lambda t, g: SDTClusterer(k=1_000_000_000),
        ValueError,
        r'k must lie in \[2, 1024\]',
    ),
    ('SDT band of one', lambda t, g: SDTClusterer(band=[1]), ValueError, 'band'),
    (
        'SDT hidden_channels huge',
        lambda t, g: SDTClusterer(hidden_channels=200_000),
        ValueError,
        'hidden_channels must lie in',
    ),
    (
        'SDT embedding_channels negative',
        lambda t, g: SDTClusterer(mode='embedding', embedding_channels=-1),
        ValueError,
        'embedding_channels must lie in',
    ),
    (
        'SDT num_layers huge',
        lambda t, g: SDTClusterer(num_layers=10_000_000),
        ValueError,
        'num_layers must lie in',
    ),
    (
        'SDT heads not dividing',
        lambda t, g: SDTClusterer(hidden_channels=10, heads=4),
        ValueError,
        'divisible by heads',
    ),
    ('SDT float k', lambda t, g: SDTClusterer(k=8.0), ValueError, 'k must be an int'),
    ('SDT dropout 1', lambda t, g: SDTClusterer(dropout=1.0), ValueError, 'dropout'),
    ('unknown SDT mode', lambda t, g: SDTClusterer(mode='raw'), ValueError, 'mode'),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    model = SDTClusterer(k=8, hidden_channels=8, predictor_channels=8, heads=2)
    with torch.no_grad():
        model.edge_head.mlp[0].weight[0, 0] = bad
    path = model.save(tmp_path / 'bad.safetensors')
    with pytest.raises(ValueError, match='NaN or infinite weights'):
        SDTClusterer.load(path)


def test_checkpoint_state_mismatch_is_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    model = SDTClusterer(k=8, hidden_channels=8, predictor_channels=8, heads=2)
    path = model.save(tmp_path / 'a.safetensors')
    with open(path, 'rb') as f:
        header_len = int.from_bytes(f.read(8), 'little')
        import json

        meta = json.loads(f.read(header_len))['__metadata__']
    state = load_file(path)
    name = sorted(state)[0]
    state.pop(name)
    state['extra.weight'] = torch.zeros(2)
    save_file(state, tmp_path / 'b.safetensors', metadata=meta)
    with pytest.raises(ValueError) as e:
        SDTClusterer.load(tmp_path / 'b.safetensors')
    message = str(e.value)
    assert '\n' not in message
    assert f"missing ['{name}']" in message and "unexpected ['extra.weight']" in message


def test_random_pair_reference_is_used_with_embeddings(faces):
    x, _ = faces
    ctx = KNNContext.build(x, 10)
    assert ctx.reference == 'random_pairs'
    assert ctx.scale == noise_scale(x)
    # A graph alone cannot give random pairs: the kNN estimate is used and
    # recorded.
    alone = KNNContext.build(None, 10, graph=ctx.knn)
    assert alone.reference == 'knn'
    assert alone.scale == similarity_scale(ctx.knn.sim)
    with pytest.raises(ValueError, match='reference'):
        KNNContext.build(x, 10, reference='median')


def test_concat_keeps_every_data_sets_scale(faces):
    x, _ = faces
    a = KNNContext.build(x[:200], 10)
    b = KNNContext.build(0.5 * x[200:] + 0.3, 10)
    both = KNNContext.concat([a, b])
    assert both.num_nodes == 400
    assert torch.equal(both.knn.index[200:], b.knn.index + 200)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    nodes = torch.tensor([3, 250])
    tok, _ = model.tokens(both, nodes)
    tok_a, _ = model.tokens(a, nodes[:1])
    tok_b, _ = model.tokens(b, nodes[1:] - 200)
    torch.testing.assert_close(tok, torch.cat([tok_a, tok_b]))
    assert KNNContext.concat([a]) is a
    with pytest.raises(ValueError, match='at least one'):
        KNNContext.concat([])
    with pytest.raises(ValueError, match='same k'):
        KNNContext.concat([a, KNNContext.build(x[:50], 5)])
    with pytest.raises(
        ValueError, match=r"same reference \(got \['knn', 'random_pairs'\]\)"
    ):
        KNNContext.concat([a, KNNContext.build(x[:50], a.k, reference='knn')])


def test_version_0_1_checkpoints_keep_the_knn_reference_and_no_veto(tmp_path):
    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    path = model.save(tmp_path / 'm.safetensors')
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    config = json.loads(meta['config'])
    del config['reference'], config['veto'], config['topk_quantile']
    config['band'] = [2, 10]
    meta['config'] = json.dumps(config)
    del meta['train_range']
    save_file(tensors, str(path), metadata=meta)
    old = SDTClusterer.load(path)
    assert old.config['reference'] == 'knn'
    assert old.config['veto'] is False and old.band == (2, 10)
    assert old.train_range is None
    assert old.config['topk_quantile'] is None  # the mode, as before
    assert old.config['veto_eta'] is None  # the veto follows eta, as before
    new = SDTClusterer(k=4)
    assert new.config['reference'] == 'random_pairs'
    assert new.config['veto'] is True and new.band == (2, 10)
    assert new.config['topk_quantile'] == TOPK_QUANTILE


def test_predict_topk_takes_the_configured_quantile(faces):
    x, _ = faces
    model = SDTClusterer(k=10, hidden_channels=8, predictor_channels=8, heads=2)
    ctx = model.context(x)
    logits = model.topk_predictor(*model.tokens(ctx, torch.arange(ctx.num_nodes)))
    for q in (None, 0.3, 0.45, 0.8):
        model.config['topk_quantile'] = q
        expected = TopKPredictor.predict(logits.detach(), q)
        torch.testing.assert_close(model.predict_topk(ctx, batch_size=7), expected)
    lo = TopKPredictor.predict(logits.detach(), 0.3)
    hi = TopKPredictor.predict(logits.detach(), 0.8)
    assert bool((lo <= hi).all()) and bool((lo < hi).any())


def test_train_range_round_trips(tmp_path):
    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    model.train_range = {'z_first': [3.0, 6.5], 'z_last': [1.0, 4.0]}
    loaded = SDTClusterer.load(model.save(tmp_path / 'm.safetensors'))
    assert loaded.train_range == model.train_range


def test_cluster_reports_diagnostics_and_warns(faces):
    x, _ = faces
    torch.manual_seed(0)
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    model.train_range = {'z_first': [-100.0, 100.0], 'z_last': [-100.0, 100.0]}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _, details = model.cluster(x, topk=torch.full((400,), 3), return_details=True)
    diag = details['diagnostics']
    assert diag['reference'] == 'random_pairs' and diag['warnings'] == []
    assert diag['full_share'] == 0.0 and diag['topk_mean'] == 3.0
    assert diag['z_first'] > diag['z_last']
    # A graph without embeddings, whole-list Top-Ks and statistics outside
    # the training range each raise their sentence, in one warning.
    model.train_range = {'z_first': [50.0, 60.0], 'z_last': [-100.0, 100.0]}
    graph = details['ctx'].knn
    with pytest.warns(UserWarning) as record:
        _, details = model.cluster(
            graph=graph, topk=torch.full((400,), 10), return_details=True
        )
    assert len(record) == 1
    message = str(record[0].message)
    assert 'pass the embeddings' in message
    assert 'z_first' in message
    assert '100% of the kNN lists' in message
    assert len(details['diagnostics']['warnings']) == 3


def test_shipped_model_flags_data_unlike_its_training():
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    assert model.train_range is not None
    # Every item twice (near-duplicates): the nearest neighbour stands far
    # further above the noise than in any training data set.
    g = torch.Generator().manual_seed(0)
    base = torch.randn(600, 256, generator=g)
    x = torch.cat([base, base + 1e-3 * torch.randn(600, 256, generator=g)])
    with pytest.warns(UserWarning, match='unlike the training data') as record:
        _, details = model.cluster(x, return_details=True)
    assert len(record) == 1
    assert details['diagnostics']['z_first'] > model.train_range['z_first'][1] + 1
    # Identities larger than k are within its training range: no warning.
    x, _ = regime_draw('large', 1500, 128, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        _, details = model.cluster(x, return_details=True)
    assert details['diagnostics']['full_share'] > 0.5


def test_chunk_sizes_never_change_the_output():
    from torch_geometric_sdt.nn.models import (
        BAND_CHUNK_SIZE,
        NODE_CHUNK_SIZE,
        TOPK_BATCH_SIZE,
    )
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    x, _ = synthetic_faces(700, dim=32, seed=4)
    ctx = model.context(x)
    topk = model.predict_topk(ctx)
    jac = model.jaccard(ctx, topk)
    h = model.node_states(ctx, topk, jac)
    pos, prob = model.score_band(ctx, topk, jac, h)
    # Batches and chunks smaller than the data, uneven, and the defaults:
    assert TOPK_BATCH_SIZE < 700 and BAND_CHUNK_SIZE < prob.numel() * 8
    assert torch.equal(model.predict_topk(ctx, batch_size=97), topk)
    assert torch.equal(model.predict_topk(ctx, batch_size=4096), topk)
    assert NODE_CHUNK_SIZE >= 700
    assert torch.equal(model.node_states(ctx, topk, jac, chunk_size=61), h)
    # Version 0.1's chunk (every pair at once here) gives the same bits; an
    # odd chunk may round differently in the matrix products, by an ulp.
    pos2, prob2 = model.score_band(ctx, topk, jac, h, chunk_size=1 << 18)
    assert torch.equal(pos2, pos) and torch.equal(prob2, prob)
    _, prob3 = model.score_band(ctx, topk, jac, h, chunk_size=333)
    torch.testing.assert_close(prob3, prob, rtol=0, atol=1e-6)


def test_node_states_make_each_chunks_edge_inputs_alone(monkeypatch):
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    x, _ = synthetic_faces(700, dim=32, seed=4)
    ctx = model.context(x)
    topk = model.predict_topk(ctx)
    jac = model.jaccard(ctx, topk)
    # The encoder on the inputs of every Top-K edge at once:
    edge_index, edge_attr, edge_rank, _ = model.subgraph_inputs(
        ctx, torch.arange(ctx.num_nodes), topk, jac
    )
    model.eval()
    want = model.encoder.inference(
        model._embedded(ctx, torch.arange(ctx.num_nodes), topk, 64),
        edge_index,
        edge_attr,
        topk,
        edge_rank,
        chunk_size=64,
        embedded=True,
    )
    made = []
    real = model.subgraph_inputs

    def spy(ctx, nodes, topk, jaccard):
        made.append(nodes.clone())
        return real(ctx, nodes, topk, jaccard)

    monkeypatch.setattr(model, 'subgraph_inputs', spy)
    got = model.node_states(ctx, topk, jac, chunk_size=64)
    assert torch.equal(got, want)
    # Each chunk of targets, once per layer, and never more than one chunk:
    chunks = [torch.arange(lo, min(lo + 64, 700)) for lo in range(0, 700, 64)]
    assert len(made) == model.encoder.num_layers * len(chunks)
    for i, nodes in enumerate(made):
        assert torch.equal(nodes, chunks[i % len(chunks)])


def test_cluster_with_max_links_runs_infomap_on_the_strongest_links():
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.pretrained import default_model_path
    from torch_geometric_sdt.utils.infomap import cluster_links

    model = SDTClusterer.load(default_model_path())
    x, _ = regime_draw('msceleb', 600, 32, seed=0)
    labels, d = model.cluster(x, max_links=5, return_details=True)
    args = (d['ctx'], d['topk'], d['jaccard'], d['band_pos'], d['band_prob'])
    edge_index, weight = model.final_links(*args, max_links=5)
    assert torch.bincount(edge_index[0]).max() == 5
    assert torch.equal(labels, cluster_links(edge_index, weight, 600))
    full, _ = model.final_links(*args)
    assert full.size(1) > 4 * edge_index.size(1)  # about 70 per node
    for bad in (0, 2.0, False):
        with pytest.raises(ValueError, match='max_links must be a positive int'):
            model.cluster(x, max_links=bad)


def test_precision_is_a_checked_runtime_setting(tmp_path):
    model = SDTClusterer(k=4, hidden_channels=8, predictor_channels=8, heads=2)
    assert model.precision == 'float32'
    model.precision = 'bfloat16'
    assert model.precision == 'bfloat16'
    with pytest.raises(ValueError, match='precision must be one of'):
        model.precision = 'float16'
    assert model.precision == 'bfloat16'
    # Not part of the checkpoint: a loaded model starts at float32.
    path = model.save(tmp_path / 'm.safetensors')
    assert SDTClusterer.load(path).precision == 'float32'
    # It travels with the model to other processes (the Ray engine pickles it).
    assert pickle.loads(pickle.dumps(model)).precision == 'bfloat16'


def test_bfloat16_topk_runs_the_predictor_in_bfloat16_and_stays_close():
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    x, _ = synthetic_faces(3000, dim=64, seed=4)
    ctx = model.context(x)
    dtypes: dict[str, set] = {'token': set(), 'encoder': set()}

    def spy(name):
        return lambda module, args, out: dtypes[name].add(out.dtype)

    predictor = model.topk_predictor
    embed = predictor._embed_tokens

    def spy_embed(tokens):
        out = embed(tokens)
        dtypes['token'].add(out.dtype)
        return out

    predictor._embed_tokens = spy_embed
    hooks = [predictor.encoder.layers[0].linear1.register_forward_hook(spy('encoder'))]
    model.precision = 'float32'
    model.predict_topk(ctx, nodes=torch.arange(300))
    assert dtypes == {'token': {torch.float32}, 'encoder': {torch.float32}}
    dtypes = {'token': set(), 'encoder': set()}
    model.precision = 'bfloat16'
    model.predict_topk(ctx, nodes=torch.arange(300))
    # The encoder's products in bfloat16, the token embedding in float32:
    assert dtypes == {'token': {torch.float32}, 'encoder': {torch.bfloat16}}
    for hook in hooks:  # (a hook can change which kernels run)
        hook.remove()
    del predictor._embed_tokens
    model.precision = 'float32'
    full = model.predict_topk(ctx)
    model.precision = 'bfloat16'
    low = model.predict_topk(ctx)
    # A few nodes near a quantile step move, by little.
    differ = low != full
    assert differ.float().mean() < 0.03
    assert (low - full).abs().float().mean() < 0.05
    # Still a node's own business: batches and subsets give the same bits.
    assert torch.equal(model.predict_topk(ctx, batch_size=7), low)
    nodes = torch.arange(5, 3000, 11)
    assert torch.equal(model.predict_topk(ctx, nodes=nodes, batch_size=13), low[nodes])


def test_repr_names_the_predictor_width():
    model = SDTClusterer(k=10, hidden_channels=16, predictor_channels=24, heads=2)
    assert repr(model).startswith('SDTClusterer(k=10, ')
    assert repr(model).endswith("predictor='transformer', predictor_channels=24)")


def test_cluster_with_a_given_scale():
    from torch_geometric_sdt.pretrained import default_model_path
    from torch_geometric_sdt.utils import SimilarityScale

    x, _ = synthetic_faces(600, 64, seed=7)
    model = SDTClusterer.load(default_model_path())
    own = noise_scale(x)
    # The scale estimated from x, given, changes nothing:
    assert torch.equal(model.cluster(x, scale=own), model.cluster(x))
    ctx = model.context(x, scale=SimilarityScale(0.3, 0.2))
    assert ctx.scale == SimilarityScale(0.3, 0.2)
    assert ctx.reference == model.config['reference']
    # A graph alone with a given scale keeps the model's reference (no
    # fallback to the kNN estimate):
    assert model.context(graph=ctx.knn, scale=own).reference == 'random_pairs'
    per_node = own.per_node(600)
    assert torch.equal(model.cluster(x, scale=per_node), model.cluster(x))
    for bad, match in (
        ((0.3, 0.2), 'must be a SimilarityScale'),
        (SimilarityScale(0.3, 0.0), 'finite and positive'),
        (SimilarityScale(float('nan'), 0.2), 'center must be finite'),
        (SimilarityScale(torch.zeros(5), torch.ones(5)), 'one value per node'),
    ):
        with pytest.raises(ValueError, match=match):
            model.cluster(x, scale=bad)
