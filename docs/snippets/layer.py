import torch
import torch.nn.functional as F

from torch_geometric_sdt import SparseDiffAttention, knn

torch.manual_seed(0)
x = F.normalize(torch.randn(500, 32), dim=-1)  # 500 unit-norm embeddings

graph = knn(x, k=20)  # graph.index, graph.sim: [500, 20], self at rank 0
edge_index, rank, sim = graph.to_edge_index()  # edges j -> i, [2, 500 * 20]

conv = SparseDiffAttention(32, 16, heads=4)  # 4 heads of width 16 (two maps of 8)
out = conv(x, edge_index, topk=8, edge_rank=rank)  # attend to ranks 0..7 only
assert out.shape == (500, 4 * 16)

# One Top-K per node (a LongTensor[N]); rank 0 (the node itself) is never masked:
topk = torch.randint(1, 21, (500,))
# PyG's (edge_index, alpha) pair, as from GATv2Conv or TransformerConv:
out, (edge_index, alpha) = conv(
    x, edge_index, topk=topk, edge_rank=rank, return_attention_weights=True
)
# alpha = a1 - lambda * a2, [E, heads]: it can be negative, and it is 0 on
# every masked edge (rank >= K_i, masked before both softmaxes):
masked = rank >= topk[edge_index[1]]
assert bool((alpha[masked] == 0).all())
# The two softmax maps a1 and a2 themselves:
maps = conv.attention_maps(x, edge_index, topk=topk, edge_rank=rank)
assert torch.allclose(maps.alpha, maps.alpha_1 - conv.get_lambda() * maps.alpha_2)
print(f'lambda = {conv.get_lambda().item():.3f}')  # learnable, shared by the heads

# Without edge_rank, a one-dimensional edge_attr is read as the similarity to
# rank by (utils.edge_rank: self first, then descending similarity, ties by
# ascending source id -- the order TopKJaccard uses too):
out_sim = conv(x, edge_index, sim, topk=8)
assert torch.allclose(out_sim, conv(x, edge_index, topk=8, edge_rank=rank))
