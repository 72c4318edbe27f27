from __future__ import annotations

import contextlib
import inspect
import json
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from torch_geometric_sdt.defaults import DEFAULT_K
from torch_geometric_sdt.metrics import choose_threshold, threshold_sweep
from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.models.diagnostics import data_statistics, diagnose
from torch_geometric_sdt.nn.models.knn_context import (
    KNNContext,
    band_positions,
    topk_positions,
)
from torch_geometric_sdt.nn.models.sdt import EdgeHead, SDTEncoder
from torch_geometric_sdt.nn.models.sdt_config import check_config
from torch_geometric_sdt.nn.models.sdt_distributed import cluster_ray
from torch_geometric_sdt.nn.models.topk_predictor import TopKPredictor
from torch_geometric_sdt.utils.checkpoint import load_tensors, save_tensors
from torch_geometric_sdt.utils.distributed import check_engine
from torch_geometric_sdt.utils.infomap import cluster_links
from torch_geometric_sdt.utils.knn_features import (
    NUM_EDGE_FEATURES,
    NUM_TOKEN_FEATURES,
    SimilarityScale,
    edge_features,
    token_features,
)
from torch_geometric_sdt.utils.precision import check_precision, inference_precision
from torch_geometric_sdt.utils.rank import position_in_target
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard
from torch_geometric_sdt.version import __version__

CHECKPOINT_FORMAT = 'torch_geometric_sdt.SDTClusterer'
CHECKPOINT_VERSION = 1
#: The :math:`\eta` values :meth:`SDTClusterer.tune_eta` and training try.
DEFAULT_ETA_GRID = tuple(round(0.05 * i, 2) for i in range(2, 20))
#: Pairwise F-scores within this of the best count as equally good in
#: :func:`choose_eta`.
ETA_TOLERANCE = 1e-3
#: The default band :math:`(b_-, b_+)` of ranks around each node's Top-K
#: boundary that the SDT scores (and, with the veto, every Top-K pair).
DEFAULT_BAND = (2, 10)
#: Nodes per batch of :meth:`SDTClusterer.predict_topk`. A batch's
#: activations (:math:`256 \times 80` tokens of 64 channels, the default
#: width, 5 MiB each) stay in the CPU caches: about 1.9x faster than batches
#: of 4096 on two cores, with the same output (``benchmarks/chunk_sizes.py``,
#: measured at that width).
TOPK_BATCH_SIZE = 256
#: The quantile of the Top-K predictor's distribution taken as :math:`K_i`
#: (:meth:`TopKPredictor.predict`). Measured against the mode (the rule
#: before) and the quantiles 0.5 and 0.55 on the regime benchmark's cells at
#: 256-d and the four LFW halvings, and against the mode and the median at a
#: million synthetic faces: the quantiles lower the Top-K error on almost
#: every cell; 0.45 has the best worst cell (the median over-predicts on the
#: crowded ``dense`` cell, where the mode already does) and the best
#: BCubed F at a million faces.
TOPK_QUANTILE = 0.45
#: Target nodes per chunk of :meth:`SDTClusterer.node_states` (the SDT
#: encoder's layer-wise inference). Each chunk reads only its edges'
#: sources, so the time hardly depends on it (54 s at 8192 and 45 s at 65536
#: for 1M nodes), while the chunk's memory (about 1.6 KB per edge) does:
#: 8192 keeps it near 0.2 GiB.
NODE_CHUNK_SIZE = 8192
#: Pairs per chunk of :meth:`SDTClusterer.score_band`; chosen like
#: :obj:`TOPK_BATCH_SIZE`.
BAND_CHUNK_SIZE = 1 << 15
#: Nodes per chunk of :meth:`SDTClusterer.final_link_positions`: the masks
#: and candidate links of one chunk (up to 80 MiB at :math:`k = 80`) are
#: all it holds beyond the links it keeps.
LINK_CHUNK_SIZE = 1 << 14


def spread_key(pos: Tensor) -> Tensor:
    r"""A fixed pseudo-random key in :math:`[0, 2^{24})` of every flat
    position, :obj:`float32` (exact): a 32-bit integer mix (two rounds of
    xor-shift and multiply) of the position folded to 32 bits. Keeping the
    links of the smallest keys keeps an unbiased subset of a node's links,
    the same whatever the chunks, order or process."""
    x = (pos ^ (pos >> 32)) & 0xFFFFFFFF
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (x >> 16) ^ x
    return (x >> 8).to(torch.float32)


