from __future__ import annotations

import pytest
import torch

from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.models.sdt import (
    EdgeHead,
    FeedForward,
    MoEFeedForward,
    SDTBlock,
    SDTEncoder,
)


def _knn_edges(num_nodes: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rest = torch.rand(num_nodes, num_nodes, generator=g).argsort(dim=1)
    rest = rest[rest != torch.arange(num_nodes).view(-1, 1)].view(num_nodes, -1)
    index = torch.cat([torch.arange(num_nodes).view(-1, 1), rest[:, : k - 1]], dim=1)
    sim = torch.linspace(1.0, 0.2, k).repeat(num_nodes, 1)
    return KNN(index, sim).to_edge_index()


def test_feed_forward_and_moe_shapes():
    h = torch.randn(10, 8)
    out, aux = FeedForward(8, 16)(h)
    assert out.shape == (10, 8) and float(aux) == 0.0
    moe = MoEFeedForward(8, 16, num_experts=4, top=2)
    out, aux = moe(h)
    assert out.shape == (10, 8)
    assert torch.isfinite(aux) and float(aux.detach()) > 0
    # Uniform gates: every node's first choice is expert 0 and every mean gate
    # is 1/4, so the balance loss is 4 * (1 * 1/4) = 1.
    torch.nn.init.zeros_(moe.gate.weight)
    _, aux = moe(h)
    assert float(aux.detach()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match='top must be 1 or 2'):
        MoEFeedForward(8, 16, num_experts=1, top=2)


def test_moe_top1_uses_one_expert():
    torch.manual_seed(0)
    moe = MoEFeedForward(4, 8, num_experts=3, top=1)
    h = torch.randn(5, 4)
    out, _ = moe(h)
    choice = moe.gate(h).argmax(dim=-1)
    for n in range(5):
        expected = moe.experts[int(choice[n])](h[n : n + 1])[0]
        torch.testing.assert_close(out[n : n + 1], expected)


def test_block_mask_equals_dropping_masked_edges():
    torch.manual_seed(0)
    num_nodes, k = 12, 6
    edge_index, rank, sim = _knn_edges(num_nodes, k)
    edge_attr = torch.randn(edge_index.size(1), 3)
    topk = torch.randint(1, k + 1, (num_nodes,))
    block = SDTBlock(16, heads=2, edge_dim=3).eval()
    h = torch.randn(num_nodes, 16)
    full, _ = block(h, edge_index, edge_attr, topk, rank)
    keep = rank < topk[edge_index[1]]
    kept, _ = block(h, edge_index[:, keep], edge_attr[keep], topk, rank[keep])
    torch.testing.assert_close(full, kept, atol=1e-5, rtol=1e-5)
    # Masking changes the result compared with no mask at all:
    unmasked, _ = block(h, edge_index, edge_attr, None, rank)
    assert not torch.allclose(full, unmasked)


@pytest.mark.parametrize('differential', [True, False])
@pytest.mark.parametrize('num_experts', [0, 3])
def test_encoder_inference_equals_forward(differential, num_experts):
    torch.manual_seed(0)
    num_nodes, k = 40, 5
    edge_index, rank, _ = _knn_edges(num_nodes, k, seed=1)
    edge_attr = torch.randn(edge_index.size(1), 2)
    topk = torch.randint(1, k + 1, (num_nodes,))
    enc = SDTEncoder(
        7,
        16,
        num_layers=2,
        heads=2,
        edge_dim=2,
        differential=differential,
        num_experts=num_experts,
    ).eval()
    x = torch.randn(num_nodes, 7)
    with torch.no_grad():
        full, aux = enc(x, edge_index, edge_attr, topk, rank)
    chunked = enc.inference(x, edge_index, edge_attr, topk, rank, chunk_size=7)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)
    assert full.shape == (num_nodes, 16)
    assert (float(aux) > 0) == (num_experts > 0)


