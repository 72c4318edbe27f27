import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from torch_geometric_sdt import SparseDiffAttention, TopKJaccard

# A data set of small graphs, each a kNN graph over its own points (for
# instance one photo album per graph), scored once with TopKJaccard:
torch.manual_seed(0)
transform = TopKJaccard(k=10)  # reads each graph's per-node Top-K from data.topk
dataset = []
for i in range(16):
    n = int(torch.randint(20, 40, ()))
    x = F.normalize(torch.randn(n, 16), dim=-1)
    topk = torch.randint(1, 11, (n,))
    dataset.append(transform(Data(x=x, topk=topk, y=torch.tensor([i % 2]))))

# Batching concatenates edge_rank and topk as they are (ranks and Top-K values
# are per list, not node ids, so PyG does not offset them) and offsets
# edge_index, which is exactly what the Top-K mask needs:
loader = DataLoader(dataset, batch_size=8, shuffle=True)
batch = next(iter(loader))
assert batch.edge_rank.max() < 10 and batch.topk.numel() == batch.num_nodes


class GraphNet(torch.nn.Module):
    def __init__(self, in_channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.conv = SparseDiffAttention(in_channels, hidden // 2, heads=2, edge_dim=1)
        self.lin = torch.nn.Linear(hidden, num_classes)

    def forward(self, data: Data) -> Tensor:
        h = self.conv(
            data.x,
            data.edge_index,
            data.edge_weight.view(-1, 1),
            topk=data.topk,  # one K per node of the batch
            edge_rank=data.edge_rank,
        )
        return self.lin(global_mean_pool(F.elu(h), data.batch))


model = GraphNet(16, 32, 2)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for batch in loader:
    optimizer.zero_grad()
    loss = F.cross_entropy(model(batch), batch.y)
    loss.backward()
    optimizer.step()
assert model(batch).shape == (batch.num_graphs, 2)
