import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import NeighborLoader

from torch_geometric_sdt import SparseDiffAttention, TopKJaccard

torch.manual_seed(0)
x = F.normalize(torch.randn(1000, 32), dim=-1)
topk = torch.randint(1, 21, (1000,))

# Score the full kNN graph once and keep only the edges inside each Top-K
# (the only edges the Top-K mask lets through), so that sampling every
# neighbour of a node stays cheap:
data = TopKJaccard(k=20, prune=True)(Data(x=x, topk=topk))

loader = NeighborLoader(data, num_neighbors=[-1, -1], batch_size=256, shuffle=True)
conv1 = SparseDiffAttention(32, 16, heads=4, edge_dim=1, layer_idx=0)
conv2 = SparseDiffAttention(64, 16, heads=4, edge_dim=1, layer_idx=1)
for batch in loader:
    # edge_rank, edge_weight and topk are sliced along with the sampled
    # edges and nodes; the seed nodes come first.
    e = batch.edge_weight.view(-1, 1)
    h = conv1(batch.x, batch.edge_index, e, topk=batch.topk, edge_rank=batch.edge_rank)
    h = conv2(h, batch.edge_index, e, topk=batch.topk, edge_rank=batch.edge_rank)
    out = h[: batch.batch_size]  # the states of the seed nodes
    assert out.shape == (batch.batch_size, 64)