def test_encoder_inference_reads_only_each_chunks_sources(monkeypatch):
    # Every chunk gets the states of its own edges' sources only, never all N
    # (which made chunked inference O(N) per chunk).
    torch.manual_seed(0)
    num_nodes, k = 60, 4
    edge_index, rank, _ = _knn_edges(num_nodes, k, seed=2)
    enc = SDTEncoder(5, 8, num_layers=1, heads=2, edge_dim=None).eval()
    block = enc.blocks[0]
    seen = []
    forward = block.forward

    def spy(h, sub, *args, **kwargs):
        seen.append((h[0].size(0), int(sub[0].max()) + 1, sub.size(1)))
        return forward(h, sub, *args, **kwargs)

    monkeypatch.setattr(block, 'forward', spy)
    x = torch.randn(num_nodes, 5)
    with torch.no_grad():
        full, _ = enc(x, edge_index, None, None, rank)
        seen.clear()  # the full forward reads every node
        chunked = enc.inference(x, edge_index, None, None, rank, chunk_size=6)
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)
    assert len(seen) == 10
    for num_src, used, num_edges in seen:
        assert num_src == used <= num_edges < num_nodes


def test_encoder_inference_updates_only_the_active_prefix_per_block():
    # Node t reads sources below 2t + 2: the first 5 nodes read only the
    # first 12, which read only the first 26. Two blocks updating 12, then
    # 5, nodes give the first 5 states of the full run.
    torch.manual_seed(0)
    num_nodes = 40
    node = torch.arange(num_nodes)
    source = torch.stack([node, node + 1, 2 * node + 1], dim=1).view(-1)
    source = source.clamp(max=num_nodes - 1)
    edge_index = torch.stack([source, node.repeat_interleave(3)])
    rank = torch.arange(3).repeat(num_nodes)
    enc = SDTEncoder(5, 8, num_layers=2, heads=2, edge_dim=None).eval()
    x = torch.randn(num_nodes, 5)
    full = enc.inference(x, edge_index, None, None, rank, chunk_size=4)
    part = enc.inference(
        x, edge_index, None, None, rank, chunk_size=4, num_active=[12, 5]
    )
    torch.testing.assert_close(part[:5], full[:5], atol=1e-5, rtol=1e-5)
    # Nodes past a block's prefix keep their earlier states: not the full run's.
    assert not torch.allclose(part[12:], full[12:])
    same = enc.inference(x, edge_index, None, None, rank, num_active=[num_nodes] * 2)
    torch.testing.assert_close(same, full, atol=1e-5, rtol=1e-5)


def test_encoder_inference_takes_projected_inputs_and_owns_them():
    torch.manual_seed(0)
    num_nodes, k = 30, 4
    edge_index, rank, _ = _knn_edges(num_nodes, k, seed=3)
    enc = SDTEncoder(5, 8, num_layers=2, heads=2, edge_dim=None).eval()
    x = torch.randn(num_nodes, 5)
    ref = enc.inference(x, edge_index, None, None, rank, chunk_size=7)
    with torch.no_grad():  # projected by the same chunks as inference(x)
        h0 = torch.cat([enc.lin_in(x[lo : lo + 7]) for lo in range(0, num_nodes, 7)])
    out = enc.inference(h0, edge_index, None, None, rank, chunk_size=7, embedded=True)
    assert torch.equal(out, ref)
    # Without blocks the states are normalised in the given tensor itself.
    bare = SDTEncoder(5, 8, num_layers=0).eval()
    with torch.no_grad():
        h0 = bare.lin_in(x)
        want = bare.norm(h0)
    out = bare.inference(h0, edge_index, chunk_size=7, embedded=True)
    assert out.data_ptr() == h0.data_ptr()
    torch.testing.assert_close(out, want, atol=0.0, rtol=0.0)


def test_encoder_gradients_and_reset():
    torch.manual_seed(0)
    edge_index, rank, _ = _knn_edges(10, 4)
    enc = SDTEncoder(5, 8, num_layers=1, heads=2, edge_dim=None)
    x = torch.randn(10, 5, requires_grad=True)
    out, _ = enc(x, edge_index, None, 3, rank)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    before = enc.lin_in.weight.clone()
    enc.reset_parameters()
    assert not torch.equal(before, enc.lin_in.weight)
    with pytest.raises(ValueError, match='divisible'):
        SDTBlock(10, heads=3)


def test_edge_head():
    head = EdgeHead(8, 4, hidden_channels=16)
    out = head(torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 4))
    assert out.shape == (6,)