def check_max_links(max_links: int | None) -> None:
    r"""Raises :class:`ValueError` unless :obj:`max_links` (the links per
    node that :meth:`SDTClusterer.cluster` keeps) is :obj:`None` or a
    positive int."""
    bad = isinstance(max_links, bool) or not isinstance(max_links, int)
    if max_links is not None and (bad or max_links < 1):
        raise ValueError(
            f'max_links must be a positive int or None (got {max_links!r})'
        )


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module) -> Iterator[None]:
    # Runs a block in eval mode and gives every submodule back the mode the
    # caller left it in.
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class SDTClusterer(torch.nn.Module):
    r"""Face clustering with a learned Top-K, the Top-K Jaccard and a Sparse
    Differential Transformer, from `"Enhancing Noise Resilience in Face
    Clustering via Sparse Differential Transformer"
    <https://arxiv.org/abs/2512.22612>`_.

    The pipeline on embeddings :math:`\mathbf{X}`:

    1. the kNN graph (:math:`k` neighbours, self first);
    2. each node's Top-K :math:`K_i` from a :class:`TopKPredictor` over its
       neighbour tokens;
    3. the Top-K Jaccard :math:`J_{ij}` of every kNN edge
       (:func:`~torch_geometric_sdt.utils.topk_jaccard`);
    4. node states :math:`\mathbf{h}` from a stack of SDT blocks
       (:class:`~torch_geometric_sdt.nn.models.sdt.SDTEncoder`) whose
       attention only sees each node's Top-K edges;
    5. an :class:`~torch_geometric_sdt.nn.models.sdt.EdgeHead` scoring
       pairs as same identity, :math:`P_{ij}`: it is trained on the pairs
       with ranks in the band :math:`[K_i - b_-, K_i + b_+)` around the
       Top-K boundary, and at inference scores that band and, with
       :obj:`veto=True`, every Top-K pair as well (:meth:`scored_positions`);
    6. the final directed graph, node :math:`\to` neighbour:

       .. math::
           w_{ij} = \begin{cases}
           J_{ij} & 1 \le r_{ij} < K_i,\ J_{ij} \ge \theta,\
               \text{and } P_{ij} \ge \eta_v \text{ if vetoing} \\
           P_{ij} & K_i \le r_{ij} < K_i + b_+,\ P_{ij} \ge \eta
           \end{cases}

       and two-level directed Infomap on it; a node without an edge of its
       own is a singleton. With :obj:`veto=True` the SDT both removes the
       Top-K edges it scores below :math:`\eta_v` (:obj:`veto_eta`,
       :math:`\eta` unless set) and adds boundary edges beyond the Top-K
       that it scores at least :math:`\eta`. The veto is what makes the SDT
       step count: the Top-K predictor now and then gives a one-off face a
       long Top-K (the list of a large identity near it); that node then
       links, with a high Top-K Jaccard, into every identity of its list,
       and one such bridge merges two large clusters. Its edges to other
       identities are the ones the edge head scores low. Measured per regime by
       ``benchmarks/regime_ablation.py`` (veto on and off). With
       :obj:`veto=False` (version 0.1 models) every Top-K edge is kept and
       the SDT only adds edges.

    Two input modes: :obj:`'relational'` builds every feature from the kNN
    structure with similarities standardised by the data set's own scale
    (:mod:`~torch_geometric_sdt.utils.knn_features`), so one model serves
    embeddings of any dimension and cosine scale; :obj:`'embedding'` also
    feeds the raw embeddings (it must be trained on the same feature space).

    Args:
        k (int, optional): kNN list length, self included. (default: :obj:`80`)
        mode (str, optional): :obj:`'relational'` or :obj:`'embedding'`.
            (default: :obj:`'relational'`)
        embedding_channels (int, optional): Embedding dimension
            (:obj:`'embedding'` mode). (default: :obj:`None`)
        hidden_channels (int, optional): Width of the SDT blocks.
            (default: :obj:`64`)
        num_layers (int, optional): SDT blocks. (default: :obj:`2`)
        heads (int, optional): Attention heads. (default: :obj:`4`)
        differential (bool, optional): :obj:`False` for vanilla attention
            (ablation). (default: :obj:`True`)
        num_experts (int, optional): :obj:`> 0` for MoE-SDT.
            (default: :obj:`0`)
        moe_top (int, optional): Experts per node in MoE-SDT.
            (default: :obj:`2`)
        predictor (str, optional): Top-K predictor, :obj:`'transformer'` or
            :obj:`'lstm'`. (default: :obj:`'transformer'`)
        predictor_channels (int, optional): Width of the Top-K predictor.
            (default: :obj:`64`)
        predictor_layers (int, optional): Its layers. (default: :obj:`2`)
        band (tuple, optional): :math:`(b_-, b_+)`. (default: :obj:`(2, 10)`)
        veto (bool, optional): Score every Top-K pair at inference and drop
            the Top-K edges whose :math:`P_{ij}` is below :math:`\eta`
            (checkpoints without this key load with :obj:`False`).
            (default: :obj:`True`)
        eta (float, optional): Threshold :math:`\eta` on :math:`P_{ij}`;
            :meth:`fit` chooses it on held-out training identities.
            (default: :obj:`0.5`)
        veto_eta (float, optional): Threshold :math:`\eta_v` below which
            the veto drops a Top-K edge; :obj:`None` vetoes below
            :math:`\eta` (the only rule before, with which checkpoints
            without this key load). The veto and the added edges answer
            different errors (a bridge out of a long Top-K; a face the
            Top-K left out), so they may want different thresholds
            (:meth:`tune_eta` with :obj:`veto=True`). (default: :obj:`None`)
        theta (float, optional): Floor :math:`\theta` on :math:`J_{ij}`.
            (default: :obj:`0.0`)
        transform (str, optional): Distance-to-probability transform of the
            Top-K Jaccard, :obj:`'sigmoid'` or :obj:`'exp'`.
            (default: :obj:`'sigmoid'`)
        dropout (float, optional): Dropout. (default: :obj:`0.0`)
        reference (str, optional): The reference that standardises
            similarities (:mod:`~torch_geometric_sdt.utils.knn_features`):
            :obj:`'random_pairs'` (the noise level of random pairs of the
            embeddings; a graph given without embeddings falls back to
            :obj:`'knn'` with a warning) or :obj:`'knn'` (the kNN
            similarities themselves, the only reference of version 0.1;
            checkpoints without this key load with it).
            (default: :obj:`'random_pairs'`)
        topk_quantile (float, optional): :math:`K_i` is this quantile
            :math:`q \in (0, 1)` of the Top-K predictor's distribution
            (:meth:`TopKPredictor.predict`); :obj:`None` takes its mode
            (the only rule before, with which checkpoints without this key
            load). (default: :obj:`0.45`)
    """

    def __init__(
        self,
        k: int = DEFAULT_K,
        mode: str = 'relational',
        embedding_channels: int | None = None,
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 4,
        differential: bool = True,
        num_experts: int = 0,
        moe_top: int = 2,
        predictor: str = 'transformer',
        predictor_channels: int = 64,
        predictor_layers: int = 2,
        band: tuple[int, int] | list[int] = DEFAULT_BAND,
        veto: bool = True,
        eta: float = 0.5,
        theta: float = 0.0,
        transform: str = 'sigmoid',
        dropout: float = 0.0,
        reference: str = 'random_pairs',
        topk_quantile: float | None = TOPK_QUANTILE,
        veto_eta: float | None = None,
    ) -> None:
        super().__init__()
        band = check_config(
            k=k,
            mode=mode,
            embedding_channels=embedding_channels,
            hidden_channels=hidden_channels,
            num_layers=num_layers,
            heads=heads,
            num_experts=num_experts,
            moe_top=moe_top,
            predictor=predictor,
            predictor_channels=predictor_channels,
            predictor_layers=predictor_layers,
            band=band,
            veto=veto,
            eta=eta,
            theta=theta,
            transform=transform,
            dropout=dropout,
            reference=reference,
            topk_quantile=topk_quantile,
            veto_eta=veto_eta,
        )
        self.config: dict[str, Any] = dict(
            k=k,
            mode=mode,
            embedding_channels=embedding_channels if mode == 'embedding' else None,
            hidden_channels=hidden_channels,
            num_layers=num_layers,
            heads=heads,
            differential=differential,
            num_experts=num_experts,
            moe_top=moe_top,
            predictor=predictor,
            predictor_channels=predictor_channels,
            predictor_layers=predictor_layers,
            band=list(band),
            veto=veto,
            eta=float(eta),
            theta=float(theta),
            transform=transform,
            dropout=dropout,
            reference=reference,
            topk_quantile=None if topk_quantile is None else float(topk_quantile),
            veto_eta=None if veto_eta is None else float(veto_eta),
        )
        emb = self.config['embedding_channels']
        self.topk_predictor = TopKPredictor(
            k,
            NUM_TOKEN_FEATURES,
            predictor_channels,
            predictor_layers,
            heads=heads,
            arch=predictor,
            embedding_channels=emb,
            dropout=dropout,
        )
        self.encoder = SDTEncoder(
            (k - 1) + 1 + (emb or 0),
            hidden_channels,
            num_layers,
            heads=heads,
            edge_dim=NUM_EDGE_FEATURES,
            differential=differential,
            num_experts=num_experts,
            moe_top=moe_top,
            dropout=dropout,
        )
        self.edge_head = EdgeHead(hidden_channels, NUM_EDGE_FEATURES, hidden_channels)
        #: The range of the self-diagnosis statistics over the training data
        #: sets (:mod:`~torch_geometric_sdt.nn.models.diagnostics`), set by
        #: training and kept in checkpoints; :obj:`None` if unknown.
        self.train_range: dict[str, list[float]] | None = None
        self.precision = 'float32'

    @property
    def precision(self) -> str:
        r"""The precision of the Top-K predictor's matrix products at
        inference (:meth:`predict_topk`), one of
        :data:`~torch_geometric_sdt.utils.precision.PRECISIONS`:
        :obj:`'float32'`, :obj:`'bfloat16'` or :obj:`'auto'` (bfloat16 where
        the device multiplies it natively, float32 elsewhere). A runtime
        setting, not stored in checkpoints. On a CPU with AVX-512 BF16 or
        AMX, bfloat16 takes the Top-K stage of 1M faces in 0.61 of its
        float32 time and moves a few :math:`K_i`
        (``benchmarks/results/precision.md``). (default: :obj:`'float32'`)"""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    # Plain attributes that mirror the config:
    @property
    def k(self) -> int:
        return self.config['k']

    @property
    def mode(self) -> str:
        return self.config['mode']

    @property
    def band(self) -> tuple[int, int]:
        return tuple(self.config['band'])  # type: ignore[return-value]

    def reset_parameters(self) -> None:
        self.topk_predictor.reset_parameters()
        self.encoder.reset_parameters()
        self.edge_head.reset_parameters()

    def __repr__(self) -> str:
        c = self.config
        return (
            f'{self.__class__.__name__}(k={c["k"]}, mode={c["mode"]!r}, '
            f'hidden_channels={c["hidden_channels"]}, num_layers={c["num_layers"]}, '
            f'heads={c["heads"]}, differential={c["differential"]}, '
            f'num_experts={c["num_experts"]}, predictor={c["predictor"]!r}, '
            f'predictor_channels={c["predictor_channels"]})'
        )

    # ------------------------------------------------------------------
    # Features
    # ------------------------------------------------------------------
    def tokens(self, ctx: KNNContext, nodes: Tensor) -> tuple[Tensor, Tensor | None]:
        """Neighbour tokens of :obj:`nodes` for the Top-K predictor."""
        tok = token_features(ctx.knn.sim[nodes], ctx.shared[nodes], ctx.scale, nodes)
        emb = None
        if self.mode == 'embedding':
            emb = ctx.x[ctx.knn.index[nodes]]  # type: ignore[index]
        return tok, emb

    def node_features(self, ctx: KNNContext, nodes: Tensor, topk: Tensor) -> Tensor:
        r"""Node inputs of the SDT encoder: the standardised similarity
        profile of ranks :math:`1..k-1`, :math:`K_i / k` (and the embedding).
        """
        parts = [
            ctx.scale.standardize(ctx.knn.sim[nodes, 1:].float(), nodes),
            topk[nodes].float().unsqueeze(1) / self.k,
        ]
        if self.mode == 'embedding':
            parts.append(ctx.x[nodes])  # type: ignore[index]
        return torch.cat(parts, dim=1)

    def pair_features(self, ctx: KNNContext, pos: Tensor, jaccard: Tensor) -> Tensor:
        """Features of the kNN edges at flat positions :obj:`pos`."""
        return edge_features(
            ctx.knn.sim.view(-1)[pos],
            pos % self.k,
            jaccard.view(-1)[pos],
            ctx.shared.view(-1)[pos],
            self.k,
            ctx.scale,
            pos // self.k,
        )

    # ------------------------------------------------------------------
    # Forward (training) and stage-wise inference
    # ------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        topk: Tensor,
        edge_rank: Tensor,
        pair_index: Tensor,
        pair_attr: Tensor,
    ) -> tuple[Tensor, Tensor]:
        r"""Scores candidate pairs on a (sub)graph.

        Args:
            x (torch.Tensor): Node inputs :obj:`[N, F]`
                (:meth:`node_features`).
            edge_index (torch.Tensor): kNN edges :math:`j \to i`
                :obj:`[2, E]`.
            edge_attr (torch.Tensor): Their features :obj:`[E, 4]`.
            topk (torch.Tensor): :math:`K_i` per node :obj:`[N]`.
            edge_rank (torch.Tensor): Rank of every edge in its target's list.
            pair_index (torch.Tensor): Pairs :math:`(i, j)` :obj:`[2, P]`.
            pair_attr (torch.Tensor): Their features :obj:`[P, 4]`.

        Returns:
            (logits, aux): Same-identity logits :obj:`[P]` and the auxiliary
            (MoE load-balancing) loss.
        """
        h, aux = self.encoder(x, edge_index, edge_attr, topk, edge_rank)
        return self.edge_head(h[pair_index[0]], h[pair_index[1]], pair_attr), aux

    @torch.no_grad()
    def predict_topk(
        self,
        ctx: KNNContext,
        batch_size: int = TOPK_BATCH_SIZE,
        progress: bool = False,
        nodes: Tensor | None = None,
    ) -> Tensor:
        """Predicts :math:`K_i` for every node, :obj:`LongTensor[N]`, or for
        the given :obj:`nodes` only, :obj:`LongTensor[B]` (in eval mode; the
        module's mode is left as it was). A node's prediction reads only its
        own kNN list, so it does not depend on which other nodes are asked
        (nor on the batch size, at either precision).

        The predictor's products run at :attr:`precision`; in bfloat16 its
        token embedding, layer norms, softmax and the quantile of
        :meth:`TopKPredictor.predict` stay in float32. On two cores with AMX,
        bfloat16 took 139 s against 227 s for 1M faces (two runs the same
        day) and 0.72 of the float32 time at 100,000 (interleaved in one
        process); it gives another :math:`K_i`
        to 0 to 1.6 % of the nodes of the regime cells of
        ``benchmarks/precision.py`` (6.3 % on a 32-d draw), mostly one rank
        away, which can flip a merge.
        """
        if nodes is None:
            nodes = torch.arange(ctx.num_nodes)
        out = torch.empty(nodes.numel(), dtype=torch.long)
        starts = range(0, nodes.numel(), batch_size)
        with _evaluating(self):
            for lo in tqdm(starts, desc='Top-K', disable=not progress):
                batch = nodes[lo : lo + batch_size]
                tokens, emb = self.tokens(ctx, batch)
                with inference_precision(self.precision, tokens.device):
                    logits = self.topk_predictor(tokens, emb)
                out[lo : lo + batch.numel()] = TopKPredictor.predict(
                    logits.float(), self.config['topk_quantile']
                )
        return out

    def jaccard(
        self,
        ctx: KNNContext,
        topk: Tensor,
        progress: bool = False,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Top-K Jaccard of every kNN edge, :obj:`[N, k]`; with
        :obj:`positions`, of the edges at those flat positions alone,
        :obj:`[P]` (the same values)."""
        return topk_jaccard(
            ctx.knn,
            topk=topk,
            transform=self.config['transform'],
            positions=positions,
            progress=progress,
        ).float()

    def subgraph_inputs(
        self, ctx: KNNContext, nodes: Tensor, topk: Tensor, jaccard: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Top-K edges :math:`j \to i` of the target :obj:`nodes` (global
        ids), sorted by target: :obj:`(edge_index, edge_attr, edge_rank,
        positions)`.
        """
        pos = topk_positions(nodes, topk, self.k)
        target = pos // self.k
        source = ctx.knn.index.view(-1)[pos]
        edge_index = torch.stack([source, target])
        return edge_index, self.pair_features(ctx, pos, jaccard), pos % self.k, pos

    @torch.no_grad()
    def node_states(
        self,
        ctx: KNNContext,
        topk: Tensor,
        jaccard: Tensor,
        chunk_size: int = NODE_CHUNK_SIZE,
        nodes: Tensor | None = None,
    ) -> Tensor:
        r"""SDT node states of every node, :obj:`[N, H]`, layer by layer in
        chunks (in eval mode; the module's mode is left as it was). Every
        chunk of :obj:`chunk_size` target nodes makes the inputs of its own
        Top-K edges (:meth:`subgraph_inputs`,
        :meth:`SDTEncoder.chunked_inference`), so those of all edges are
        never held at once.

        With :obj:`nodes` (sorted ids), the states of those nodes only,
        :obj:`[B, H]`, computed on their receptive field: the state of node
        :math:`i` after :math:`L` layers reads the Top-K edges :math:`j \to
        i` within :math:`L` hops upstream of :math:`i`, so the encoder runs
        on that closure alone and gives the same states as the full graph.
        The closure is ordered by the distance to :obj:`nodes`
        (:meth:`receptive_field`), and layer :math:`l` updates only the nodes
        within :math:`L - 1 - l` hops, the only ones a later layer reads.
        """
        if nodes is None:
            return self._all_node_states(ctx, topk, jaccard, chunk_size)
        field, within = self.receptive_field(ctx, topk, nodes)
        num_active = within[:-1].flip(0).tolist()
        edge_index, edge_attr, edge_rank, _ = self.subgraph_inputs(
            ctx, field, topk, jaccard
        )
        # Relabel into the closure; edges from outside it feed only states of
        # its outer ring, which no node asked for reads.
        local = torch.full((ctx.num_nodes,), -1, dtype=torch.long)
        local[field] = torch.arange(field.numel())
        inside = local[edge_index[0]] >= 0
        edge_index = local[edge_index[:, inside]]
        edge_attr, edge_rank = edge_attr[inside], edge_rank[inside]
        with _evaluating(self):
            h = self.encoder.inference(
                self._embedded(ctx, field, topk, chunk_size),
                edge_index,
                edge_attr,
                topk[field],
                edge_rank,
                chunk_size=chunk_size,
                num_active=num_active,
                embedded=True,
            )
        return h[: nodes.numel()]  # The nodes come first, in order.

    def _embedded(
        self, ctx: KNNContext, field: Tensor, topk: Tensor, chunk_size: int
    ) -> Tensor:
        # The node features are projected chunk by chunk: the [B, k] inputs
        # of every node are never held at once.
        chunks = (
            self.node_features(ctx, field[lo : lo + chunk_size], topk)
            for lo in range(0, field.numel(), chunk_size)
        )
        return self.encoder.embed(chunks, field.numel())

    def _all_node_states(
        self, ctx: KNNContext, topk: Tensor, jaccard: Tensor, chunk_size: int
    ) -> Tensor:
        # The Top-K edges of every node: each chunk of targets makes its own
        # edge inputs (64 bytes per edge), so those of all E edges are never
        # held at once (SDTEncoder.chunked_inference).
        def edges(lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
            return self.subgraph_inputs(ctx, torch.arange(lo, hi), topk, jaccard)[:3]

        with _evaluating(self):
            return self.encoder.chunked_inference(
                self._embedded(ctx, torch.arange(ctx.num_nodes), topk, chunk_size),
                edges,
                topk,
                chunk_size=chunk_size,
            )

    def receptive_field(
        self, ctx: KNNContext, topk: Tensor, nodes: Tensor
    ) -> tuple[Tensor, Tensor]:
        r"""The nodes within :math:`L` (the encoder's layers) Top-K hops
        upstream of :obj:`nodes` (sorted ids), ordered by (hops, id):
        :math:`U_0 = \mathrm{nodes}`, :math:`U_{l+1} = U_l \cup \{j : j \in
        \mathcal{N}_i(K_i), i \in U_l\}`.

        Returns:
            (field, within): the nodes, and :math:`|U_0|, \dots, |U_L|`
            (:obj:`LongTensor[L + 1]`): the first :math:`|U_l|` nodes are
            :math:`U_l`.
        """
        num_layers = self.config['num_layers']
        hops = torch.full((ctx.num_nodes,), num_layers + 1, dtype=torch.long)
        hops[nodes] = 0
        frontier = nodes
        for hop in range(1, num_layers + 1):
            pos = topk_positions(frontier, topk, self.k)
            source = ctx.knn.index.view(-1)[pos]
            source = source[hops[source] > hop]
            hops[source] = hop
            frontier = torch.unique(source)
        field = (hops <= num_layers).nonzero().view(-1)
        field = field[torch.argsort(hops[field], stable=True)]
        counts = torch.bincount(hops[field], minlength=num_layers + 1)
        return field, torch.cumsum(counts, 0)

    def scored_positions(self, topk: Tensor) -> Tensor:
        r"""Flat positions :math:`i k + r` of the pairs the edge head scores
        at inference: the band :math:`[K_i - b_-, K_i + b_+)` and, with
        :obj:`veto=True`, every Top-K pair too (ranks :math:`1 \le r < K_i
        + b_+`).
        """
        below = self.k if self.config['veto'] else self.band[0]
        return band_positions(topk, self.k, (below, self.band[1]))

    @torch.no_grad()
    def score_band(
        self,
        ctx: KNNContext,
        topk: Tensor,
        jaccard: Tensor,
        h: Tensor,
        chunk_size: int = BAND_CHUNK_SIZE,
        pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Same-identity probabilities of the pairs at flat positions
        :obj:`pos` (default: :meth:`scored_positions`):
        :obj:`(positions, probabilities)` (in eval mode; the module's mode is
        left as it was).
        """
        if pos is None:
            pos = self.scored_positions(topk)
        prob = torch.empty(pos.numel())
        with _evaluating(self):
            for lo in range(0, pos.numel(), chunk_size):
                p = pos[lo : lo + chunk_size]
                i, j = p // self.k, ctx.knn.index.view(-1)[p]
                feat = self.pair_features(ctx, p, jaccard)
                prob[lo : lo + chunk_size] = self.edge_head(h[i], h[j], feat).sigmoid()
        return pos, prob

    def final_links(
        self,
        ctx: KNNContext,
        topk: Tensor,
        jaccard: Tensor,
        band_pos: Tensor,
        band_prob: Tensor,
        eta: float | None = None,
        theta: float | None = None,
        max_links: int | None = None,
        *,
        veto_eta: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The final weighted links node :math:`\to` neighbour (see the class
        docstring): :obj:`(edge_index [2, M], weight [M])`; the arguments are
        those of :meth:`final_link_positions`.
        """
        pos, weight = self.final_link_positions(
            topk, jaccard, band_pos, band_prob, eta, theta, max_links, veto_eta=veto_eta
        )
        edge_index = torch.stack([pos // self.k, ctx.knn.index.view(-1)[pos]])
        return edge_index, weight

    def final_link_positions(
        self,
        topk: Tensor,
        jaccard: Tensor,
        band_pos: Tensor,
        band_prob: Tensor,
        eta: float | None = None,
        theta: float | None = None,
        max_links: int | None = None,
        chunk_size: int = LINK_CHUNK_SIZE,
        *,
        veto_eta: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""The final links as flat kNN positions :math:`i k + r` and their
        weights, :obj:`(pos [M], weight [M])` (see :meth:`final_links`): the
        Top-K pairs :math:`1 \le r < K_i` with Top-K Jaccard :math:`J \ge
        \theta`, weighted by :math:`J`, less those the edge head vetoes
        (probability below :math:`\eta_v`, with ``veto``), then the scored
        pairs beyond the Top-K with probability :math:`\ge \eta`, weighted
        by it; weights are floored at :math:`10^{-6}`.

        With :obj:`max_links` :math:`L`, every node keeps at most :math:`L`
        of its links, a fixed pseudo-random subset (those of the smallest
        :func:`spread_key` of their positions). A node of a large identity
        has a Top-K pair for nearly every face of it (about 70 for
        MS-Celeb-like identities of 50 to 120 faces), far more than Infomap
        needs to keep the identity together, and Infomap's memory grows with
        the links: about 106 bytes each. A random subset keeps the identity
        one well-connected module; the :math:`L` strongest links would not:
        they tie each node to its tightest few neighbours, and the identity
        falls apart into cliques (``benchmarks/link_cap.py``).

        The nodes are handled :obj:`chunk_size` at a time, so that the masks
        and candidate links of all nodes are never held at once.

        Args:
            topk (torch.Tensor): :math:`K_i`, :obj:`LongTensor[N]`.
            jaccard (torch.Tensor): Top-K Jaccard of every kNN entry,
                :obj:`[N, k]`.
            band_pos (torch.Tensor): Flat positions of the scored pairs,
                ascending (as :meth:`scored_positions` gives them).
            band_prob (torch.Tensor): Their probabilities.
            eta (float, optional): :math:`\eta`; the model's if :obj:`None`.
            theta (float, optional): :math:`\theta`; the model's if
                :obj:`None`.
            max_links (int, optional): :math:`L`, at least 1; no limit if
                :obj:`None`. (default: :obj:`None`)
            chunk_size (int, optional): Nodes per chunk.
                (default: :obj:`16384`)
            veto_eta (float, optional): :math:`\eta_v`; the model's if
                :obj:`None`, and :math:`\eta` if the model has none.
        """
        check_max_links(max_links)
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be at least 1 (got {chunk_size})')
        if band_pos.numel() > 1 and bool((band_pos[1:] < band_pos[:-1]).any()):
            raise ValueError('band_pos must be in ascending order')
        eta = self.config['eta'] if eta is None else eta
        if veto_eta is None:
            veto_eta = self.config['veto_eta']
        veto_eta = eta if veto_eta is None else veto_eta
        theta = self.config['theta'] if theta is None else theta
        k, num_nodes = self.k, topk.numel()
        rank = torch.arange(k)
        starts = torch.arange(0, num_nodes + chunk_size, chunk_size).clamp(
            max=num_nodes
        )
        bounds = torch.searchsorted(band_pos, starts * k).tolist()
        none = torch.empty(0, dtype=torch.long)
        pos_in, pos_out = [none], [none]
        w_in, w_out = [jaccard.new_empty(0)], [band_prob.new_empty(0)]
        for c, (lo, hi) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist())):
            bpos = band_pos[bounds[c] : bounds[c + 1]]
            bprob = band_prob[bounds[c] : bounds[c + 1]]
            # Inside the Top-K: kept with weight J (floor theta) unless
            # vetoed (the scored Top-K pairs below veto_eta).
            inside = (rank >= 1) & (rank < topk[lo:hi].unsqueeze(1))
            inside &= jaccard[lo:hi] >= theta
            band_inside = (bpos % k) < topk[bpos // k]
            if self.config['veto']:
                veto = bpos[band_inside & (bprob < veto_eta)] - lo * k
                inside.view(-1)[veto] = False
            p_in = inside.view(-1).nonzero().view(-1) + lo * k
            # Beyond the Top-K, in the band: added when the SDT says same
            # identity.
            keep = (bprob >= eta) & ~band_inside
            p_out, q_out = bpos[keep], bprob[keep]
            q_in = jaccard.view(-1)[p_in]
            if max_links is not None:
                # Each node keeps the candidates of the max_links smallest
                # hashes of their positions: a fixed pseudo-random subset.
                cand = torch.cat([p_in, p_out])
                order = position_in_target(-spread_key(cand), cand // k - lo, hi - lo)
                kept = order < max_links
                kept_in, kept_out = kept[: p_in.numel()], kept[p_in.numel() :]
                p_in, q_in = p_in[kept_in], q_in[kept_in]
                p_out, q_out = p_out[kept_out], q_out[kept_out]
            pos_in.append(p_in)
            w_in.append(q_in)
            pos_out.append(p_out)
            w_out.append(q_out)
        pos = torch.cat(pos_in + pos_out)
        del pos_in, pos_out
        weight = torch.cat(w_in + w_out)
        return pos, weight.clamp(min=1e-6)

    @torch.no_grad()
    def cluster(
        self,
        x: Tensor | np.ndarray | None = None,
        *,
        graph: KNN | None = None,
        topk: Tensor | None = None,
        eta: float | None = None,
        seed: int = 123,
        num_trials: int = 1,
        backend: str = 'auto',
        progress: bool = False,
        return_details: bool = False,
        engine: str = 'local',
        address: str | None = None,
        on_topk: Callable[[Tensor], None] | None = None,
        max_links: int | None = None,
        scale: SimilarityScale | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        r"""Clusters embeddings :obj:`x` (or a precomputed kNN :obj:`graph`).

        Args:
            x (torch.Tensor or numpy.ndarray or FeatureShards, optional):
                Embeddings :obj:`[N, D]`; sharded embeddings
                (:class:`~torch_geometric_sdt.utils.distributed.FeatureShards`)
                with :obj:`engine='ray'`. (default: :obj:`None`)
            graph (KNN, optional): A precomputed kNN graph with this model's
                :math:`k`. (default: :obj:`None`)
            topk (torch.Tensor, optional): A per-node Top-K to use instead of
                the predicted one (*e.g.* the oracle, for ablations).
                (default: :obj:`None`)
            eta (float, optional): Overrides the stored :math:`\eta`, in
                :math:`[0, 1]`. (default: :obj:`None`)
            seed (int, optional): Infomap's seed. (default: :obj:`123`)
            num_trials (int, optional): Infomap trials. (default: :obj:`1`)
            backend (str, optional): kNN backend. (default: :obj:`'auto'`)
            progress (bool, optional): Progress bars. (default: :obj:`False`)
            return_details (bool, optional): Also return a dict with the
                intermediate results (:obj:`topk`, :obj:`jaccard`,
                :obj:`band_pos`, :obj:`band_prob`, :obj:`ctx`, and
                :obj:`diagnostics`: the self-diagnosis statistics of
                :mod:`~torch_geometric_sdt.nn.models.diagnostics` with the
                :obj:`warnings` they raised; with :obj:`engine='ray'` also
                :obj:`engine`: per-stage tasks, seconds and bytes).
                (default: :obj:`False`)
            engine (str, optional): :obj:`'local'` or :obj:`'ray'`: every
                stage but Infomap as tasks on a Ray cluster
                (:mod:`~torch_geometric_sdt.nn.models.sdt_distributed`; the
                kNN search is the exact sharded one, so :obj:`backend` must
                be :obj:`'auto'` or :obj:`'exact'`). Both engines compute the
                same chunks; a few scores can round their last bit
                differently in a worker process, so the partitions agree up
                to that (equal on the tests' data and at 1,000,000 faces; at
                200,000 faces equal with one worker, a pairwise F of 0.99865
                between them with two).
                (default: :obj:`'local'`)
            address (str, optional): The Ray cluster to join
                (:func:`~torch_geometric_sdt.utils.distributed.connect`).
                (default: :obj:`None`)
            on_topk (callable, optional): Called with the per-node Top-K
                :obj:`LongTensor[N]` (predicted or given) once it is known:
                with :obj:`engine='local'` before the stages whose size it
                sets (Top-K Jaccard, SDT, links, Infomap), with
                :obj:`engine='ray'` before the links and Infomap on the
                driver. An exception it raises stops the run there;
                ``sdt cluster`` checks the memory of those stages at the
                predicted mean Top-K with it. (default: :obj:`None`)
            max_links (int, optional): At most this many links per node go
                to Infomap, the strongest
                (:meth:`final_link_positions`); Infomap's memory and time
                follow the links, and a node of a large identity has one
                per face of it. :obj:`None` keeps every link.
                (default: :obj:`None`)
            scale (SimilarityScale, optional): The similarity scale to
                standardise with instead of the one estimated from
                :obj:`x` (the model's reference), *e.g.*
                :func:`~torch_geometric_sdt.utils.noise_scale` of a whole
                collection, to cluster parts of it on one noise level: the
                scale is the one statistic of the whole input the SDT reads.
                (default: :obj:`None`)

        Returns:
            torch.Tensor: Cluster ids :obj:`LongTensor[N]`, consecutive from 0.

        When the data look unlike the training data (see
        :mod:`~torch_geometric_sdt.nn.models.diagnostics`), one
        :class:`UserWarning` says how and what to do.
        """
        if eta is not None and not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f'eta must lie in [0, 1] (got {eta})')
        check_max_links(max_links)
        check_engine(engine)
        stats = None
        if engine == 'ray':
            ctx, topk, jac, band_pos, band_prob, stats = cluster_ray(
                self,
                x,
                graph=graph,
                topk=topk,
                backend=backend,
                address=address,
                chunks=dict(
                    topk=TOPK_BATCH_SIZE, nodes=NODE_CHUNK_SIZE, band=BAND_CHUNK_SIZE
                ),
                progress=progress,
                scale=scale,
            )
        else:
            if address is not None:
                raise ValueError("address is an option of engine='ray'")
            ctx = self.context(
                x, graph=graph, backend=backend, progress=progress, scale=scale
            )
            if topk is None:
                topk = self.predict_topk(ctx, progress=progress)
        diagnostics = data_statistics(ctx, topk)
        diagnostics['warnings'] = diagnose(
            diagnostics, self.k, self.config['reference'], self.train_range
        )
        if diagnostics['warnings']:
            warnings.warn('; '.join(diagnostics['warnings']), stacklevel=3)
        if on_topk is not None:
            on_topk(topk)
        if engine == 'local':
            jac = self.jaccard(ctx, topk, progress=progress)
            h = self.node_states(ctx, topk, jac)
            band_pos, band_prob = self.score_band(ctx, topk, jac, h)
            del h
        edge_index, weight = self.final_links(
            ctx, topk, jac, band_pos, band_prob, eta, max_links=max_links
        )
        num_nodes = ctx.num_nodes
        if not return_details:
            # Infomap reads the links alone: the scores and the context
            # (set Jaccard, scale) go first, about 0.9 KiB per node.
            del ctx, jac, band_pos, band_prob
        labels = cluster_links(
            edge_index,
            weight,
            num_nodes,
            seed=seed,
            num_trials=num_trials,
            progress=progress,
        )
        if return_details:
            details = dict(
                topk=topk,
                jaccard=jac,
                band_pos=band_pos,
                band_prob=band_prob,
                ctx=ctx,
                diagnostics=diagnostics,
            )
            if stats is not None:
                details['engine'] = stats.as_dict()
            return labels, details
        return labels

    def context(
        self,
        x: Tensor | np.ndarray | None = None,
        *,
        graph: KNN | None = None,
        backend: str = 'auto',
        progress: bool = False,
        scale: SimilarityScale | None = None,
    ) -> KNNContext:
        r"""What this model reads from a data set
        (:class:`~torch_geometric_sdt.nn.models.KNNContext`), built with its
        :math:`k`, input mode and similarity reference; give the embeddings
        :obj:`x`, a precomputed kNN :obj:`graph`, or both (a relational
        model needs :obj:`x` for its :obj:`'random_pairs'` reference, unless
        a :obj:`scale` is given, see :meth:`cluster`).
        """
        ctx = KNNContext.build(
            x,
            self.k,
            graph=graph,
            keep_x=self.mode == 'embedding',
            reference=self.config['reference'],
            backend=backend,
            progress=progress,
            scale=scale,
        )
        emb = self.config['embedding_channels']
        if self.mode == 'embedding' and ctx.x is not None and ctx.x.size(1) != emb:
            raise ValueError(
                f'this model was trained on {emb}-d embeddings; got '
                f'{ctx.x.size(1)}-d (use a relational model for other spaces)'
            )
        return ctx

    # ------------------------------------------------------------------
    # Tuning and checkpoints
    # ------------------------------------------------------------------
    @torch.no_grad()
    def tune_eta(
        self,
        x: Tensor | np.ndarray | None,
        y: Tensor | np.ndarray,
        *,
        graph: KNN | None = None,
        grid: tuple[float, ...] | None = None,
        backend: str = 'auto',
        veto: bool = False,
    ) -> list[dict[str, Any]]:
        r"""Chooses :math:`\eta` on labelled embeddings without retraining
        (*e.g.* a few labelled identities of your own data): clusters them at
        every :math:`\eta` of :obj:`grid` (the network runs once) and keeps
        the centre of the values with the best pairwise F-score
        (:func:`choose_eta`). Training
        (:func:`~torch_geometric_sdt.train.fit`) does the same on its
        validation identities. Never tune on the data you
        evaluate on.

        Args:
            x (torch.Tensor or numpy.ndarray, optional): Embeddings
                :obj:`[N, D]` (or :obj:`None` with :obj:`graph`).
            y (torch.Tensor or numpy.ndarray): Their identity labels.
            graph (KNN, optional): A precomputed kNN graph.
                (default: :obj:`None`)
            grid (tuple, optional): Candidate values (default:
                :obj:`DEFAULT_ETA_GRID`).
            backend (str, optional): kNN backend. (default: :obj:`'auto'`)
            veto (bool, optional): Choose the veto's :math:`\eta_v`
                (:obj:`config['veto_eta']`) at the model's :math:`\eta`
                instead, among the candidates up to :math:`\eta`
                (:func:`choose_eta` with :obj:`veto=True`).
                (default: :obj:`False`)

        Returns:
            list: Every candidate's metrics; the chosen value is stored in
            :obj:`config['eta']` (:obj:`config['veto_eta']`).
        """
        y = torch.as_tensor(y).long()
        ctx = self.context(x, graph=graph, backend=backend)
        if y.shape != (ctx.num_nodes,):
            raise ValueError(
                f'y must have shape [{ctx.num_nodes}] (got {list(y.shape)})'
            )
        topk = self.predict_topk(ctx)
        grid = grid or DEFAULT_ETA_GRID
        if veto:
            grid = tuple(v for v in grid if v <= self.config['eta'])
        eta, sweep = choose_eta(
            self, ctx, topk, self.jaccard(ctx, topk), y, grid, veto=veto
        )
        self.config['veto_eta' if veto else 'eta'] = eta
        return sweep

    def save(
        self, path: str | Path, *, overwrite: bool = False, extra: dict | None = None
    ) -> Path:
        """Saves weights (safetensors) with the JSON config in its header
        (:mod:`~torch_geometric_sdt.utils.checkpoint`).
        """
        meta = {
            'library_version': __version__,
            'config': json.dumps(self.config),
            'extra': json.dumps(extra or {}),
            'train_range': json.dumps(self.train_range),
        }
        return save_tensors(
            path,
            self.state_dict(),
            format=CHECKPOINT_FORMAT,
            version=CHECKPOINT_VERSION,
            metadata=meta,
            overwrite=overwrite,
        )

    @classmethod
    def load(cls, path: str | Path) -> SDTClusterer:
        """Loads a checkpoint written by :meth:`save`. Only tensors and a JSON
        header are read: nothing is unpickled.
        """
        model, _ = cls.load_with_metadata(path)
        return model

    @classmethod
    def load_with_metadata(cls, path: str | Path) -> tuple[SDTClusterer, dict]:
        """Like :meth:`load`, also returning the checkpoint's extra metadata."""
        state, meta = load_tensors(
            path,
            format=CHECKPOINT_FORMAT,
            version=CHECKPOINT_VERSION,
            kind='checkpoint',
            description='an SDTClusterer checkpoint',
        )
        try:
            config = json.loads(meta['config'])
        except (KeyError, ValueError) as e:
            raise ValueError(f'{path} has no valid JSON config ({e})') from e
        if not isinstance(config, dict):
            raise ValueError(f'{path} has a config that is not a JSON object')
        known = set(inspect.signature(cls.__init__).parameters) - {'self'}
        # Version 0.1 checkpoints predate the choice of reference and the
        # veto, and earlier ones the Top-K quantile (they took the mode):
        config.setdefault('reference', 'knn')
        config.setdefault('veto', False)
        config.setdefault('topk_quantile', None)
        unknown = set(config) - known
        if unknown:
            raise ValueError(f'{path} has unknown config keys {sorted(unknown)}')
        try:
            model = cls(**config)
        except (TypeError, ValueError) as e:
            raise ValueError(f'{path} has an invalid config ({e})') from e
        bad = [name for name, value in state.items() if not value.isfinite().all()]
        if bad:
            raise ValueError(
                f'{path} has NaN or infinite weights ({len(bad)} tensor(s), '
                f'first: {bad[0]})'
            )
        missing, unexpected, wrong = _state_mismatch(model, state)
        if missing or unexpected or wrong:
            parts = [
                f'{what} {names[:3]}{" ..." if len(names) > 3 else ""}'
                for what, names in (
                    ('missing', missing),
                    ('unexpected', unexpected),
                    ('wrong shape', wrong),
                )
                if names
            ]
            raise ValueError(f'{path} does not match its config: {"; ".join(parts)}')
        model.load_state_dict(state, strict=True)
        model.train_range = _train_range(meta.get('train_range', 'null'), path)
        model.eval()
        try:
            extra = json.loads(meta.get('extra', '{}'))
        except ValueError as e:
            raise ValueError(f'{path} has no valid JSON extra metadata ({e})') from e
        return model, extra


def _train_range(text: str, path: str | Path) -> dict[str, list[float]] | None:
    # The self-diagnosis range of a checkpoint header (untrusted input).
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f'{path} has no valid JSON train_range ({e})') from e
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(b, (int, float)) and math.isfinite(b) for b in v)
        for v in value.values()
    ):
        raise ValueError(f'{path} has an invalid train_range')
    return {str(k): [float(v[0]), float(v[1])] for k, v in value.items()}


def _state_mismatch(
    model: torch.nn.Module, state: dict[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    # Missing, unexpected and wrongly shaped tensors of a state dict.
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(
        name for name in set(own) & set(state) if own[name].shape != state[name].shape
    )
    return missing, unexpected, wrong


@torch.no_grad()
def choose_eta(
    model: SDTClusterer,
    ctx: KNNContext,
    topk: Tensor,
    jaccard: Tensor,
    y: Tensor,
    grid: tuple[float, ...] = DEFAULT_ETA_GRID,
    groups: Tensor | None = None,
    veto: bool = False,
) -> tuple[float, list[dict[str, Any]]]:
    r"""Clusters labelled items at every :math:`\eta` of :obj:`grid` (the
    network runs once, only the final links change) and returns the chosen
    value and every value's metrics (averaged over the data sets of
    :obj:`groups` when the items pool several,
    :func:`~torch_geometric_sdt.metrics.threshold_sweep`).

    The choice is the median of the values whose pairwise F-score is within
    :obj:`ETA_TOLERANCE` of the best
    (:func:`~torch_geometric_sdt.metrics.choose_threshold`). A validation
    split is small and often saturates over a wide plateau of :math:`\eta`,
    while the data the model meets later is larger and denser in look-alike
    identities; the centre of the plateau is the value least sensitive to
    that shift (on held-out synthetic faces it beat both ends of the
    plateau).

    With :obj:`veto=True` the values are the veto's :math:`\eta_v` at the
    model's :math:`\eta`, and the BCubed F-score chooses them the same way.
    The veto decides whether a face stays attached to the identities of its
    Top-K, which the per-item BCubed score follows: on 200,000 LFW-like
    synthetic faces pairwise F stayed within 0.0001 from :math:`\eta_v` =
    0.3 to 0.75 while BCubed F fell from 0.9554 to 0.9542.
    """
    h = model.node_states(ctx, topk, jaccard)
    band, prob = model.score_band(ctx, topk, jaccard, h)
    key = 'veto_eta' if veto else 'eta'

    def cluster(value: float) -> Tensor:
        links, weight = model.final_links(
            ctx, topk, jaccard, band, prob, **{key: value}
        )
        return cluster_links(links, weight, ctx.num_nodes)

    sweep = threshold_sweep(cluster, grid, y, key=key, groups=groups)
    metric = 'bcubed_fscore' if veto else 'pairwise_fscore'
    chosen = choose_threshold(sweep, key=key, metric=metric, tolerance=ETA_TOLERANCE)
    return chosen, sweep


__all__ = [
    'SDTClusterer',
    'KNNContext',
    'choose_eta',
    'check_max_links',
    'spread_key',
    'DEFAULT_ETA_GRID',
    'ETA_TOLERANCE',
    'CHECKPOINT_FORMAT',
    'CHECKPOINT_VERSION',
]
