r"""Differential attention with a Top-K mask as a message-passing layer."""

from __future__ import annotations

import importlib.util
import linecache
import math
import os
import sys
import tempfile
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptTensor, PairTensor, SparseTensor
from torch_geometric.utils import degree, is_torch_sparse_tensor, scatter
from torch_geometric.utils.sparse import set_sparse_value

from torch_geometric_sdt.utils.rank import edge_rank as rank_by_similarity
from torch_geometric_sdt.utils.rank import position_in_target
from torch_geometric_sdt.utils.softmax import masked_softmax
from torch_geometric_sdt.utils.validation import check_choice, check_int, check_topk

MASK_MODES = ('rank', 'logit')


class AttentionMaps(NamedTuple):
    r"""The attention maps of :class:`SparseDiffAttention`, one row per edge,
    as returned by :meth:`SparseDiffAttention.attention_maps`.

    All maps are given in the edge order of :obj:`edge_index` (for sparse
    layouts: the row-major order of the transposed adjacency, *i.e.* edges
    sorted by target, then source), before dropout.

    Attributes:
        alpha (torch.Tensor): The map used to aggregate, :obj:`[E, H]`:
            :math:`a^{(1)} - \lambda a^{(2)}` for differential attention (it
            **can be negative**, and its rows sum to :math:`1 - \lambda`), or
            the single softmax map for vanilla attention.
        alpha_1 (torch.Tensor): The first softmax map :obj:`[E, H]`.
        alpha_2 (torch.Tensor, optional): The second softmax map :obj:`[E, H]`
            (:obj:`None` for vanilla attention).
    """

    alpha: Tensor
    alpha_1: Tensor
    alpha_2: OptTensor


