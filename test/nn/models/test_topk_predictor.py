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


def test_predict_takes_a_quantile_of_the_distribution():
    # P = (0.1, 0.3, 0.2, 0.4): cumulative 0.1, 0.4, 0.6, 1.0.
    logits = torch.tensor([[0.1, 0.3, 0.2, 0.4]]).log()
    assert int(TopKPredictor.predict(logits)) == 4  # the mode
    assert int(TopKPredictor.predict(logits, 0.05)) == 1
    assert int(TopKPredictor.predict(logits, 0.35)) == 2
    assert int(TopKPredictor.predict(logits, 0.45)) == 3
    assert int(TopKPredictor.predict(logits, 0.6 + 1e-6)) == 4
    # Never past k, even when rounding leaves the last sum just under q.
    assert int(TopKPredictor.predict(logits, 1 - 1e-9)) == 4
    # The median minimises the expected absolute error (brute force).
    torch.manual_seed(0)
    logits = torch.randn(64, 12) * 2
    p = logits.softmax(dim=1).double()
    r = torch.arange(1, 13, dtype=torch.double)
    cost = (p.unsqueeze(1) * (r.view(1, -1, 1) - r.view(1, 1, -1)).abs()).sum(-1)
    median = TopKPredictor.predict(logits, 0.5)
    best = cost.gather(1, (median - 1).view(-1, 1)).view(-1)
    torch.testing.assert_close(best, cost.min(dim=1).values)


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


def test_token_embedding_stays_float32_and_per_node_under_autocast():
    torch.manual_seed(0)
    model = TopKPredictor(k=12, in_channels=3, hidden_channels=16, heads=2)
    tokens = torch.randn(50, 12, 3)
    plain = model._embed_tokens(tokens)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        h = model._embed_tokens(tokens)
        alone = model._embed_tokens(tokens[17:18])
        assert model(tokens).dtype == torch.bfloat16  # the rest in bfloat16
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, plain, rtol=1e-6, atol=1e-6)
    assert torch.equal(alone, h[17:18])  # whatever the batch
