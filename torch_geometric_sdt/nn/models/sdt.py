from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from torch_geometric_sdt.nn.conv import SparseDiffAttention


class FeedForward(torch.nn.Module):
    r"""The position-wise feed-forward layer :math:`\mathbf{W}_2
    \,\mathrm{GELU}(\mathbf{W}_1 \mathbf{h})`.
    """

    def __init__(self, channels: int, hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.lin1 = torch.nn.Linear(channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, channels)
        self.dropout = dropout

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        out = F.gelu(self.lin1(h))
        out = F.dropout(out, p=self.dropout, training=self.training)
        return self.lin2(out), h.new_zeros(())


class MoEFeedForward(torch.nn.Module):
    r"""A mixture of :math:`E` feed-forward experts with top-1 or top-2
    gating and the load-balancing loss of the Switch Transformer,

    .. math::
        \mathbf{g} = \mathrm{softmax}(\mathbf{W}_g \mathbf{h}), \qquad
        \mathrm{MoE}(\mathbf{h}) = \sum_{e \in \mathrm{top}_m(\mathbf{g})}
        \frac{g_e}{\sum_{e' \in \mathrm{top}_m(\mathbf{g})} g_{e'}}
        \mathrm{FFN}_e(\mathbf{h}),

    .. math::
        \mathcal{L}_{\text{balance}} = E \sum_{e=1}^{E} f_e \, \bar{g}_e,

    with :math:`f_e` the fraction of nodes whose first choice is expert
    :math:`e` and :math:`\bar{g}_e` its mean gate. Every expert is evaluated
    on every node and the unselected ones get weight 0, so shapes never
    depend on the routing (:func:`torch.compile` friendly); this costs
    :math:`E` feed-forward passes, which is cheap at the widths used here.

    Args:
        channels (int): Input and output width.
        hidden_channels (int): Hidden width of each expert.
        num_experts (int, optional): :math:`E`. (default: :obj:`4`)
        top (int, optional): Experts per node, 1 or 2. (default: :obj:`2`)
        dropout (float, optional): Dropout inside the experts.
            (default: :obj:`0.0`)
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        num_experts: int = 4,
        top: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if top not in (1, 2) or top > num_experts:
            raise ValueError(
                f'top must be 1 or 2 and at most num_experts (got top={top}, '
                f'num_experts={num_experts})'
            )
        self.num_experts = num_experts
        self.top = top
        self.gate = torch.nn.Linear(channels, num_experts, bias=False)
        self.experts = torch.nn.ModuleList(
            [
                FeedForward(channels, hidden_channels, dropout)
                for _ in range(num_experts)
            ]
        )

    def reset_parameters(self) -> None:
        self.gate.reset_parameters()
        for expert in self.experts:
            expert.reset_parameters()

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        gates = self.gate(h).softmax(dim=-1)
        top_val, top_idx = gates.topk(self.top, dim=-1)
        weight = torch.zeros_like(gates).scatter(
            -1, top_idx, top_val / top_val.sum(dim=-1, keepdim=True)
        )
        out = torch.stack([expert(h)[0] for expert in self.experts], dim=-1)
        out = (out * weight.unsqueeze(-2)).sum(dim=-1)
        first = F.one_hot(top_idx[..., 0], self.num_experts).to(gates.dtype)
        frac = first.reshape(-1, self.num_experts).mean(dim=0)
        mean_gate = gates.reshape(-1, self.num_experts).mean(dim=0)
        balance = self.num_experts * (frac * mean_gate).sum()
        return out, balance


class SDTBlock(torch.nn.Module):
    r"""One block of the Sparse Differential Transformer: pre-norm
    :class:`~torch_geometric_sdt.nn.SparseDiffAttention` under the Top-K
    mask, then a pre-norm feed-forward (or mixture-of-experts) layer,

    .. math::
        \mathbf{h}' = \mathbf{h} + \mathbf{W}_o \,
        \mathrm{SDA}(\mathrm{LN}(\mathbf{h}), \mathcal{E}, K), \qquad
        \mathbf{h}'' = \mathbf{h}' + \mathrm{FFN}(\mathrm{LN}(\mathbf{h}')).

    Args:
        channels (int): Node state width; divisible by :obj:`heads`, and
            :obj:`channels / heads` even for differential attention.
        heads (int, optional): Attention heads. (default: :obj:`4`)
        edge_dim (int, optional): Edge feature width. (default: :obj:`None`)
        layer_idx (int, optional): Depth, for :math:`\lambda_{\text{init}}`.
            (default: :obj:`0`)
        differential (bool, optional): :obj:`False` gives the vanilla
            attention ablation. (default: :obj:`True`)
        num_experts (int, optional): :obj:`0` for a plain feed-forward, else
            the number of experts of a :class:`MoEFeedForward`.
            (default: :obj:`0`)
        moe_top (int, optional): Experts per node. (default: :obj:`2`)
        dropout (float, optional): Dropout. (default: :obj:`0.0`)
    """

    def __init__(
        self,
        channels: int,
        heads: int = 4,
        edge_dim: int | None = None,
        layer_idx: int = 0,
        differential: bool = True,
        num_experts: int = 0,
        moe_top: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(
                f'channels ({channels}) must be divisible by heads ({heads})'
            )
        self.norm1 = torch.nn.LayerNorm(channels)
        self.attn = SparseDiffAttention(
            channels,
            channels // heads,
            heads=heads,
            edge_dim=edge_dim,
            root_weight=False,
            layer_idx=layer_idx,
            differential=differential,
            dropout=dropout,
        )
        self.lin_out = torch.nn.Linear(channels, channels)
        self.norm2 = torch.nn.LayerNorm(channels)
        self.ffn: torch.nn.Module
        if num_experts > 0:
            self.ffn = MoEFeedForward(
                channels, 2 * channels, num_experts, moe_top, dropout
            )
        else:
            self.ffn = FeedForward(channels, 2 * channels, dropout)

    def reset_parameters(self) -> None:
        for module in (self.norm1, self.attn, self.lin_out, self.norm2, self.ffn):
            module.reset_parameters()

    def forward(
        self,
        h: Tensor | tuple[Tensor, Tensor],
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        topk: int | Tensor | None = None,
        edge_rank: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns the new target states and the block's auxiliary loss.
        A pair :obj:`(h_src, h_dst)` computes the states of a subset of
        targets (bipartite form) from all sources.
        """
        if isinstance(h, Tensor):
            h_src = h_dst = h
            x: Tensor | tuple[Tensor, Tensor] = self.norm1(h)
        else:
            h_src, h_dst = h
            x = (self.norm1(h_src), self.norm1(h_dst))
        out = self.attn(x, edge_index, edge_attr, topk=topk, edge_rank=edge_rank)
        h_dst = h_dst + self.lin_out(out)
        out, aux = self.ffn(self.norm2(h_dst))
        return h_dst + out, aux