def lambda_init_fn(layer_idx: int) -> float:
    r"""The initial :math:`\lambda` of Differential Transformer V1,
    :math:`0.8 - 0.6 \exp(-0.3 l)` for the 0-based layer index :math:`l`.
    """
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


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
    gets :math:`m_{j,i} = -\infty` if :math:`r_{j,i} \geq K_i` and
    :math:`r_{j,i} > 0`, before **both** softmaxes (never
    zero-and-renormalise after the signed difference). Masking keeps the edge
    set fixed, so shapes do not depend on :math:`K` (explainers and
    :func:`torch.compile` see the same graph). The rank is :obj:`edge_rank`
    if given (*e.g.* from
    :meth:`~torch_geometric_sdt.nn.knn.KNN.to_edge_index`); otherwise it is
    derived from a one-dimensional :obj:`edge_attr` read as a similarity, by
    :func:`~torch_geometric_sdt.utils.edge_rank`: self-loops first
    (non-bipartite input only), then by descending similarity, ties by
    ascending source index, then edge order, the order
    :func:`~torch_geometric_sdt.utils.topk_jaccard` and
    :class:`~torch_geometric_sdt.transforms.TopKJaccard` use, so that they
    pick the same Top-K sets. Without either, a :class:`ValueError` is
    raised. With :obj:`mask_mode='logit'` the rank is instead the position of
    each logit among its target's logits, per head and per map (the
    top-:math:`\kappa` logits are kept, :math:`\kappa = \max(K_i, 1)`, ties
    by edge order); no rank input is needed then.

    **Targets left without edges.** Rank 0 is never masked, so a target that
    holds its rank-0 edge keeps at least one edge. A target whose incoming
    edges all have :math:`r_{j,i} \geq K_i` -- possible when edges were
    dropped after ranking, *e.g.* by
    :class:`~torch_geometric.loader.NeighborLoader` sampling, which can drop
    the rank-0 (self) edge while :obj:`edge_rank` keeps the ranks of the full
    graph -- has all of them masked: both maps are zero on it, its
    aggregation is zero, and its output is the root term
    :math:`\mathbf{W}_s \mathbf{x}_i` alone (zero with
    :obj:`root_weight=False`), as for a target without edges. Eager calls
    then emit one :class:`UserWarning` giving the number of such targets
    (compiled calls skip the check, which needs a host sync). To avoid it,
    rank the edges of the sampled graph: pass the similarity as a
    one-dimensional :obj:`edge_attr` instead of :obj:`edge_rank`, or
    recompute :obj:`edge_rank` with :func:`~torch_geometric_sdt.utils.edge_rank`.
    :obj:`mask_mode='logit'` always keeps :math:`\kappa \geq 1` edges per
    target with edges.

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
            The logit mask costs one stable sort of :math:`|\mathcal{E}|`
            keys per head and map (:math:`2H` sorts; the target and the logit
            are packed into one exact 64-bit key, see
            :func:`~torch_geometric_sdt.utils.position_in_target`), which the
            rank mask does not need: on CPU (20K nodes with 40 edges each,
            4 heads of 32 channels, 2 threads, forward), the rank mask takes
            1.15x the time of
            :class:`~torch_geometric.nn.conv.TransformerConv` and the logit
            mask 1.66x. (default: :obj:`'rank'`)
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
          :obj:`(out, (edge_index, alpha))` of
          :class:`~torch_geometric.nn.conv.GATv2Conv`, with :obj:`alpha` of
          shape :math:`(|\mathcal{E}|, H)`.
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

        check_int('out_channels', out_channels, minimum=1)
        check_int('heads', heads, minimum=1)
        check_int('layer_idx', layer_idx, minimum=0)
        check_choice('mask_mode', mask_mode, MASK_MODES)
        if differential and out_channels % 2 != 0:
            raise ValueError(
                f'out_channels must be even for differential '
                f'attention (two maps of width out_channels / 2, '
                f'got {out_channels})'
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1) (got {dropout})')

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

    def _set_jittable_templates(self, raise_on_error: bool = False) -> None:
        # PyG renders propagate() and edge_updater() of each class into
        # modules written to $TMPDIR and never removes them. Once imported,
        # the source is kept in memory (tracebacks, inspect) and the files go.
        super()._set_jittable_templates(raise_on_error)
        prefix = f'{type(self).__module__}_{type(self).__name__}'
        for name in (f'{prefix}_propagate', f'{prefix}_edge_updater'):
            _forget_template_file(name)

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
    ) -> Tensor | tuple[Tensor, tuple[Adj, Tensor]]:
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
                order of sparse layouts, see :class:`AttentionMaps`).
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If set to :obj:`True`,
                additionally returns the tuple :obj:`(edge_index, alpha)`, as
                :class:`~torch_geometric.nn.conv.GATv2Conv` does:
                :obj:`alpha` :obj:`[E, H]` is the map used to aggregate
                (:math:`a^{(1)} - \lambda a^{(2)}`, signed, before dropout),
                and a :class:`torch_sparse.SparseTensor` or
                :class:`torch.sparse.Tensor` :obj:`edge_index` comes back
                with :obj:`alpha` as its values. The two softmax maps are
                returned by :meth:`attention_maps`. (default: :obj:`None`)
        """
        H, C = self.heads, self.out_channels
        x, edge_emb, maps = self._attend(x, edge_index, edge_attr, topk, edge_rank)
        value = self.lin_value(x[0]).view(-1, H, C)

        # propagate_type: (value: Tensor, alpha: Tensor, edge_emb: OptTensor)
        out = self.propagate(
            edge_index,
            value=value,
            edge_emb=edge_emb,
            alpha=F.dropout(maps.alpha, p=self.dropout, training=self.training),
            size=(x[0].size(0), x[1].size(0)),
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
            alpha = maps.alpha
            if isinstance(edge_index, SparseTensor):
                return out, (edge_index.set_value(alpha, layout='coo'), alpha)
            if is_torch_sparse_tensor(edge_index):
                return out, (set_sparse_value(edge_index, alpha), alpha)
            return out, (edge_index, alpha)
        return out

    def attention_maps(
        self,
        x: Tensor | PairTensor,
        edge_index: Adj,
        edge_attr: OptTensor = None,
        topk: int | Tensor | None = None,
        edge_rank: OptTensor = None,
    ) -> AttentionMaps:
        r"""Returns the attention maps :meth:`forward` computes on the same
        inputs, without aggregating: the map used to aggregate and the two
        softmax maps :math:`a^{(1)}` and :math:`a^{(2)}` (before dropout).
        Takes the arguments of :meth:`forward`.

        Example:
            >>> maps = conv.attention_maps(x, edge_index, topk=8,
            ...                            edge_rank=rank)
            >>> maps.alpha_1.shape  # [E, heads]; zero on masked edges
        """
        return self._attend(x, edge_index, edge_attr, topk, edge_rank)[2]

    def _attend(
        self,
        x: Tensor | PairTensor,
        edge_index: Adj,
        edge_attr: OptTensor,
        topk: int | Tensor | None,
        edge_rank: OptTensor,
    ) -> tuple[PairTensor, OptTensor, AttentionMaps]:
        r"""Checks the inputs and computes the attention maps; returns the
        node features as a pair, the edge embedding and the maps.
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
            topk = check_topk(topk, num_targets)
            if isinstance(topk, Tensor):
                topk = topk.to(x[1].device)
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
        if not self.differential:
            return x, edge_emb, AttentionMaps(alpha_1, alpha_1, None)
        alpha_2 = attn[..., 1]
        alpha = alpha_1 - self.get_lambda().to(attn.dtype) * alpha_2
        return x, edge_emb, AttentionMaps(alpha, alpha_1, alpha_2)

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
                    edge_rank = rank_by_similarity(
                        torch.stack([edge_index_j, index]),
                        edge_sim,
                        num_targets,
                        self_first=self_first,
                    )
                elif edge_rank.numel() != num_edges:
                    raise ValueError(
                        f"'edge_rank' has {edge_rank.numel()} "
                        f'entries for {num_edges} edges'
                    )
                keep = (edge_rank < topk) | (edge_rank == 0)
                if not torch.compiler.is_compiling():
                    _warn_on_emptied_targets(keep, index, num_targets)
                keep = keep.view(-1, 1, 1)
            logits = logits.masked_fill(~keep, float('-inf'))

        return masked_softmax(logits, index, num_targets)

    def message(self, value_j: Tensor, alpha: Tensor, edge_emb: OptTensor) -> Tensor:
        if edge_emb is not None:
            value_j = value_j + edge_emb
        return value_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        extra = ''
        if not self.concat:
            extra += ', concat=False'
        if self.edge_dim is not None:
            extra += f', edge_dim={self.edge_dim}'
        if self.mask_mode != 'rank':
            extra += f", mask_mode='{self.mask_mode}'"
        return (
            f'{self.__class__.__name__}({self.in_channels}, '
            f'{self.out_channels}, heads={self.heads}, '
            f'differential={self.differential}{extra})'
        )


