import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data

from torch_geometric_sdt import SparseDiffAttention, TopKJaccard


class Net(torch.nn.Module):
    """Two differential-attention layers; the Top-K Jaccard score of every
    edge is an edge feature, and the Top-K mask keeps each node's K most
    similar neighbours."""

    def __init__(
        self, in_channels: int, hidden: int, out_channels: int, heads: int = 4
    ) -> None:
        super().__init__()
        self.conv1 = SparseDiffAttention(
            in_channels, hidden // heads, heads=heads, edge_dim=1, layer_idx=0
        )
        self.conv2 = SparseDiffAttention(
            hidden, hidden // heads, heads=heads, edge_dim=1, layer_idx=1
        )
        self.lin = torch.nn.Linear(hidden, out_channels)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: Tensor,
        topk: int | Tensor,
        edge_rank: Tensor,
    ) -> Tensor:
        e = edge_weight.view(-1, 1)
        x = F.elu(self.conv1(x, edge_index, e, topk=topk, edge_rank=edge_rank))
        x = F.elu(self.conv2(x, edge_index, e, topk=topk, edge_rank=edge_rank))
        return self.lin(x)


torch.manual_seed(0)
y = torch.randint(0, 4, (200,))
x = F.normalize(torch.randn(4, 16)[y] + 0.8 * torch.randn(200, 16), dim=-1)
data = TopKJaccard(topk=8, k=16)(Data(x=x, y=y))

model = Net(16, 64, 4)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(10):
    optimizer.zero_grad()
    out = model(data.x, data.edge_index, data.edge_weight, 8, data.edge_rank)
    loss = F.cross_entropy(out, data.y)
    loss.backward()
    optimizer.step()
print(f'loss after 10 epochs: {loss.item():.3f}')
assert loss.item() < 1.0
