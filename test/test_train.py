from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer
from torch_geometric_sdt.testing import assert_api_refuses, small_clusterer
from torch_geometric_sdt.train import fit, split_identities


@pytest.fixture(scope='module')
def faces():
    return synthetic_faces(700, dim=16, seed=5)


def test_split_identities_is_disjoint_and_seeded():
    y = torch.arange(100) // 3
    tr, va = split_identities(y, 0.25, seed=1)
    assert set(y[tr].tolist()).isdisjoint(y[va].tolist())
    assert tr.numel() + va.numel() == 100
    tr2, va2 = split_identities(y, 0.25, seed=1)
    assert torch.equal(va, va2)
    with pytest.raises(ValueError, match='val_fraction'):
        split_identities(y, 1.0, seed=1)


def test_fit_is_deterministic_and_sets_eta(faces, tiny_sdt, fast_fit):
    x, y = faces
    a = SDTClusterer(k=10, **tiny_sdt)
    summary = fit(a, x, y, seed=3, **fast_fit)
    b = SDTClusterer(k=10, **tiny_sdt)
    fit(b, x, y, seed=3, **fast_fit)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    assert summary['eta'] in fast_fit['eta_grid']
    assert a.config['eta'] == summary['eta']
    assert [h['stage'] for h in summary['history']] == [1, 1, 2, 2]
    assert summary['data']['num_items'] == 700


def test_resume_reaches_the_same_weights(faces, tmp_path, tiny_sdt, fast_fit):
    x, y = faces
    ref = SDTClusterer(k=10, **tiny_sdt)
    fit(ref, x, y, seed=2, **fast_fit)
    model = SDTClusterer(k=10, **tiny_sdt)
    out = fit(
        model, x, y, seed=2, checkpoint_dir=tmp_path, stop_after_epochs=3, **fast_fit
    )
    assert out['stopped']
    resumed = SDTClusterer(k=10, **tiny_sdt)
    fit(resumed, x, y, seed=2, checkpoint_dir=tmp_path, resume=True, **fast_fit)
    for p, q in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)
    assert resumed.config['eta'] == ref.config['eta']
    # A resumed model with other settings is refused:
    other = SDTClusterer(k=10, **{**tiny_sdt, 'hidden_channels': 8})
    with pytest.raises(ValueError, match='another configuration'):
        fit(other, x, y, seed=2, checkpoint_dir=tmp_path, resume=True, **fast_fit)


def test_fit_errors(faces, tmp_path, tiny_sdt, fast_fit):
    x, y = faces
    model = SDTClusterer(k=10, **tiny_sdt)
    with pytest.raises(ValueError, match='non-negative'):
        fit(model, x, torch.full_like(y, -1), **fast_fit)
    with pytest.raises(ValueError, match=r'x must be \[N, D\]'):
        fit(model, x[:10], y, **fast_fit)
    with pytest.raises(FileNotFoundError):
        fit(model, x, y, checkpoint_dir=tmp_path / 'none', resume=True, **fast_fit)


# Bad input: each bad training set or option is refused, naming it.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'negative training labels',
        lambda t, g: fit(small_clusterer(), g['x'], -g['y'] - 1),
        ValueError,
        'non-negative',
    ),
    (
        'float training labels',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'] + 0.5),
        ValueError,
        'integer labels',
    ),
    (
        'training labels of the wrong length',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'][:-1]),
        ValueError,
        r'x must be \[N, D\] and y \[N\]',
    ),
    (
        'training batch size 0',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'], pair_batch_size=0),
        ValueError,
        'pair_batch_size must be an integer >= 1',
    ),
    (
        'training lr 0',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'], lr=0.0),
        ValueError,
        'lr must be positive',
    ),
    (
        'training eta grid outside [0, 1]',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'], eta_grid=(0.5, 2.0)),
        ValueError,
        r'eta_grid must hold values in \[0, 1\]',
    ),
    (
        'training val_fraction 1',
        lambda t, g: fit(small_clusterer(), g['x'], g['y'], val_fraction=1.0),
        ValueError,
        r'val_fraction must lie in \(0, 1\)',
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


def test_fit_on_several_data_sets(faces, tiny_sdt, fast_fit):
    x, y = faces
    x2, y2 = synthetic_faces(500, dim=24, seed=6)
    model = SDTClusterer(k=10, **tiny_sdt)
    summary = fit(model, [x, 0.5 * x2 + 0.2], [y, y2], seed=1, **fast_fit)
    data = summary['data']
    assert data['num_sets'] == 2 and data['num_items'] == 1200
    assert data['dim'] == [16, 24]
    assert data['train_items'] + data['val_items'] == 1200
    # The self-diagnosis range spans both data sets and travels with the model.
    assert model.train_range == data['train_range']
    lo, hi = model.train_range['z_first']
    assert lo <= hi
    assert summary['eta'] in fast_fit['eta_grid']
    with pytest.raises(ValueError, match='same number'):
        fit(SDTClusterer(k=10, **tiny_sdt), [x, x2], [y], **fast_fit)
    with pytest.raises(ValueError, match='both as arrays or both as lists'):
        fit(SDTClusterer(k=10, **tiny_sdt), [x], y, **fast_fit)
    with pytest.raises(ValueError, match='data set 1 has'):
        fit(SDTClusterer(k=10, **tiny_sdt), [x, x2[:30]], [y, y2[:30]], **fast_fit)


def test_fit_can_keep_the_topk_predictor(faces, tiny_sdt, fast_fit):
    x, y = faces
    model = SDTClusterer(k=10, **tiny_sdt)
    fit(model, x, y, seed=3, **fast_fit)
    before = {k: v.clone() for k, v in model.topk_predictor.state_dict().items()}
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    summary = fit(model, x, y, seed=4, train_topk=False, **fast_fit)
    assert [h['stage'] for h in summary['history']] == [2, 2]
    for name, value in model.topk_predictor.state_dict().items():
        assert torch.equal(value, before[name])
    assert any(
        not torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items()
    )


def test_fit_without_training_keeps_every_weight_and_rechooses_eta(
    faces, tiny_sdt, fast_fit
):
    x, y = faces
    model = SDTClusterer(k=10, **tiny_sdt)
    fit(model, x, y, seed=3, **fast_fit)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.config['eta'] = -1.0  # Overwritten by the choice below.
    model.train_range = None
    summary = fit(model, x, y, seed=3, train_topk=False, train_sdt=False, **fast_fit)
    assert summary['history'] == []
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    assert model.config['eta'] == summary['eta'] in fast_fit['eta_grid']
    assert model.train_range is not None
    with pytest.raises(ValueError, match='train_sdt=False needs train_topk=False'):
        fit(model, x, y, train_sdt=False, **fast_fit)