class _InMemorySource:
    r"""Loader stand-in that serves a generated module's source from memory,
    for :mod:`linecache` (tracebacks) and :mod:`inspect` once its file is
    gone."""

    def __init__(self, source: str) -> None:
        self.source = source

    def get_source(self, name: str) -> str:
        return self.source


def _forget_template_file(module_name: str) -> None:
    r"""Removes the file (and any bytecode cache) that PyG's template
    renderer wrote to the temporary directory for the loaded module
    :obj:`module_name`, keeping its source in memory. Files outside the
    temporary directory, or not named after the module, are left alone.
    """
    module = sys.modules.get(module_name)
    path = getattr(module, '__file__', None)
    loader = getattr(module, '__loader__', None)
    if not path or isinstance(loader, _InMemorySource):
        return
    name = os.path.basename(path)
    folder = os.path.realpath(os.path.dirname(path))
    if (
        folder != os.path.realpath(tempfile.gettempdir())
        or not name.startswith(f'{module_name}_')
        or not name.endswith('.py')
    ):
        return
    try:
        with open(path, encoding='utf-8') as f:
            source = f.read()
    except OSError:
        return
    module.__loader__ = _InMemorySource(source)
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    try:
        os.remove(path)
    except OSError:
        pass
    try:  # Bytecode written beside it (unless PYTHONDONTWRITEBYTECODE):
        cached = importlib.util.cache_from_source(path)
        os.remove(cached)
    except (NotImplementedError, OSError):
        return
    try:  # Its folder, only if nothing else is in it.
        os.rmdir(os.path.dirname(cached))
    except OSError:
        pass


def _warn_on_emptied_targets(keep: Tensor, index: Tensor, num_targets: int) -> None:
    r"""Warns once if the Top-K mask :obj:`keep` :obj:`[E]` leaves a target
    that has edges without any (reads one number from the device).
    """
    kept = scatter(keep.to(torch.long), index, 0, num_targets, reduce='sum')
    has_edges = degree(index, num_targets, dtype=torch.long) > 0
    num_emptied = int((has_edges & (kept == 0)).sum())
    if num_emptied > 0:
        warnings.warn(
            f'{num_emptied} target node(s) have incoming edges but none of '
            f'rank 0 or rank < topk (e.g. neighbour sampling dropped their '
            f'rank-0 edge), so the Top-K mask removes all of them: they get '
            f'zero attention and output the root term alone. Rank the edges '
            f'of the sampled graph (pass a one-dimensional edge_attr '
            f'similarity, or torch_geometric_sdt.utils.edge_rank) to avoid '
            f'this',
            UserWarning,
            stacklevel=2,
        )
