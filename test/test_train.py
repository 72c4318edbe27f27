from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer
from torch_geometric_sdt.train import fit, split_identities

SMALL = dict(
    hidden_channels=16, predictor_channels=16, heads=2, num_layers=1, predictor_layers=1
)
FAST = dict(
    topk_epochs=2,
    sdt_epochs=2,
    max_steps_per_epoch=3,
    topk_batch_size=64,
    pair_batch_size=128,
    eta_grid=(0.3, 0.5, 0.7),
)


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


def test_fit_is_deterministic_and_sets_eta(faces):
    x, y = faces
    a = SDTClusterer(k=10, **SMALL)
    summary = fit(a, x, y, seed=3, **FAST)
    b = SDTClusterer(k=10, **SMALL)
    fit(b, x, y, seed=3, **FAST)
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    assert summary['eta'] in FAST['eta_grid']
    assert a.config['eta'] == summary['eta']
    assert [h['stage'] for h in summary['history']] == [1, 1, 2, 2]
    assert summary['data']['num_items'] == 700


def test_resume_reaches_the_same_weights(faces, tmp_path):
    x, y = faces
    ref = SDTClusterer(k=10, **SMALL)
    fit(ref, x, y, seed=2, **FAST)
    model = SDTClusterer(k=10, **SMALL)
    out = fit(model, x, y, seed=2, checkpoint_dir=tmp_path, stop_after_epochs=3, **FAST)
    assert out['stopped']
    resumed = SDTClusterer(k=10, **SMALL)
    fit(resumed, x, y, seed=2, checkpoint_dir=tmp_path, resume=True, **FAST)
    for p, q in zip(ref.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)
    assert resumed.config['eta'] == ref.config['eta']
    # A resumed model with other settings is refused:
    other = SDTClusterer(k=10, **{**SMALL, 'hidden_channels': 8})
    with pytest.raises(ValueError, match='another configuration'):
        fit(other, x, y, seed=2, checkpoint_dir=tmp_path, resume=True, **FAST)


def test_fit_errors(faces, tmp_path):
    x, y = faces
    model = SDTClusterer(k=10, **SMALL)
    with pytest.raises(ValueError, match='non-negative'):
        fit(model, x, torch.full_like(y, -1), **FAST)
    with pytest.raises(ValueError, match=r'x must be \[N, D\]'):
        fit(model, x[:10], y, **FAST)
    with pytest.raises(FileNotFoundError):
        fit(model, x, y, checkpoint_dir=tmp_path / 'none', resume=True, **FAST)