class EdgeHead(torch.nn.Module):
    r"""Scores candidate pairs :math:`(i, j)` as "same identity" from the node
    states and the pair's own features,

    .. math::
        P(y_i = y_j) = \sigma\big(\mathrm{MLP}([\mathbf{h}_i, \mathbf{h}_j,
        \mathbf{h}_i \odot \mathbf{h}_j, |\mathbf{h}_i - \mathbf{h}_j|,
        \mathbf{e}_{ij}])\big).

    Args:
        channels (int): Node state width.
        edge_dim (int): Pair feature width.
        hidden_channels (int, optional): MLP width. (default: :obj:`64`)
    """

    def __init__(self, channels: int, edge_dim: int, hidden_channels: int = 64):
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(4 * channels + edge_dim, hidden_channels),
            torch.nn.GELU(),
            torch.nn.Linear(hidden_channels, hidden_channels),
            torch.nn.GELU(),
            torch.nn.Linear(hidden_channels, 1),
        )

    def reset_parameters(self) -> None:
        for module in self.mlp:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward(self, h_i: Tensor, h_j: Tensor, edge_attr: Tensor) -> Tensor:
        """Returns one logit per pair, :obj:`[P]`."""
        z = torch.cat([h_i, h_j, h_i * h_j, (h_i - h_j).abs(), edge_attr], dim=-1)
        return self.mlp(z).squeeze(-1)


