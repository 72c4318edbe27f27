import torch
import torch.nn.functional as F

from torch_geometric_sdt import SparseDiffAttention, knn

torch.manual_seed(0)
x = F.normalize(torch.randn(300, 32), dim=-1)
edge_index, rank, sim = knn(x, k=16).to_edge_index()
topk = torch.randint(1, 17, (300,))

conv = SparseDiffAttention(32, 16, heads=4)

# The Top-K mask keeps the edge set fixed, so the layer compiles to one graph
# without breaks:
explanation = torch._dynamo.explain(conv)(x, edge_index, topk=topk, edge_rank=rank)
assert explanation.graph_break_count == 0

# 'aot_eager' compiles in seconds; leave out backend= for the default
# inductor backend (its first compile takes tens of seconds on a CPU).
compiled = torch.compile(conv, backend='aot_eager', fullgraph=True)
out = compiled(x, edge_index, topk=topk, edge_rank=rank)
assert torch.allclose(out, conv(x, edge_index, topk=topk, edge_rank=rank), atol=1e-5)
