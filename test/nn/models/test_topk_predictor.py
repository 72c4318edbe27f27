from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.nn.models.topk_predictor import TopKPredictor


@pytest.mark.parametrize('arch', ['transformer', 'lstm'])
def test_shapes_and_predict(arch):
    torch.manual_seed(0)
    model = TopKPredictor(k=10, in_channels=3, hidden_channels=16, arch=arch)
    logits = model(torch.randn(4, 10, 3))
    assert logits.shape == (4, 10)
    pred = TopKPredictor.predict(logits)
    assert pred.min() >= 1 and pred.max() <= 10
    torch.testing.assert_close(pred, logits.argmax(dim=1) + 1)
    assert arch in repr(model)


def test_learns_a_simple_rule():
    # K* = the rank where the first feature drops below zero: learnable from
    # the tokens; a few hundred steps must fit it.
    torch.manual_seed(0)
    k = 8
    target = torch.randint(1, k + 1, (256,))
    tokens = torch.where(
        torch.arange(k).view(1, -1) < target.view(-1, 1), 1.0, -1.0
    ).unsqueeze(-1)
    model = TopKPredictor(k, 1, hidden_channels=16, num_layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = TopKPredictor.loss(model(tokens), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (TopKPredictor.predict(model(tokens)) == target).float().mean()
    assert acc > 0.95


def test_embedding_mode_and_errors():
    model = TopKPredictor(5, 2, hidden_channels=8, heads=2, embedding_channels=6)
    out = model(torch.randn(3, 5, 2), torch.randn(3, 5, 6))
    assert out.shape == (3, 5)
    with pytest.raises(ValueError, match='embeddings'):
        model(torch.randn(3, 5, 2))
    with pytest.raises(ValueError, match='shape'):
        model(torch.randn(3, 4, 2))
    with pytest.raises(ValueError, match='arch'):
        TopKPredictor(5, 2, arch='gru')
    with pytest.raises(ValueError, match='even'):
        TopKPredictor(5, 2, hidden_channels=7, arch='lstm')


def test_reset_parameters_reinitialises_everything():
    torch.manual_seed(0)
    a = TopKPredictor(6, 2, hidden_channels=8, heads=2)
    torch.manual_seed(1)
    b = TopKPredictor(6, 2, hidden_channels=8, heads=2)
    for model in (a, b):
        torch.manual_seed(2)
        model.reset_parameters()
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