class SDTEncoder(torch.nn.Module):
    r"""A stack of :class:`SDTBlock` on a kNN graph, after a linear input
    projection, with a final layer norm.

    Args:
        in_channels (int): Node input width.
        channels (int): State width.
        num_layers (int, optional): Blocks. (default: :obj:`2`)
        **block_kwargs: Passed on to every :class:`SDTBlock` (:obj:`heads`,
            :obj:`edge_dim`, :obj:`differential`, :obj:`num_experts`,
            :obj:`moe_top`, :obj:`dropout`).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_layers: int = 2,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.lin_in = torch.nn.Linear(in_channels, channels)
        self.blocks = torch.nn.ModuleList(
            [SDTBlock(channels, layer_idx=i, **block_kwargs) for i in range(num_layers)]
        )
        self.norm = torch.nn.LayerNorm(channels)

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def reset_parameters(self) -> None:
        self.lin_in.reset_parameters()
        for block in self.blocks:
            block.reset_parameters()
        self.norm.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        topk: int | Tensor | None = None,
        edge_rank: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns the node states :obj:`[N, channels]` and the summed
        auxiliary (load-balancing) loss.
        """
        h = self.lin_in(x)
        aux = h.new_zeros(())
        for block in self.blocks:
            h, block_aux = block(h, edge_index, edge_attr, topk, edge_rank)
            aux = aux + block_aux
        return self.norm(h), aux

    @torch.no_grad()
    def embed(self, chunks: Iterable[Tensor], num_nodes: int) -> Tensor:
        r"""The input projection :obj:`lin_in` of :obj:`num_nodes` node inputs
        given as consecutive chunks of rows, :obj:`[N, channels]`: the inputs
        of every node are never held at once. Its output is what
        :meth:`inference` takes with :obj:`embedded=True`."""
        weight = self.lin_in.weight
        h = torch.empty(
            num_nodes,
            self.lin_in.out_features,
            dtype=weight.dtype,
            device=weight.device,
        )
        lo = 0
        for x in chunks:
            h[lo : lo + x.size(0)] = self.lin_in(x)
            lo += x.size(0)
        return h

    @torch.no_grad()
    def inference(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        topk: int | Tensor | None = None,
        edge_rank: Tensor | None = None,
        chunk_size: int = 65536,
        num_active: Sequence[int] | None = None,
        embedded: bool = False,
    ) -> Tensor:
        r"""Layer-wise inference over all nodes in chunks of target nodes, so
        that memory stays bounded by :obj:`chunk_size` targets' edges at a
        time; each chunk reads only the states of its edges' sources, so the
        work is linear in the number of edges whatever the chunk size. Edges
        must be sorted by target (as from
        :meth:`~torch_geometric_sdt.nn.knn.KNN.to_edge_index`).

        With :obj:`embedded=True`, :obj:`x` holds the states after the input
        projection, :obj:`lin_in(x)` :obj:`[N, channels]`, which a caller can
        build chunk by chunk without holding every node's inputs; this
        method then owns :obj:`x` and overwrites it. The states are
        normalised in place, chunk by chunk, so at most two :obj:`[N,
        channels]` tensors are alive at once.

        With :obj:`num_active` (one count per block), block :math:`l` updates
        only the first :obj:`num_active[l]` nodes; the others keep the states
        they had before it. For the states of a few nodes on their receptive
        field, ordered by their distance to those nodes, block :math:`l`
        needs only the nodes within :math:`L - 1 - l` hops (see
        :meth:`~torch_geometric_sdt.nn.models.SDTClusterer.node_states`).
        """
        num_nodes, device = x.size(0), x.device
        target = edge_index[1]

        def edges(lo: int, hi: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
            bounds = torch.tensor([lo, hi], device=device)
            e0, e1 = torch.searchsorted(target, bounds).tolist()
            return (
                edge_index[:, e0:e1],
                None if edge_attr is None else edge_attr[e0:e1],
                None if edge_rank is None else edge_rank[e0:e1],
            )

        if embedded:
            h = x
        else:
            chunks = (x[lo : lo + chunk_size] for lo in range(0, num_nodes, chunk_size))
            h = self.embed(chunks, num_nodes)
        del x  # Its last reference when the caller passed a temporary.
        return self.chunked_inference(h, edges, topk, chunk_size, num_active)

    @torch.no_grad()
    def chunked_inference(
        self,
        h: Tensor,
        edges: Callable[[int, int], tuple[Tensor, Tensor | None, Tensor | None]],
        topk: int | Tensor | None = None,
        chunk_size: int = 65536,
        num_active: Sequence[int] | None = None,
    ) -> Tensor:
        r"""The loop of :meth:`inference` with the edges made on demand:
        :obj:`edges(lo, hi)` returns :obj:`(edge_index, edge_attr,
        edge_rank)` of the edges into the target nodes :math:`[lo, hi)`
        (global ids, sorted by target). A caller that builds them chunk by
        chunk never holds the inputs of all :math:`E` edges: with the
        shipped model those are 64 bytes per edge, about 22 GiB for 5.21M
        nodes of 70 Top-K edges each, against one chunk's here.

        :obj:`h` holds the states after the input projection
        (:meth:`embed`), :obj:`[N, channels]`; this method owns it and
        overwrites it. :obj:`topk` and :obj:`num_active` are those of
        :meth:`inference`.
        """
        num_nodes = h.size(0)
        per_target = isinstance(topk, Tensor) and topk.dim() == 1
        for layer in range(len(self.blocks)):
            active = num_nodes if num_active is None else int(num_active[layer])
            out = torch.empty_like(h) if active == num_nodes else h.clone()
            for lo in range(0, active, chunk_size):
                hi = min(active, lo + chunk_size)
                edge_index, edge_attr, edge_rank = edges(lo, hi)
                out[lo:hi] = self.layer_chunk(
                    layer,
                    h,
                    lo,
                    hi,
                    edge_index,
                    edge_attr,
                    topk[lo:hi] if per_target else topk,
                    edge_rank,
                )
            h = out
        for lo in range(0, num_nodes, chunk_size):
            h[lo : lo + chunk_size] = self.norm(h[lo : lo + chunk_size])
        return h

    def layer_chunk(
        self,
        layer: int,
        h: Tensor,
        lo: int,
        hi: int,
        edge_index: Tensor,
        edge_attr: Tensor | None = None,
        topk: int | Tensor | None = None,
        edge_rank: Tensor | None = None,
    ) -> Tensor:
        r"""One block of :meth:`inference`: the states after block
        :obj:`layer` of the target nodes :math:`[lo, hi)`, from the states
        :obj:`h` before it (all nodes, :obj:`[N, H]`) and the edges into those
        targets (global ids; :obj:`topk` per target of the chunk or one
        value). Reads only the rows of :obj:`h` the edges' sources and the
        targets need: projecting all of :obj:`h` for every chunk would cost
        :math:`O(N)` per chunk.
        """
        src, sub_src = torch.unique(edge_index[0], return_inverse=True)
        sub = torch.stack([sub_src, edge_index[1] - lo])
        return self.blocks[layer]((h[src], h[lo:hi]), sub, edge_attr, topk, edge_rank)[
            0
        ]
