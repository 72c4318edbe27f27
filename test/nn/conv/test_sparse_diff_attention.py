from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn import TransformerConv, to_hetero
from torch_geometric.testing import assert_module, onlyFullTest, withPackage
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import to_torch_csc_tensor

from torch_geometric_sdt import SparseDiffAttention
from torch_geometric_sdt.nn.conv.sparse_diff_attention import (
    AttentionMaps,
    lambda_init_fn,
)
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.utils import edge_rank


def complete_graph(num_nodes: int) -> Tensor:
    r"""All edges :math:`j \to i` including self-loops, sorted by target."""
    target = torch.arange(num_nodes).repeat_interleave(num_nodes)
    source = torch.arange(num_nodes).repeat(num_nodes)
    return torch.stack([source, target], dim=0)


def random_ranks(num_nodes: int, generator: torch.Generator) -> Tensor:
    r"""Dense :obj:`[target, source]` ranks with self at rank 0."""
    rank = torch.empty(num_nodes, num_nodes, dtype=torch.long)
    for i in range(num_nodes):  # test helper, tiny
        others = [j for j in range(num_nodes) if j != i]
        perm = torch.randperm(num_nodes - 1, generator=generator)
        rank[i, i] = 0
        rank[i, torch.tensor(others)[perm]] = torch.arange(1, num_nodes)
    return rank


def random_knn(num_nodes: int, k: int, seed: int = 0) -> KNN:
    r"""A kNN-like graph: random neighbour lists with self at rank 0 and
    descending similarities.
    """
    gen = torch.Generator().manual_seed(seed)
    nbr = torch.rand(num_nodes, num_nodes, generator=gen)
    nbr.fill_diagonal_(2.0)
    sim, index = nbr.topk(k, dim=1)
    return KNN(index, sim)


def csr_ordered_knn(num_nodes: int, k: int) -> tuple[Tensor, Tensor]:
    r"""The edges and ranks of :func:`random_knn` sorted by target, then
    source, the edge order of sparse layouts, so that :obj:`edge_rank` is in
    that order too.
    """
    edge_index, rank, _ = random_knn(num_nodes, k).to_edge_index()
    order = (edge_index[1] * num_nodes + edge_index[0]).argsort()
    return edge_index[:, order], rank[order]


def dense_diff_attention(
    conv: SparseDiffAttention,
    x: Tensor,
    mask: Tensor | None = None,
    logit_topk: Tensor | None = None,
) -> Tensor:
    r"""Multi-head differential attention of Differential Transformer V1 in
    plain dense torch, without the causal mask and the output projection,
    plus the skip term of the layer.

    :obj:`mask` is an additive :obj:`[N, N]` mask (target, source);
    :obj:`logit_topk` keeps the top :obj:`K_i` logits of every row per map.
    """
    N, H, C = x.size(0), conv.heads, conv.out_channels
    D = C // 2
    q = F.linear(x, conv.lin_query.weight, conv.lin_query.bias)
    k = F.linear(x, conv.lin_key.weight, conv.lin_key.bias)
    v = F.linear(x, conv.lin_value.weight, conv.lin_value.bias)
    q = q.view(N, 2 * H, D).transpose(0, 1) * D**-0.5
    k = k.view(N, 2 * H, D).transpose(0, 1)
    v = v.view(N, H, 2 * D).transpose(0, 1)
    w = q @ k.transpose(-1, -2)  # [2H, N, N]
    if mask is not None:
        w = w + mask
    if logit_topk is not None:
        order = w.argsort(dim=-1, descending=True).argsort(dim=-1)
        w = w.masked_fill(order >= logit_topk.view(1, -1, 1), float('-inf'))
    w = torch.softmax(w, dim=-1)
    lambda_1 = torch.exp(torch.sum(conv.lambda_q1 * conv.lambda_k1))
    lambda_2 = torch.exp(torch.sum(conv.lambda_q2 * conv.lambda_k2))
    lambda_full = lambda_1 - lambda_2 + conv.lambda_init
    w = w.view(H, 2, N, N)
    w = w[:, 0] - lambda_full * w[:, 1]
    attn = w @ v  # [H, N, 2D]
    rms = attn.pow(2).mean(dim=-1, keepdim=True).add(1e-5).rsqrt()
    attn = attn * rms * conv.norm.weight
    attn = attn * (1 - conv.lambda_init)
    attn = attn.transpose(0, 1).reshape(N, H * 2 * D)
    return attn + F.linear(x, conv.lin_skip.weight, conv.lin_skip.bias)


