from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ARCHS = ('transformer', 'lstm')


class TopKPredictor(torch.nn.Module):
    r"""Predicts how many of its :math:`k` nearest neighbours a node should
    keep (its Top-K), as in `"Enhancing Noise Resilience in Face Clustering
    via Sparse Differential Transformer" <https://arxiv.org/abs/2512.22612>`_,
    where a Transformer replaces the LSTM of `"Ada-NETS"
    <https://arxiv.org/abs/2202.03800>`_.

    Node :math:`i` is read as the sequence of its :math:`k` neighbour tokens
    :math:`\mathbf{t}_{i,0}, \ldots, \mathbf{t}_{i,k-1}` (self first). Each
    token is embedded together with a learned rank embedding,

    .. math::
        \mathbf{e}_{i,r} = \mathbf{W}_t \mathbf{t}_{i,r} + \mathbf{p}_r
        \ (+ \mathbf{W}_x \mathbf{x}_{j_r} \text{ with embeddings}),

    encoded by a pre-norm Transformer encoder (or a bidirectional LSTM for
    the ablation), and every token scores "the list ends here":

    .. math::
        P(K_i = r + 1) = \mathrm{softmax}_r \left( \mathbf{w}^{\top}
        \mathrm{Enc}(\mathbf{e}_i)_r \right).

    Training minimises the cross-entropy against the oracle
    :math:`K^*_i` (:func:`~torch_geometric_sdt.utils.topk_target`). The
    prediction (:meth:`predict`) is a quantile :math:`q` of this
    distribution,

    .. math::
        K_i = \min \Big\{ r \in [1, k] : \sum_{s \le r} P(K_i = s) \ge q
        \Big\},

    or its mode, :math:`K_i = \arg\max_r P(K_i = r + 1) + 1`. The median
    (:math:`q = 1/2`) minimises the expected absolute error of :math:`K_i`,
    the mode its expected 0-1 error.

    Args:
        k (int): List length, self included.
        in_channels (int): Relational features per token.
        hidden_channels (int, optional): Width of the encoder.
            (default: :obj:`64`)
        num_layers (int, optional): Encoder layers. (default: :obj:`2`)
        heads (int, optional): Attention heads (Transformer only).
            (default: :obj:`4`)
        arch (str, optional): :obj:`'transformer'` or :obj:`'lstm'`.
            (default: :obj:`'transformer'`)
        embedding_channels (int, optional): Dimension of raw embeddings added
            to the tokens (the :obj:`'embedding'` input mode); :obj:`None` for
            relational tokens only. (default: :obj:`None`)
        dropout (float, optional): Dropout in the encoder.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** tokens :math:`(B, k, F)`, embeddings :math:`(B, k, D)`
          *(optional)*
        - **output:** logits :math:`(B, k)`
    """

    def __init__(
        self,
        k: int,
        in_channels: int,
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 4,
        arch: str = 'transformer',
        embedding_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f'arch must be one of {ARCHS} (got {arch!r})')
        if k < 1 or in_channels < 1 or hidden_channels < 1 or num_layers < 1:
            raise ValueError(
                'k, in_channels, hidden_channels and num_layers must be >= 1'
            )
        self.k = k
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.heads = heads
        self.arch = arch
        self.embedding_channels = embedding_channels

        self.lin_token = torch.nn.Linear(in_channels, hidden_channels)
        self.rank_emb = torch.nn.Embedding(k, hidden_channels)
        if embedding_channels is not None:
            self.lin_emb = torch.nn.Linear(embedding_channels, hidden_channels)
        else:
            self.register_module('lin_emb', None)
        if arch == 'transformer':
            layer = torch.nn.TransformerEncoderLayer(
                hidden_channels,
                heads,
                dim_feedforward=2 * hidden_channels,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
            )
            self.encoder = torch.nn.TransformerEncoder(
                layer, num_layers, enable_nested_tensor=False
            )
        else:
            if hidden_channels % 2 != 0:
                raise ValueError('hidden_channels must be even for the LSTM')
            self.encoder = torch.nn.LSTM(
                hidden_channels,
                hidden_channels // 2,
                num_layers=num_layers,
                batch_first=True,
                bidirectional=True,
                dropout=dropout if num_layers > 1 else 0.0,
            )
        self.norm = torch.nn.LayerNorm(hidden_channels)
        self.head = torch.nn.Linear(hidden_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is self:
                continue
            if isinstance(module, torch.nn.MultiheadAttention):
                module._reset_parameters()
            elif hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward(self, tokens: Tensor, emb: Tensor | None = None) -> Tensor:
        if tokens.dim() != 3 or tokens.size(1) != self.k:
            raise ValueError(
                f'tokens must have shape [B, {self.k}, {self.in_channels}] '
                f'(got {list(tokens.shape)})'
            )
        h = self._embed_tokens(tokens) + self.rank_emb.weight
        if self.lin_emb is not None:
            if emb is None:
                raise ValueError('this predictor takes embeddings (embedding mode)')
            h = h + self.lin_emb(emb)
        if self.arch == 'transformer':
            h = self.encoder(h)
        else:
            h = self.encoder(h)[0]
        return self.head(self.norm(h)).squeeze(-1)

    def _embed_tokens(self, tokens: Tensor) -> Tensor:
        # Under autocast the token embedding stays in float32: the tokens are
        # standardised similarities whose differences of a few hundredths
        # decide K_i, and rounding them to bfloat16's 8 bits moves K_i (on
        # the 19 cells of benchmarks/precision.py 0-1.6 % of the nodes get
        # another K_i than in float32 with this embedding in float32, 0-2.3 %
        # with it in bfloat16; 6.3 % against 8.1 % on a 32-d draw). It is written
        # out feature by feature, elementwise, so that a node's embedding
        # does not depend on the batch (a float32 matrix product may round
        # its last bit by the batch's shape, and bfloat16 rounding downstream
        # can turn that into another K_i).
        if not torch.is_autocast_enabled(tokens.device.type):
            return self.lin_token(tokens)
        weight, bias = self.lin_token.weight, self.lin_token.bias
        with torch.autocast(tokens.device.type, enabled=False):
            tokens, h = tokens.float(), bias
            for f in range(self.in_channels):
                h = h + tokens[..., f : f + 1] * weight[:, f]
        return h

    @staticmethod
    def loss(logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of the logits against the target Top-K in
        :math:`[1, k]`.
        """
        return F.cross_entropy(logits, target - 1)

    @staticmethod
    def predict(logits: Tensor, quantile: float | None = None) -> Tensor:
        r"""Returns :math:`K_i \in [1, k]` from the logits :obj:`(B, k)`: the
        :obj:`quantile` :math:`q \in (0, 1)` of the predicted distribution,
        the smallest :math:`r` whose cumulative probability reaches :math:`q`;
        with :obj:`None`, its mode :math:`\arg\max_r` :obj:`logits[i, r]`
        :math:`+ 1`."""
        if quantile is None:
            return logits.argmax(dim=-1) + 1
        below = logits.float().softmax(dim=-1).cumsum(dim=-1) < quantile
        # Rounding can leave the last cumulative sum just under q: clamp.
        return (below.sum(dim=-1) + 1).clamp(max=logits.size(-1))

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(k={self.k}, arch={self.arch!r}, '
            f'hidden_channels={self.hidden_channels}, '
            f'num_layers={self.num_layers})'
        )
