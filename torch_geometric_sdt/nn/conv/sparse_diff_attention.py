r"""Differential attention with a Top-K mask as a message-passing layer."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor, PairTensor, SparseTensor
from torch_geometric.utils import degree, is_torch_sparse_tensor, scatter
from torch_geometric.utils.sparse import set_sparse_value

MASK_MODES = ('rank', 'logit')


class AttentionWeights(NamedTuple):
    r"""The attention maps of :class:`SparseDiffAttention`, one row per edge.

    All maps are given in the edge order of :obj:`edge_index` (for sparse
    layouts: the row-major order of the transposed adjacency, *i.e.* edges
    sorted by target, then source).

    Attributes:
        edge_index (torch.Tensor or SparseTensor): The adjacency as given to
            :meth:`SparseDiffAttention.forward`; sparse layouts carry
            :obj:`alpha` as their values (as in
            :class:`~torch_geometric.nn.conv.GATv2Conv`).
        alpha (torch.Tensor): The map used to aggregate, :obj:`[E, H]`:
            :math:`a^{(1)} - \lambda a^{(2)}` for differential attention (it
            **can be negative**, and its rows sum to :math:`1 - \lambda`), or
            the single softmax map for vanilla attention.
        alpha_1 (torch.Tensor): The first softmax map :obj:`[E, H]`.
        alpha_2 (torch.Tensor, optional): The second softmax map :obj:`[E, H]`
            (:obj:`None` for vanilla attention).
    """

    edge_index: Adj
    alpha: Tensor
    alpha_1: Tensor
    alpha_2: OptTensor


def lambda_init_fn(layer_idx: int) -> float:
    r"""The initial :math:`\lambda` of Differential Transformer V1,
    :math:`0.8 - 0.6 \exp(-0.3 l)` for the 0-based layer index :math:`l`.
    """
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


def position_in_target(
    score: Tensor,
    index: Tensor,
    num_targets: int,
    tiebreak: OptTensor = None,
) -> Tensor:
    r"""Ranks every edge among the edges of its target by descending
    :obj:`score`: 0 for the highest score of a target, 1 for the next, ...

    Uses two (three with :obj:`tiebreak`) stable sorts and one segment offset,
    so all shapes are static (usable under :func:`torch.compile` with
    :obj:`fullgraph=True`). Ties go to the smaller :obj:`tiebreak` value, then
    to the earlier edge.

    Args:
        score (torch.Tensor): Scores :obj:`[E, *]`; every trailing column is
            ranked on its own.
        index (torch.Tensor): Target of every edge :obj:`[E]`.
        num_targets (int): Number of targets.
        tiebreak (torch.Tensor, optional): Secondary key :obj:`[E]`, ascending.
            (default: :obj:`None`)

    Returns:
        :obj:`LongTensor` of the shape of :obj:`score`.
    """
    score = score.detach()
    shape = (-1,) + (1,) * (score.dim() - 1)
    num_edges = score.size(0)
    if tiebreak is not None:
        perm = tiebreak.argsort(stable=True).view(shape).expand_as(score)
        perm = perm.gather(
            0, score.gather(0, perm).argsort(dim=0, descending=True, stable=True)
        )
    else:
        perm = score.argsort(dim=0, descending=True, stable=True)
    target = index.view(shape).expand_as(score).gather(0, perm)
    order = target.argsort(dim=0, stable=True)
    perm = perm.gather(0, order)
    target = target.gather(0, order)
    count = degree(index, num_targets, dtype=torch.long)
    start = count.cumsum(0) - count
    arange = torch.arange(num_edges, device=score.device).view(shape)
    pos = arange - start[target]
    return torch.empty_like(pos).scatter_(0, perm, pos)


def masked_softmax(src: Tensor, index: Tensor, num_targets: int) -> Tensor:
    r"""Softmax over the edges of every target, where :obj:`-inf` entries get
    probability 0 and a target whose entries are all :obj:`-inf` gets all
    zeros (not :obj:`NaN`, unlike :func:`torch_geometric.utils.softmax`).

    Args:
        src (torch.Tensor): Logits :obj:`[E, *]`.
        index (torch.Tensor): Target of every edge :obj:`[E]`.
        num_targets (int): Number of targets.
    """
    src_max = scatter(src.detach(), index, 0, num_targets, reduce='max')
    src_max = src_max.masked_fill(~torch.isfinite(src_max), 0.0)
    out = (src - src_max.index_select(0, index)).exp()
    out_sum = scatter(out, index, 0, num_targets, reduce='sum')
    out_sum = out_sum.clamp_min(torch.finfo(out.dtype).tiny)
    return out / out_sum.index_select(0, index)


class SparseDiffAttention(MessagePassing):
    r"""Differential attention with a sparse Top-K mask, from the `"Enhancing
    Noise Resilience in Face Clustering via Sparse Differential Transformer"
    <https://arxiv.org/abs/2512.22612>`_ paper, on top of the differential
    attention of `"Differential Transformer" <https://arxiv.org/abs/2410.05258>`_
    (V1).

    Every target node :math:`i` attends over its incoming edges only. Per head,
    queries and keys are split in two halves of width :math:`d = F_{out} / 2`,

    .. math::
        [\mathbf{q}^{(1)}_i; \mathbf{q}^{(2)}_i] = \mathbf{W}_q \mathbf{x}_i,
        \quad
        [\mathbf{k}^{(1)}_j; \mathbf{k}^{(2)}_j] = \mathbf{W}_k \mathbf{x}_j
        (+ \mathbf{W}_e \mathbf{e}_{j,i}),
        \quad
        \mathbf{v}_j = \mathbf{W}_v \mathbf{x}_j (+ \mathbf{W}_e
        \mathbf{e}_{j,i}),

    two attention maps are computed over :math:`\mathcal{N}(i)` under the same
    Top-K mask :math:`m_{j,i} \in \{0, -\infty\}`,

    .. math::
        a^{(t)}_{j,i} = \mathrm{softmax}_{j \in \mathcal{N}(i)} \left(
        \frac{\mathbf{q}^{(t)\top}_i \mathbf{k}^{(t)}_j}{\sqrt{d}} + m_{j,i}
        \right), \qquad t \in \{1, 2\},

    and their difference aggregates the values:

    .. math::
        \mathbf{h}_i = (1 - \lambda_{\text{init}}) \,
        \mathrm{RMSNorm} \Big( \sum_{j \in \mathcal{N}(i)}
        \big( a^{(1)}_{j,i} - \lambda \, a^{(2)}_{j,i} \big) \mathbf{v}_j \Big),
        \quad
        \lambda = e^{\boldsymbol{\lambda}_{q1} \cdot \boldsymbol{\lambda}_{k1}}
        - e^{\boldsymbol{\lambda}_{q2} \cdot \boldsymbol{\lambda}_{k2}}
        + \lambda_{\text{init}}.

    The four :math:`\boldsymbol{\lambda}` vectors (size :math:`d`, init
    :math:`\mathcal{N}(0, 0.1^2)`) are shared by the heads of the layer;
    :math:`\lambda_{\text{init}} = 0.8 - 0.6 \exp(-0.3 \, l)` for layer index
    :math:`l`. The RMSNorm (:math:`\epsilon = 10^{-5}`, one learnable scale of
    size :math:`F_{out}` shared by the heads) acts per head. Heads are then
    concatenated (or averaged) and, with :obj:`root_weight=True`, the skip
    term :math:`\mathbf{W}_s \mathbf{x}_i` is added, as in
    :class:`~torch_geometric.nn.conv.TransformerConv`. The output projection
    of the dense Differential Transformer is left to the next layer.

    The difference map :math:`a^{(1)} - \lambda a^{(2)}` **can be negative**:
    differential attention subtracts the attention noise shared by both maps
    and so lets a node push away neighbours, *e.g.* noisy faces near its
    Top-K boundary.

    **Top-K mask.** With :obj:`topk=K` (an int or one value per target), the
    edge :math:`j \to i` of rank :math:`r_{j,i}` in :math:`i`'s neighbour list
    gets :math:`m_{j,i} = -\infty` if :math:`r_{j,i} \geq K_i`, before
    **both** softmaxes (never zero-and-renormalise after the signed
    difference). Rank 0 is never masked, so no target is left empty. Masking
    keeps the edge set fixed, so shapes do not depend on :math:`K` (explainers
    and :func:`torch.compile` see the same graph). The rank is
    :obj:`edge_rank` if given (*e.g.* from
    :meth:`~torch_geometric_sdt.nn.knn.KNN.to_edge_index`); otherwise it is
    derived from a one-dimensional :obj:`edge_attr` read as a similarity:
    self-loops first (non-bipartite input only), then by descending
    similarity, ties by ascending source index. Without either, a
    :class:`ValueError` is raised. With :obj:`mask_mode='logit'` the rank is
    instead the position of each logit among its target's logits, per head
    and per map (the top-:math:`\kappa` logits are kept, :math:`\kappa = K_i`,
    ties by edge order); no rank input is needed then.

    **Self-loops** are not added (as in
    :class:`~torch_geometric.nn.conv.TransformerConv`): kNN graphs from this
    package already hold the self edge :math:`i \to i` at rank 0.

    **Vanilla counterpart.** :obj:`differential=False` computes one softmax
    map with queries and keys of full width :math:`F_{out}` under the same
    mask, with the same shapes and parameter count, for ablations. Its
    RMSNorm is off unless :obj:`norm=True`, and it has no :math:`\lambda`.

    Args:
        in_channels (int or tuple): Size of each input sample, or :obj:`-1` to
            derive the size from the first input(s) to the forward method.
            A tuple corresponds to the sizes of source and target
            dimensionalities.
        out_channels (int): Size of each head's output (the value width,
            :math:`2d`); must be even when :obj:`differential=True`.
        heads (int, optional): Number of heads. (default: :obj:`1`)
        concat (bool, optional): If set to :obj:`False`, the heads are
            averaged instead of concatenated. (default: :obj:`True`)
        dropout (float, optional): Dropout probability of the (difference)
            attention map. (default: :obj:`0.0`)
        edge_dim (int, optional): Edge feature dimensionality; edge features
            are embedded and added to keys and values as in
            :class:`~torch_geometric.nn.conv.TransformerConv`.
            (default: :obj:`None`)
        bias (bool, optional): If set to :obj:`False`, the query, key, value
            and skip projections learn no additive bias.
            (default: :obj:`True`)
        root_weight (bool, optional): If set to :obj:`False`, the transformed
            root features are not added to the output. (default: :obj:`True`)
        layer_idx (int, optional): 0-based depth of the layer, which sets
            :math:`\lambda_{\text{init}}`. (default: :obj:`0`)
        lambda_init (float, optional): Overrides
            :math:`\lambda_{\text{init}}`. (default: :obj:`None`)
        norm (bool, optional): Headwise RMSNorm (and, if differential, the
            :math:`(1 - \lambda_{\text{init}})` scale). :obj:`None` means on
            for differential and off for vanilla attention.
            (default: :obj:`None`)
        differential (bool, optional): If set to :obj:`False`, computes
            vanilla (single-map) attention. (default: :obj:`True`)
        mask_mode (str, optional): :obj:`'rank'` masks by neighbour rank,
            :obj:`'logit'` keeps the top-:math:`K_i` logits per target.
            (default: :obj:`'rank'`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` or a sparse adjacency,
          edge features :math:`(|\mathcal{E}|, D)` or :math:`(|\mathcal{E}|)`
          *(optional)*, top-K :obj:`int` or :math:`(|\mathcal{V}_t|)`
          *(optional)*, edge ranks :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}_t|, H * F_{out})`
          (or :math:`(|\mathcal{V}_t|, F_{out})` with :obj:`concat=False`).
          If :obj:`return_attention_weights=True`, the tuple
          :obj:`(out, AttentionWeights)` whose maps have shape
          :math:`(|\mathcal{E}|, H)`.
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        dropout: float = 0.0,
        edge_dim: int | None = None,
        bias: bool = True,
        root_weight: bool = True,
        layer_idx: int = 0,
        lambda_init: float | None = None,
        norm: bool | None = None,
        differential: bool = True,
        mask_mode: str = 'rank',
        **kwargs,
    ) -> None:
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)

        if out_channels < 1 or heads < 1:
            raise ValueError(
                f'out_channels and heads must be positive (got '
                f'{out_channels} and {heads})'
            )
        if differential and out_channels % 2 != 0:
            raise ValueError(
                f'out_channels must be even for differential '
                f'attention (two maps of width out_channels / 2, '
                f'got {out_channels})'
            )
        if mask_mode not in MASK_MODES:
            raise ValueError(
                f'mask_mode must be one of {MASK_MODES} (got {mask_mode!r})'
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1) (got {dropout})')
        if layer_idx < 0:
            raise ValueError(f'layer_idx must be >= 0 (got {layer_idx})')

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.dropout = dropout
        self.edge_dim = edge_dim
        self.root_weight = root_weight
        self.layer_idx = layer_idx
        self.lambda_init = (
            lambda_init_fn(layer_idx) if lambda_init is None else float(lambda_init)
        )
        self.differential = differential
        self.mask_mode = mask_mode
        self.num_maps = 2 if differential else 1
        self.head_dim = out_channels // self.num_maps

        if isinstance(in_channels, int):
            in_channels = (in_channels, in_channels)

        width = heads * out_channels
        self.lin_query = Linear(in_channels[1], width, bias=bias)
        self.lin_key = Linear(in_channels[0], width, bias=bias)
        self.lin_value = Linear(in_channels[0], width, bias=bias)
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, width, bias=False)
        else:
            self.register_module('lin_edge', None)
        if root_weight:
            self.lin_skip = Linear(
                in_channels[1], width if concat else out_channels, bias=bias
            )
        else:
            self.register_module('lin_skip', None)

        if differential:
            self.lambda_q1 = torch.nn.Parameter(torch.empty(self.head_dim))
            self.lambda_k1 = torch.nn.Parameter(torch.empty(self.head_dim))
            self.lambda_q2 = torch.nn.Parameter(torch.empty(self.head_dim))
            self.lambda_k2 = torch.nn.Parameter(torch.empty(self.head_dim))
        else:
            for name in ('lambda_q1', 'lambda_k1', 'lambda_q2', 'lambda_k2'):
                self.register_parameter(name, None)

        if norm is None:
            norm = differential
        if norm:
            self.norm = torch.nn.RMSNorm(out_channels, eps=1e-5)
        else:
            self.register_module('norm', None)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_query.reset_parameters()
        self.lin_key.reset_parameters()
        self.lin_value.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.lin_skip is not None:
            self.lin_skip.reset_parameters()
        if self.differential:
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                torch.nn.init.normal_(p, mean=0.0, std=0.1)
        if self.norm is not None:
            self.norm.reset_parameters()

    def get_lambda(self) -> Tensor:
        r"""Returns the current :math:`\lambda` (a 0-dim tensor; 0 for vanilla
        attention).
        """
        if not self.differential:
            return torch.zeros(())
        lambda_1 = torch.exp((self.lambda_q1 * self.lambda_k1).sum())
        lambda_2 = torch.exp((self.lambda_q2 * self.lambda_k2).sum())
        return lambda_1 - lambda_2 + self.lambda_init

    def forward(
        self,
        x: Tensor | PairTensor,
        edge_index: Adj,
        edge_attr: OptTensor = None,
        topk: int | Tensor | None = None,
        edge_rank: OptTensor = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, AttentionWeights]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node
                features.
            edge_index (torch.Tensor or SparseTensor): The edges
                :math:`j \to i`, as an :obj:`edge_index` or
                :class:`~torch_geometric.EdgeIndex`, a
                :class:`torch_sparse.SparseTensor` or a
                :class:`torch.sparse.Tensor`.
            edge_attr (torch.Tensor, optional): Edge features (used only with
                :obj:`edge_dim`), or, if one-dimensional, the edge similarity
                the rank is derived from when :obj:`edge_rank` is missing.
                (default: :obj:`None`)
            topk (int or torch.Tensor, optional): :math:`K`, for all targets
                or one per target (:obj:`LongTensor[num_targets]`; entries
                below 1 act as 1, so rank 0 stays); :obj:`None` disables the
                mask. (default: :obj:`None`)
            edge_rank (torch.Tensor, optional): Position of every edge in its
                target's neighbour list, :obj:`LongTensor[E]` (in the edge
                order of sparse layouts, see :class:`AttentionWeights`).
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If set to :obj:`True`,
                additionally returns an :class:`AttentionWeights` tuple.
                (default: :obj:`None`)
        """
        H, C, M, D = self.heads, self.out_channels, self.num_maps, self.head_dim

        bipartite = not isinstance(x, Tensor)
        if isinstance(x, Tensor):
            x = (x, x)
        if x[0].dim() != 2 or x[1].dim() != 2:
            raise ValueError(
                f'node features must be two-dimensional (got '
                f'shapes {list(x[0].shape)} and '
                f'{list(x[1].shape)})'
            )
        num_targets = x[1].size(0)

        edge_sim: OptTensor = None
        if topk is not None:
            topk = self._check_topk(topk, num_targets, x[1].device)
            if self.mask_mode == 'rank' and edge_rank is None:
                edge_sim = self._edge_sim(edge_attr)
        if edge_rank is not None:
            if edge_rank.dim() != 1 or edge_rank.is_floating_point():
                raise ValueError(
                    f'edge_rank must be a one-dimensional integer '
                    f'tensor (got dtype {edge_rank.dtype} and '
                    f'shape {list(edge_rank.shape)})'
                )

        edge_emb: OptTensor = None
        if self.lin_edge is not None:
            if edge_attr is None:
                raise ValueError(
                    f"'edge_attr' is required since edge_dim={self.edge_dim}"
                )
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            edge_emb = self.lin_edge(edge_attr).view(-1, H, C)

        query = self.lin_query(x[1]).view(-1, H, M, D)
        key = self.lin_key(x[0]).view(-1, H, M, D)
        value = self.lin_value(x[0]).view(-1, H, C)

        # edge_updater_type: (query: Tensor, key: Tensor, edge_emb: OptTensor,
        #                     edge_sim: OptTensor, edge_rank: OptTensor,
        #                     topk: OptTensor, self_first: bool)
        attn = self.edge_updater(
            edge_index,
            query=query,
            key=key,
            edge_emb=edge_emb,
            edge_sim=edge_sim,
            edge_rank=edge_rank,
            topk=topk,
            self_first=not bipartite,
        )

        alpha_1 = attn[..., 0]
        alpha_2: OptTensor = None
        if self.differential:
            alpha_2 = attn[..., 1]
            alpha = alpha_1 - self.get_lambda().to(attn.dtype) * alpha_2
        else:
            alpha = alpha_1

        # propagate_type: (value: Tensor, alpha: Tensor, edge_emb: OptTensor)
        out = self.propagate(
            edge_index,
            value=value,
            edge_emb=edge_emb,
            alpha=F.dropout(alpha, p=self.dropout, training=self.training),
            size=(x[0].size(0), num_targets),
        )

        if self.norm is not None:
            out = self.norm(out)
            if self.differential:
                out = out * (1.0 - self.lambda_init)

        if self.concat:
            out = out.reshape(-1, H * C)
        else:
            out = out.mean(dim=1)

        if self.lin_skip is not None:
            out = out + self.lin_skip(x[1])

        if return_attention_weights:
            adj: Adj = edge_index
            if isinstance(edge_index, SparseTensor):
                adj = edge_index.set_value(alpha, layout='coo')
            elif is_torch_sparse_tensor(edge_index):
                adj = set_sparse_value(edge_index, alpha)
            return out, AttentionWeights(adj, alpha, alpha_1, alpha_2)
        return out

    def _check_topk(
        self, topk: int | Tensor, num_targets: int, device: torch.device
    ) -> Tensor | int:
        if isinstance(topk, Tensor):
            if topk.is_floating_point() or topk.dim() > 1:
                raise ValueError(
                    f'topk must be an int or an integer tensor '
                    f'with one entry per target (got dtype '
                    f'{topk.dtype} and shape {list(topk.shape)})'
                )
            if topk.dim() == 0:
                return topk.to(device)
            if topk.numel() != num_targets:
                raise ValueError(
                    f'topk must have one entry per target node '
                    f'(got {topk.numel()} for {num_targets} '
                    f'targets)'
                )
            return topk.to(device)
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise ValueError(
                f'topk must be an int or a LongTensor (got {type(topk).__name__})'
            )
        if topk < 1:
            raise ValueError(f'topk must be >= 1 (got {topk})')
        return topk

    @staticmethod
    def _edge_sim(edge_attr: OptTensor) -> Tensor:
        if edge_attr is None:
            raise ValueError(
                "'topk' with mask_mode='rank' needs the rank of "
                "every edge: pass 'edge_rank', or a "
                "one-dimensional 'edge_attr' similarity to rank "
                "by, or use mask_mode='logit'"
            )
        if edge_attr.dim() == 2 and edge_attr.size(1) == 1:
            edge_attr = edge_attr.view(-1)
        if edge_attr.dim() != 1:
            raise ValueError(
                f'cannot derive edge ranks from a multi-'
                f"dimensional 'edge_attr' (shape "
                f"{list(edge_attr.shape)}): pass 'edge_rank'"
            )
        return edge_attr

    def edge_update(
        self,
        query_i: Tensor,
        key_j: Tensor,
        edge_emb: OptTensor,
        edge_sim: OptTensor,
        edge_rank: OptTensor,
        topk: Tensor | int | None,
        self_first: bool,
        edge_index_j: Tensor,
        index: Tensor,
        dim_size: int | None,
    ) -> Tensor:
        r"""Returns the masked softmax maps :obj:`[E, H, M]` (:math:`M = 2`
        for differential, 1 for vanilla attention).
        """
        H, M, D = self.heads, self.num_maps, self.head_dim
        num_targets = dim_size if dim_size is not None else query_i.size(0)
        if edge_emb is not None:
            key_j = key_j + edge_emb.view(-1, H, M, D)
        logits = (query_i * key_j).sum(dim=-1) * (D**-0.5)  # [E, H, M]

        if topk is not None:
            num_edges = logits.size(0)
            if isinstance(topk, Tensor) and topk.dim() == 1:
                topk = topk.index_select(0, index)
            if self.mask_mode == 'logit':
                pos = position_in_target(logits, index, num_targets)
                if isinstance(topk, Tensor):
                    topk = topk.clamp_min(1).view(-1, 1, 1)
                keep = pos < topk
            else:
                if edge_rank is None:
                    assert edge_sim is not None
                    if edge_sim.numel() != num_edges:
                        raise ValueError(
                            f"'edge_attr' has {edge_sim.numel()} "
                            f'entries for {num_edges} edges'
                        )
                    sim = edge_sim.detach()
                    if self_first:
                        sim = sim.masked_fill(edge_index_j == index, float('inf'))
                    edge_rank = position_in_target(
                        sim, index, num_targets, tiebreak=edge_index_j
                    )
                elif edge_rank.numel() != num_edges:
                    raise ValueError(
                        f"'edge_rank' has {edge_rank.numel()} "
                        f'entries for {num_edges} edges'
                    )
                keep = (edge_rank < topk) | (edge_rank == 0)
                keep = keep.view(-1, 1, 1)
            logits = logits.masked_fill(~keep, float('-inf'))

        return masked_softmax(logits, index, num_targets)

    def message(self, value_j: Tensor, alpha: Tensor, edge_emb: OptTensor) -> Tensor:
        if edge_emb is not None:
            value_j = value_j + edge_emb
        return value_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}({self.in_channels}, '
            f'{self.out_channels}, heads={self.heads}, '
            f'differential={self.differential})'
        )