def dense_single_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> Tensor:
    r"""Ordinary masked softmax attention, :obj:`q, k: [H, N, D]`."""
    w = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    if mask is not None:
        w = w + mask
    return torch.softmax(w, dim=-1) @ v


def randomise(conv: torch.nn.Module, seed: int = 0) -> None:
    r"""Gives every parameter (norm scale and biases included) random values,
    so the references check all of them.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('masked', [False, True])
def test_equals_dense_diff_transformer(dtype: torch.dtype, masked: bool):
    torch.manual_seed(12345)
    N, heads, C = 9, 3, 8
    conv = SparseDiffAttention(16, C, heads=heads, layer_idx=2).to(dtype)
    randomise(conv)
    x = torch.randn(N, 16, dtype=dtype)
    edge_index = complete_graph(N)

    gen = torch.Generator().manual_seed(1)
    rank = random_ranks(N, gen)
    topk = torch.randint(1, N + 1, (N,), generator=gen)
    topk[0] = 1  # a target left with its self edge only
    mask = torch.zeros(N, N, dtype=dtype)
    kwargs = {}
    if masked:
        mask = mask.masked_fill(rank >= topk.view(-1, 1), float('-inf'))
        kwargs = dict(topk=topk, edge_rank=rank[edge_index[1], edge_index[0]])

    expected = dense_diff_attention(conv, x, mask)
    out = conv(x, edge_index, **kwargs)
    assert out.dtype == dtype and out.size() == (N, heads * C)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)

    # Edges in a random order give the same result:
    perm = torch.randperm(edge_index.size(1))
    kwargs = {
        key: value[perm] if key == 'edge_rank' else value
        for key, value in kwargs.items()
    }
    out = conv(x, edge_index[:, perm], **kwargs)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_logit_mask_equals_dense_top_kappa(dtype: torch.dtype):
    torch.manual_seed(0)
    N = 8
    conv = SparseDiffAttention(6, 4, heads=2, mask_mode='logit').to(dtype)
    randomise(conv, seed=3)
    x = torch.randn(N, 6, dtype=dtype)
    edge_index = complete_graph(N)
    perm = torch.randperm(edge_index.size(1))
    topk = torch.randint(1, N + 1, (N,))
    expected = dense_diff_attention(conv, x, logit_topk=topk)
    out = conv(x, edge_index[:, perm], topk=topk)
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)
    out = conv(x, edge_index, topk=3)
    expected = dense_diff_attention(conv, x, logit_topk=torch.full((N,), 3))
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('masked', [False, True])
def test_lambda_zero_no_norm_is_single_map_attention(masked: bool):
    torch.manual_seed(0)
    N, H, C = 7, 2, 6
    D = C // 2
    conv = SparseDiffAttention(
        5, C, heads=H, lambda_init=0.0, norm=False, root_weight=False
    )
    with torch.no_grad():
        for p in (conv.lambda_q1, conv.lambda_k1, conv.lambda_q2, conv.lambda_k2):
            p.zero_()
    assert float(conv.get_lambda().detach()) == 0.0
    x = torch.randn(N, 5)
    edge_index = complete_graph(N)
    rank = random_ranks(N, torch.Generator().manual_seed(2))
    mask, kwargs = None, {}
    if masked:
        mask = torch.zeros(N, N).masked_fill(rank >= 3, float('-inf'))
        kwargs = dict(topk=3, edge_rank=rank[edge_index[1], edge_index[0]])

    q = conv.lin_query(x).view(N, H, 2, D)[:, :, 0].transpose(0, 1)
    k = conv.lin_key(x).view(N, H, 2, D)[:, :, 0].transpose(0, 1)
    v = conv.lin_value(x).view(N, H, C).transpose(0, 1)
    expected = dense_single_attention(q, k, v, mask).transpose(0, 1)
    out = conv(x, edge_index, **kwargs)
    assert torch.allclose(out, expected.reshape(N, H * C), atol=1e-6)

    # The vanilla counterpart is ordinary attention at full head width:
    conv = SparseDiffAttention(5, C, heads=H, differential=False, root_weight=False)
    assert conv.norm is None and float(conv.get_lambda()) == 0.0
    q = conv.lin_query(x).view(N, H, C).transpose(0, 1)
    k = conv.lin_key(x).view(N, H, C).transpose(0, 1)
    v = conv.lin_value(x).view(N, H, C).transpose(0, 1)
    expected = dense_single_attention(q, k, v, mask).transpose(0, 1)
    out, (_, alpha) = conv(x, edge_index, return_attention_weights=True, **kwargs)
    assert torch.allclose(out, expected.reshape(N, H * C), atol=1e-6)
    maps = conv.attention_maps(x, edge_index, **kwargs)
    assert maps.alpha_2 is None
    assert torch.equal(maps.alpha, maps.alpha_1)
    assert torch.equal(alpha, maps.alpha)


@pytest.mark.parametrize('concat', [True, False])
def test_vanilla_matches_transformer_conv(concat: bool):
    torch.manual_seed(0)
    x = torch.randn(10, 8)
    edge_index = torch.randint(0, 10, (2, 40))
    edge_attr = torch.randn(40, 3)
    ref = TransformerConv(8, 6, heads=2, concat=concat, edge_dim=3)
    conv = SparseDiffAttention(
        8, 6, heads=2, concat=concat, edge_dim=3, differential=False
    )
    assert sum(p.numel() for p in conv.parameters()) == sum(
        p.numel() for p in ref.parameters()
    )
    conv.load_state_dict(ref.state_dict())
    expected = ref(x, edge_index, edge_attr)
    assert torch.allclose(conv(x, edge_index, edge_attr), expected, atol=1e-6)
    # Same parameter count for the differential layer (plus 4 lambda vectors
    # and the norm scale):
    diff = SparseDiffAttention(8, 6, heads=2, concat=concat, edge_dim=3)
    extra = 4 * 3 + 6
    assert (
        sum(p.numel() for p in diff.parameters())
        == sum(p.numel() for p in ref.parameters()) + extra
    )


def test_attention_weights():
    torch.manual_seed(0)
    knn = random_knn(20, 6)
    edge_index, rank, sim = knn.to_edge_index()
    x = torch.randn(20, 4)
    conv = SparseDiffAttention(4, 8, heads=2, layer_idx=5)
    out = conv(x, edge_index, topk=4, edge_rank=rank, return_attention_weights=False)
    assert isinstance(out, Tensor) and out.size() == (20, 16)

    # PyG's (edge_index, alpha) pair, as returned by GATv2Conv:
    out2, (adj, alpha) = conv(
        x, edge_index, topk=4, edge_rank=rank, return_attention_weights=True
    )
    assert torch.equal(out, out2)
    assert adj is edge_index
    # The two softmax maps come from attention_maps():
    maps = conv.attention_maps(x, edge_index, topk=4, edge_rank=rank)
    assert isinstance(maps, AttentionMaps)
    assert torch.equal(maps.alpha, alpha)
    E = edge_index.size(1)
    for a in maps:
        assert a.size() == (E, 2)
    lam = conv.get_lambda()
    assert torch.allclose(maps.alpha, maps.alpha_1 - lam * maps.alpha_2)
    masked = rank >= 4
    assert (maps.alpha_1[masked] == 0).all()
    assert (maps.alpha_2[masked] == 0).all()
    target = edge_index[1]
    sums = torch.zeros(20, 2).index_add_(0, target, maps.alpha_1)
    assert torch.allclose(sums, torch.ones(20, 2))
    sums = torch.zeros(20, 2).index_add_(0, target, maps.alpha)
    assert torch.allclose(sums, (1 - lam).expand(20, 2))
    # The difference map is signed:
    assert (maps.alpha < 0).any()


def test_rank_from_similarity():
    knn = random_knn(30, 8, seed=4)
    edge_index, rank, sim = knn.to_edge_index()
    x = torch.randn(30, 16)
    conv = SparseDiffAttention(16, 4, heads=2)
    expected = conv(x, edge_index, topk=5, edge_rank=rank)
    # Self edges are ranked first even when their similarity is not highest:
    sim = sim.clone()
    sim[rank == 0] = -1.0
    out = conv(x, edge_index, edge_attr=sim.view(-1, 1), topk=5)
    assert torch.allclose(out, expected)
    perm = torch.randperm(edge_index.size(1))
    out = conv(x, edge_index[:, perm], edge_attr=sim[perm], topk=5)
    assert torch.allclose(out, expected, atol=1e-6)
    # Differs from the unmasked output:
    assert not torch.allclose(conv(x, edge_index), expected)


def test_assert_module_and_sparse_layouts():
    torch.manual_seed(0)
    edge_index, rank = csr_ordered_knn(12, 5)
    x = torch.randn(12, 8)
    topk = torch.randint(1, 6, (12,))
    for conv in (
        SparseDiffAttention(8, 4, heads=2),
        SparseDiffAttention(8, 4, heads=2, differential=False),
        SparseDiffAttention(8, 4, heads=2, mask_mode='logit'),
    ):
        assert_module(
            conv,
            x,
            edge_index,
            expected_size=(12, 8),
            atol=1e-6,
            topk=topk,
            edge_rank=rank,
        )
        assert_module(conv, x, edge_index, expected_size=(12, 8), atol=1e-6)


@withPackage('torch_sparse')
def test_sparse_tensor_attention_weights():
    edge_index, rank = csr_ordered_knn(10, 4)
    x = torch.randn(10, 8)
    conv = SparseDiffAttention(8, 4, heads=2)
    out1, (_, alpha1) = conv(
        x, edge_index, topk=2, edge_rank=rank, return_attention_weights=True
    )
    adj = SparseTensor.from_edge_index(edge_index, sparse_sizes=(10, 10))
    out2, (adj2, alpha2) = conv(
        x, adj.t(), topk=2, edge_rank=rank, return_attention_weights=True
    )
    assert torch.allclose(out1, out2, atol=1e-6)
    assert isinstance(adj2, SparseTensor)
    assert torch.allclose(adj2.storage.value(), alpha1)
    assert torch.allclose(alpha2, alpha1)


def test_edge_index_and_torch_sparse_inputs():
    edge_index, rank = csr_ordered_knn(10, 4)
    x = torch.randn(10, 8)
    conv = SparseDiffAttention(8, 4, heads=2)
    expected = conv(x, edge_index, topk=2, edge_rank=rank)
    ei = EdgeIndex(edge_index, sparse_size=(10, 10), sort_order='col')
    assert torch.allclose(conv(x, ei, topk=2, edge_rank=rank), expected)
    adj = to_torch_csc_tensor(edge_index, size=(10, 10)).t()
    out, (adj_out, alpha) = conv(
        x, adj, topk=2, edge_rank=rank, return_attention_weights=True
    )
    assert torch.allclose(out, expected, atol=1e-6)
    assert adj_out.layout == torch.sparse_csr
    assert torch.equal(adj_out.values(), alpha)


def test_bipartite_lazy_edge_dim_and_concat():
    torch.manual_seed(0)
    x_src, x_dst = torch.randn(6, 5), torch.randn(3, 7)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 0], [0, 0, 1, 1, 2, 2, 2]])
    edge_attr = torch.randn(7, 2)
    conv = SparseDiffAttention((-1, -1), 4, heads=3, edge_dim=2)
    out = conv((x_src, x_dst), edge_index, edge_attr)
    assert out.size() == (3, 12)
    conv = SparseDiffAttention((5, 7), 4, heads=3, concat=False, root_weight=False)
    out = conv(
        (x_src, x_dst),
        edge_index,
        topk=torch.tensor([1, 2, 1]),
        edge_rank=torch.tensor([0, 1, 0, 1, 0, 1, 2]),
    )
    assert out.size() == (3, 4)
    assert str(conv) == (
        'SparseDiffAttention((5, 7), 4, heads=3, differential=True, concat=False)'
    )


def test_lambda_init():
    assert SparseDiffAttention(4, 4).lambda_init == pytest.approx(0.2)
    conv = SparseDiffAttention(4, 4, layer_idx=3)
    assert conv.lambda_init == pytest.approx(lambda_init_fn(3))
    assert conv.lambda_init == pytest.approx(0.8 - 0.6 * 0.4065696597)
    assert SparseDiffAttention(4, 4, lambda_init=0.5).lambda_init == 0.5
    torch.manual_seed(7)
    a = SparseDiffAttention(4, 4)
    torch.manual_seed(7)
    b = SparseDiffAttention(4, 4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert 0.0 < a.lambda_q1.std() < 0.3


def test_edge_cases_are_finite():
    conv = SparseDiffAttention(4, 4, heads=2)
    x = torch.randn(5, 4)
    # Empty graph:
    empty = torch.empty(2, 0, dtype=torch.long)
    out = conv(x, empty, topk=2, edge_rank=torch.empty(0, dtype=torch.long))
    assert torch.isfinite(out).all()
    assert torch.allclose(out, conv.lin_skip(x))
    # Node 0 holds only its self edge; node 1 has every non-self edge masked;
    # node 2 has edges, none of rank 0, all masked; node 4 has no edge:
    edge_index = torch.tensor([[0, 1, 0, 2, 3, 0, 3], [0, 1, 1, 1, 3, 2, 2]])
    rank = torch.tensor([0, 0, 1, 2, 0, 3, 4])
    topk = torch.tensor([1, 1, 2, 1, 1])
    with pytest.warns(UserWarning, match='1 target node'):  # node 2
        out, (_, alpha) = conv(
            x, edge_index, topk=topk, edge_rank=rank, return_attention_weights=True
        )
    assert torch.isfinite(out).all()
    assert torch.isfinite(alpha).all()
    lam = conv.get_lambda()
    assert torch.allclose(alpha[0], (1 - lam).expand(2))
    assert torch.allclose(alpha[1], (1 - lam).expand(2))
    assert (alpha[2:4] == 0).all() and (alpha[5:] == 0).all()
    out.sum().backward()
    for p in conv.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_gradcheck():
    torch.manual_seed(0)
    conv = SparseDiffAttention(3, 4, heads=2, edge_dim=2).double()
    knn = random_knn(5, 3)
    edge_index, rank, _ = knn.to_edge_index()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    edge_attr = torch.randn(
        edge_index.size(1), 2, dtype=torch.float64, requires_grad=True
    )

    params = {name: p.detach() for name, p in conv.named_parameters()}

    def fn(
        x: Tensor, edge_attr: Tensor, lambda_q1: Tensor, norm_weight: Tensor
    ) -> Tensor:
        p = {**params, 'lambda_q1': lambda_q1, 'norm.weight': norm_weight}
        return torch.func.functional_call(
            conv, p, (x, edge_index, edge_attr), dict(topk=2, edge_rank=rank)
        )

    inputs = (
        x,
        edge_attr,
        params['lambda_q1'].clone().requires_grad_(),
        params['norm.weight'].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(fn, inputs)


def test_bad_input_raises():
    with pytest.raises(ValueError, match='even'):
        SparseDiffAttention(4, 5)
    with pytest.raises(ValueError, match='mask_mode'):
        SparseDiffAttention(4, 4, mask_mode='prob')
    conv = SparseDiffAttention(4, 4)
    x = torch.randn(4, 4)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    with pytest.raises(ValueError, match='edge_rank'):
        conv(x, edge_index, topk=2)
    with pytest.raises(ValueError, match='multi-dimensional'):
        conv(x, edge_index, edge_attr=torch.randn(4, 3), topk=2)
    with pytest.raises(ValueError, match='one entry per target'):
        conv(
            x,
            edge_index,
            topk=torch.tensor([1, 2]),
            edge_rank=torch.zeros(4, dtype=torch.long),
        )
    with pytest.raises(ValueError, match='topk must be at least 1'):
        conv(x, edge_index, topk=0, edge_rank=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match='integer'):
        conv(x, edge_index, topk=2, edge_rank=torch.zeros(4))
    with pytest.raises(ValueError, match='entries for 4 edges'):
        conv(x, edge_index, topk=2, edge_rank=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match='edge_attr'):
        SparseDiffAttention(4, 4, edge_dim=2)(x, edge_index)


@pytest.mark.parametrize('mask_mode', ['rank', 'logit', 'similarity'])
def test_compile_fullgraph(mask_mode: str):
    torch._dynamo.reset()
    knn = random_knn(16, 5)
    edge_index, rank, sim = knn.to_edge_index()
    x = torch.randn(16, 8)
    topk = torch.randint(1, 6, (16,))
    kwargs = dict(topk=topk, edge_rank=rank)
    if mask_mode == 'similarity':  # ranks derived by utils.edge_rank
        kwargs = dict(topk=topk, edge_attr=sim)
        mask_mode = 'rank'
    conv = SparseDiffAttention(8, 4, heads=2, mask_mode=mask_mode)
    expected = conv(x, edge_index, **kwargs)

    explain = torch._dynamo.explain(conv)(x, edge_index, **kwargs)
    assert explain.graph_break_count == 0

    compiled = torch.compile(conv, backend='aot_eager', fullgraph=True)
    out = compiled(x, edge_index, **kwargs)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()


@onlyFullTest
def test_compile_inductor():
    torch._dynamo.reset()
    knn = random_knn(64, 8)
    edge_index, rank, sim = knn.to_edge_index()
    x = torch.randn(64, 16)
    conv = SparseDiffAttention(16, 8, heads=4)
    expected = conv(x, edge_index, topk=5, edge_rank=rank)
    compiled = torch.compile(conv, fullgraph=True)
    out = compiled(x, edge_index, topk=5, edge_rank=rank)
    assert torch.allclose(out, expected, atol=1e-5)
    # Ranks from similarities and the logit mask (one packed-key sort):
    out = compiled(x, edge_index, sim, topk=5)
    assert torch.allclose(out, expected, atol=1e-5)
    conv = SparseDiffAttention(16, 8, heads=4, mask_mode='logit')
    expected = conv(x, edge_index, topk=5)
    out = torch.compile(conv, fullgraph=True)(x, edge_index, topk=5)
    assert torch.allclose(out, expected, atol=1e-5)


def test_to_hetero():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = SparseDiffAttention((-1, -1), 4, heads=2)
            self.conv2 = SparseDiffAttention((-1, -1), 4, heads=1, layer_idx=1)

        def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
            return self.conv2(self.conv1(x, edge_index).relu(), edge_index)

    x_dict = {'face': torch.randn(8, 6), 'person': torch.randn(3, 5)}
    edge_index_dict = {
        ('face', 'near', 'face'): torch.randint(0, 8, (2, 20)),
        ('face', 'of', 'person'): torch.stack(
            [torch.arange(8), torch.randint(0, 3, (8,))]
        ),
        ('person', 'has', 'face'): torch.stack(
            [torch.randint(0, 3, (8,)), torch.arange(8)]
        ),
    }
    metadata = (list(x_dict), list(edge_index_dict))
    model = to_hetero(Net(), metadata, aggr='sum')
    out = model(x_dict, edge_index_dict)
    assert out['face'].size() == (8, 4)
    assert out['person'].size() == (3, 4)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_attention_explainer():
    from torch_geometric.explain import AttentionExplainer, Explainer

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = SparseDiffAttention(8, 4, heads=2)
            self.conv2 = SparseDiffAttention(
                8, 3, heads=1, layer_idx=1, differential=False
            )

        def forward(
            self, x: Tensor, edge_index: Tensor, topk: int, edge_rank: Tensor
        ) -> Tensor:
            x = self.conv1(x, edge_index, topk=topk, edge_rank=edge_rank)
            return self.conv2(x.relu(), edge_index)

    knn = random_knn(15, 4)
    edge_index, rank, _ = knn.to_edge_index()
    x = torch.randn(15, 8)
    explainer = Explainer(
        model=Net(),
        algorithm=AttentionExplainer(),
        explanation_type='model',
        model_config=dict(
            mode='multiclass_classification', task_level='node', return_type='raw'
        ),
        edge_mask_type='object',
    )
    explanation = explainer(x, edge_index, index=2, topk=2, edge_rank=rank)
    assert explanation.edge_mask.size() == (edge_index.size(1),)
    assert torch.isfinite(explanation.edge_mask).all()
    assert (explanation.edge_mask != 0).any()


def test_repr():
    assert str(SparseDiffAttention(16, 32, heads=4)) == (
        'SparseDiffAttention(16, 32, heads=4, differential=True)'
    )
    conv = SparseDiffAttention(
        16, 32, heads=4, concat=False, edge_dim=3, mask_mode='logit'
    )
    assert str(conv) == (
        'SparseDiffAttention(16, 32, heads=4, differential=True, concat=False, '
        "edge_dim=3, mask_mode='logit')"
    )
    conv = SparseDiffAttention(16, 32, differential=False, edge_dim=1)
    assert str(conv) == (
        'SparseDiffAttention(16, 32, heads=1, differential=False, edge_dim=1)'
    )


def test_return_attention_weights_as_in_pyg():
    from torch_geometric.nn import GATv2Conv

    knn = random_knn(12, 4)
    edge_index, rank, _ = knn.to_edge_index()
    x = torch.randn(12, 8)
    for conv in (GATv2Conv(8, 4, heads=2), SparseDiffAttention(8, 4, heads=2)):
        out, (adj, alpha) = conv(x, edge_index, return_attention_weights=True)
        assert out.size() == (12, 8)
        assert adj.size(0) == 2 and alpha.size() == (adj.size(1), 2)


def test_emptied_targets_warn_once():
    torch.manual_seed(0)
    knn = random_knn(20, 6)
    edge_index, rank, _ = knn.to_edge_index()
    x = torch.randn(20, 8)
    conv = SparseDiffAttention(8, 4, heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no warning when every target keeps rank 0
        conv(x, edge_index, topk=2, edge_rank=rank)
    # Drop the rank-0 and rank-1 edges of targets 3 and 7 (as sampling may):
    gone = ((edge_index[1] == 3) | (edge_index[1] == 7)) & (rank < 2)
    edge_index, rank = edge_index[:, ~gone], rank[~gone]
    with pytest.warns(UserWarning, match='2 target node') as record:
        out, (_, alpha) = conv(
            x, edge_index, topk=2, edge_rank=rank, return_attention_weights=True
        )
    assert len(record) == 1
    emptied = (edge_index[1] == 3) | (edge_index[1] == 7)
    assert (alpha[emptied] == 0).all()
    assert (alpha[~emptied & (rank < 2)] != 0).all()
    # Their output is the root term alone:
    assert torch.allclose(out[[3, 7]], conv.lin_skip(x[[3, 7]]), atol=1e-6)
    # Ranks of the remaining graph, or the logit mask, keep an edge per target:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        conv(x, edge_index, topk=2, edge_rank=edge_rank(edge_index, -rank.float()))
        SparseDiffAttention(8, 4, mask_mode='logit')(x, edge_index, topk=2)


@withPackage('torch_sparse')
def test_neighbor_loader_drops_rank_zero():
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    knn = random_knn(40, 8, seed=3)
    edge_index, rank, sim = knn.to_edge_index()
    data = Data(x=torch.randn(40, 8), edge_index=edge_index, edge_rank=rank)
    data.edge_attr = sim
    torch.manual_seed(0)
    loader = NeighborLoader(data, num_neighbors=[2], batch_size=40, shuffle=False)
    batch = next(iter(loader))
    conv = SparseDiffAttention(8, 4, heads=2)
    has_self = torch.zeros(40, dtype=torch.bool)
    has_self[batch.edge_index[1][batch.edge_index[0] == batch.edge_index[1]]] = True
    assert not has_self.all()  # some seeds lost their self edge
    with pytest.warns(UserWarning, match='neighbour sampling'):
        conv(batch.x, batch.edge_index, topk=1, edge_rank=batch.edge_rank)
    # Ranking the sampled edges by similarity keeps one edge per target:
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        conv(batch.x, batch.edge_index, batch.edge_attr, topk=1)


_TEMPLATE_CODE = r"""
import inspect, linecache, os, pickle, sys, tempfile, traceback
import torch
from torch_geometric_sdt import SparseDiffAttention

