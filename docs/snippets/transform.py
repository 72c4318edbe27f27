import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from torch_geometric_sdt import TopKJaccard, knn, topk_jaccard

torch.manual_seed(0)
x = F.normalize(torch.randn(300, 16), dim=-1)

# 1. Build the kNN graph from data.x and score its edges; K = 10 for all nodes.
data = TopKJaccard(topk=10, k=30)(Data(x=x))
print(data)  # edge_index [2, 9000], edge_rank, edge_attr (similarity), edge_weight
assert data.edge_weight.shape == (300 * 30,)

# 2. A per-node Top-K is read from a node attribute (data.topk by default):
topk = torch.randint(1, 31, (300,))
data = TopKJaccard(k=30)(Data(x=x, topk=topk))

# 3. On a graph you already have: per-edge similarities in data.edge_attr
#    (ranks in data.edge_rank, derived from the similarities when absent).
edge_index, rank, sim = knn(x, 30).to_edge_index()
data = Data(x=x, edge_index=edge_index, edge_attr=sim, edge_rank=rank, topk=topk)
pruned = TopKJaccard(prune=True)(data)  # keep only the edges inside each Top-K
assert pruned.num_edges == int(topk.sum())

# The same scores as a function, in the [N, k] form:
score = topk_jaccard(knn(x, 30), topk=topk)  # [300, 30]
assert torch.allclose(
    score.view(-1), TopKJaccard(k=30)(Data(x=x, topk=topk)).edge_weight
)