conv = SparseDiffAttention(8, 4, heads=2)
second = SparseDiffAttention(8, 6, heads=1)
copy = pickle.loads(pickle.dumps(conv))
x = torch.randn(5, 8)
edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
assert conv(x, edge_index).shape == (5, 8) and second(x, edge_index).shape == (5, 6)
assert torch.equal(copy(x, edge_index), conv(x, edge_index))
linecache.clearcache()
assert 'def propagate(' in inspect.getsource(type(conv).propagate)
try:  # an error raised in the generated edge_updater
    conv(x, edge_index, topk=2, edge_rank=torch.zeros(4, dtype=torch.long))
except ValueError:
    text = traceback.format_exc()
frames = [line for line in text.splitlines() if 'edge_updater_' in line]
assert frames, text
assert 'edge_collect(' in text or 'edge_update(' in text, text
compiled = torch.compile(conv, backend='aot_eager', fullgraph=True)
assert torch.allclose(compiled(x, edge_index), conv(x, edge_index), atol=1e-6)
print(sorted(os.listdir(tempfile.gettempdir())))
"""


def test_generated_modules_leave_no_file(tmp_path):
    # PyG writes propagate() and edge_updater() of each class to $TMPDIR and
    # imports them; the conv removes the files (and bytecode) once loaded,
    # while tracebacks, inspect, pickling, a second instance and
    # torch.compile keep working.
    import os
    import subprocess
    import sys
    from pathlib import Path

    tmp = tmp_path / 'tmp'
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    env['TORCHINDUCTOR_CACHE_DIR'] = str(tmp_path / 'inductor')
    env.pop('PYTHONDONTWRITEBYTECODE', None)  # bytecode beside them too
    res = subprocess.run(
        [sys.executable, '-c', _TEMPLATE_CODE],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == '[]'
    assert list(tmp.iterdir()) == []


def test_template_cleanup_leaves_other_files(tmp_path, monkeypatch):
    import sys
    import tempfile
    import types

    from torch_geometric_sdt.nn.conv import sparse_diff_attention as sda

    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    name = 'pkg.mod_Cls_propagate'
    mine = tmp_path / f'{name}_abc123.py'
    other = tmp_path / 'pkg.mod_Other_propagate_abc123.py'
    elsewhere = tmp_path / 'sub' / f'{name}_abc123.py'
    elsewhere.parent.mkdir()
    for path in (mine, other, elsewhere):
        path.write_text('def propagate():\n    return 1\n')
    for path in (other, elsewhere):  # not under its own name in $TMPDIR
        module = types.ModuleType(name)
        module.__file__ = str(path)
        module.__loader__ = None
        monkeypatch.setitem(sys.modules, name, module)
        sda._forget_template_file(name)
        assert path.exists()
    module.__file__ = str(mine)
    sda._forget_template_file(name)
    assert not mine.exists() and other.exists() and elsewhere.exists()
    assert module.__loader__.get_source(name).startswith('def propagate')
    sda._forget_template_file(name)  # again: nothing left to do
    sda._forget_template_file('not.loaded')
