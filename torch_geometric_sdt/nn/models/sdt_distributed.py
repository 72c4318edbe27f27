r"""The SDT pipeline on a Ray cluster (:obj:`engine='ray'` of
:meth:`~torch_geometric_sdt.nn.models.SDTClusterer.cluster`).

Each stage is distributed by what it is:

1. **kNN**: the sharded exact search of
   :func:`~torch_geometric_sdt.nn.knn.sharded.sharded_knn` (or a given
   graph);
2. **set Jaccard, Top-K, Top-K Jaccard, SDT band scores**: map stages over
   blocks of nodes (or of scored pairs); a node's result reads only its own
   kNN list and its neighbours' lists, which every task reads from the
   object store, where the driver put them once;
3. **SDT node states**: one map stage per encoder layer (and one for the
   input projection), since layer :math:`l` of a node reads the states of
   layer :math:`l - 1` of its Top-K neighbours; between two layers the
   driver gathers the :math:`[N, H]` states and shares them again;
4. **Infomap** on the driver, on the final links, as the local engine runs
   it.

The model is put into the object store once and every task reads it from
there. Tasks compute exactly the chunks the local engine computes (Top-K
batches, encoder chunks and band chunks start at the same nodes and pairs).
What can differ is how a few sums round: a task runs one thread per CPU Ray
gives it (the local engine all the process's threads), and a few Top-K
Jaccard and band scores have rounded their last bit differently in a worker
process (the cause is not isolated). The partitions are equal on the test
suite's data sets (up to 3,000 faces) and at 1,000,000 faces on one kNN
graph; at 200,000 faces on identical kNN lists they were equal with one
worker and agreed to a pairwise F of 0.99865 with two
(``benchmarks/ray_engine.py``).

**Memory.** The driver holds what the local engine holds after the kNN
search (the :math:`[N, k]` lists, the set Jaccard, the Top-K Jaccard, the
:math:`[N, H]` states), so it needs the local engine's memory less the kNN
search and the Top-K predictor's activations; a worker holds one block's
inputs and outputs plus, without a copy when on its node, the shared
:math:`[N, k]` arrays (:math:`24 N k` bytes: ids, similarities and one
score array), and one :math:`O(N)` scratch array per Jaccard thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from torch_geometric_sdt.nn.knn import KNN
from torch_geometric_sdt.nn.knn.sharded import sharded_knn
from torch_geometric_sdt.nn.models.knn_context import KNNContext, reference_scale
from torch_geometric_sdt.utils.distributed import (
    DEFAULT_BLOCK_ROWS,
    EngineStats,
    FeatureShards,
    auto_block_rows,
    blocks,
    connect,
    import_ray,
    limit_threads,
    map_stage,
    nbytes,
    share,
    shared_tensors,
)
from torch_geometric_sdt.utils.knn_features import SimilarityScale
from torch_geometric_sdt.utils.topk_jaccard import topk_jaccard_ray


def _context(
    graph: dict[str, np.ndarray],
    extra: dict[str, np.ndarray | None],
    scale: SimilarityScale,
    reference: str,
    scores: dict[str, np.ndarray] | None = None,
) -> tuple[KNNContext, dict[str, Tensor | None]]:
    # In a task: the KNNContext over the shared arrays (no copies), and the
    # arrays as tensors.
    t = shared_tensors({**graph, **extra, **(scores or {})})
    ctx = KNNContext(
        KNN(t['index'], t['sim']),  # type: ignore[arg-type]
        scale,
        t['shared'],  # type: ignore[arg-type]
        t.get('x'),
        reference,
    )
    return ctx, t


def _topk_block(
    model: Any,
    graph: dict,
    extra: dict,
    scale: SimilarityScale,
    reference: str,
    lo: int,
    hi: int,
    batch: int,
) -> np.ndarray:
    # Task: the predicted Top-K of nodes [lo, hi).
    limit_threads()
    ctx, _ = _context(graph, extra, scale, reference)
    nodes = torch.arange(lo, hi)
    return model.predict_topk(ctx, batch_size=batch, nodes=nodes).numpy()


@torch.no_grad()
def _input_states(
    model: Any,
    graph: dict,
    extra: dict,
    scale: SimilarityScale,
    reference: str,
    scores: dict,
    lo: int,
    hi: int,
    chunk: int,
) -> np.ndarray:
    # Task: the encoder's input projection of nodes [lo, hi), by chunks.
    limit_threads()
    model.eval()
    ctx, t = _context(graph, extra, scale, reference, scores)
    out = [
        model.encoder.lin_in(
            model.node_features(ctx, torch.arange(c, min(c + chunk, hi)), t['topk'])
        )
        for c in range(lo, hi, chunk)
    ]
    return torch.cat(out).numpy()


@torch.no_grad()
def _layer_states(
    model: Any,
    graph: dict,
    extra: dict,
    scale: SimilarityScale,
    reference: str,
    scores: dict,
    states: dict,
    layer: int,
    lo: int,
    hi: int,
    chunk: int,
) -> np.ndarray:
    # Task: the states after encoder block `layer` of nodes [lo, hi), from
    # all nodes' states before it; the last layer adds the final norm.
    limit_threads()
    model.eval()
    ctx, t = _context(graph, extra, scale, reference, scores)
    topk, jac = t['topk'], t['jaccard']
    h = shared_tensors(states)['h']
    out = []
    for c0 in range(lo, hi, chunk):
        c1 = min(c0 + chunk, hi)
        edge_index, edge_attr, edge_rank, _ = model.subgraph_inputs(
            ctx,
            torch.arange(c0, c1),
            topk,
            jac,
        )
        out.append(
            model.encoder.layer_chunk(
                layer,
                h,
                c0,
                c1,
                edge_index,
                edge_attr,
                topk[c0:c1],  # type: ignore[index]
                edge_rank,
            )
        )
    result = torch.cat(out)
    if layer == model.encoder.num_layers - 1:
        result = model.encoder.norm(result)
    return result.numpy()


def _band_block(
    model: Any,
    graph: dict,
    extra: dict,
    scale: SimilarityScale,
    reference: str,
    scores: dict,
    states: dict,
    pos: np.ndarray,
    chunk: int,
) -> np.ndarray:
    # Task: same-identity probabilities of the scored pairs at `pos`.
    limit_threads()
    ctx, t = _context(graph, extra, scale, reference, scores)
    h = shared_tensors(states)['h']
    _, prob = model.score_band(
        ctx,
        t['topk'],
        t['jaccard'],
        h,
        chunk_size=chunk,
        pos=torch.from_numpy(pos),
    )
    return prob.numpy()


def _aligned(block_rows: int, chunk: int) -> int:
    # The largest multiple of `chunk` not above block_rows (at least chunk).
    return max(chunk, block_rows - block_rows % chunk)


def cluster_ray(
    model: Any,
    x: Tensor | np.ndarray | FeatureShards | None,
    *,
    graph: KNN | None,
    topk: Tensor | None,
    backend: str,
    address: str | None,
    chunks: dict[str, int],
    block_rows: int | None = None,
    progress: bool = False,
    scale: SimilarityScale | None = None,
) -> tuple[KNNContext, Tensor, Tensor, Tensor, Tensor, EngineStats]:
    r"""Runs the stages of
    :meth:`~torch_geometric_sdt.nn.models.SDTClusterer.cluster` up to the
    final links on a Ray cluster (see the module docstring).

    Args:
        model (SDTClusterer): The model.
        x: Embeddings :obj:`[N, D]` or :class:`FeatureShards`
            (:obj:`None` with a :obj:`graph` and the :obj:`'knn'`
            reference).
        graph (KNN, optional): A precomputed kNN graph.
        topk (torch.Tensor, optional): A Top-K to use instead of predicting.
        backend (str): :obj:`'auto'` or :obj:`'exact'` (the sharded search
            is exact).
        address (str, optional): The Ray cluster.
        chunks (dict): The local engine's chunk sizes, :obj:`'topk'`,
            :obj:`'nodes'` and :obj:`'band'`: tasks compute the same chunks.
        block_rows (int, optional): Nodes per task, rounded down to a
            multiple of the encoder chunk (default:
            :func:`~torch_geometric_sdt.utils.distributed.auto_block_rows`),
            and the rows per part of in-memory embeddings.
        progress (bool, optional): Progress bars.
        scale (SimilarityScale, optional): The similarity scale to use
            instead of estimating it
            (:func:`~torch_geometric_sdt.nn.models.knn_context.reference_scale`).

    Returns:
        (ctx, topk, jaccard, band_pos, band_prob, stats)
    """
    if backend not in ('auto', 'exact'):
        raise ValueError(
            f"engine='ray' searches exactly: backend must be 'auto' or 'exact' "
            f'(got {backend!r})'
        )
    connect(address)
    stats = EngineStats()
    k = model.k
    if x is not None and not isinstance(x, FeatureShards):
        x = FeatureShards.from_array(
            torch.as_tensor(x), block_rows or DEFAULT_BLOCK_ROWS
        )
    if graph is None:
        if x is None:
            raise ValueError('give embeddings x or a precomputed kNN graph')
        if k >= x.num_rows:
            raise ValueError(
                f'k={k} must be smaller than the number of points ({x.num_rows})'
            )
        index, sim = sharded_knn(
            x, k, block_rows=block_rows, progress=progress, stats=stats
        )
        graph = KNN(index, sim)
    elif graph.k != k:
        raise ValueError(f'the kNN graph has k = {graph.k}, the model k = {k}')
    num = graph.num_nodes
    if x is not None and x.num_rows != num:
        raise ValueError(f'x has {x.num_rows} rows but the kNN graph {num} nodes')
    scale, reference = reference_scale(x, graph, model.config['reference'], scale)
    xx = None
    if model.mode == 'embedding':
        if x is None:
            raise ValueError('embedding mode needs the embeddings x')
        full = np.concatenate([x.read(p) for p in range(len(x))])
        xx = torch.nn.functional.normalize(torch.from_numpy(full).float(), dim=-1)

    graph_ref = share(index=graph.index, sim=graph.sim)
    if block_rows is None:
        block_rows = auto_block_rows(num, chunks['nodes'])
    node_rows = _aligned(block_rows, chunks['nodes'])
    node_blocks = blocks(num, node_rows)

    def rows_stage(name: str, topk_arg: Any, **options: Any) -> Tensor:
        return topk_jaccard_ray(
            graph.index,
            graph.sim,
            topk_arg,
            block_rows=node_rows,
            stats=stats,
            name=name,
            progress=progress,
            **options,
        ).float()

    shared = rows_stage('set jaccard', k, mode='set')
    ctx = KNNContext(graph, scale, shared, xx, reference)
    # Every array goes into the object store once; tasks take the references
    # they need.
    model_ref = share_model(model)
    extra_ref = share(shared=shared, x=xx)
    base_bytes = nbytes([graph.index, graph.sim, shared, xx])
    common = (model_ref, graph_ref, extra_ref, scale, reference)
    if topk is None:
        parts = map_stage(
            _topk_block,
            [(*common, lo, hi, chunks['topk']) for lo, hi in node_blocks],
            name='Top-K',
            stats=stats,
            shared_bytes=base_bytes,
            progress=progress,
        )
        topk = torch.from_numpy(np.concatenate(parts))
    jac = rows_stage('topk jaccard', topk, transform=model.config['transform'])
    scores_ref = share(topk=topk, jaccard=jac)
    base_bytes += nbytes([topk, jac])
    common = (*common, scores_ref)
    h = map_stage(
        _input_states,
        [(*common, lo, hi, chunks['nodes']) for lo, hi in node_blocks],
        name='SDT input',
        stats=stats,
        shared_bytes=base_bytes,
        progress=progress,
    )
    for layer in range(model.encoder.num_layers):
        states = np.concatenate(h)
        del h
        states_ref = share(h=states)
        h = map_stage(
            _layer_states,
            [
                (*common, states_ref, layer, lo, hi, chunks['nodes'])
                for lo, hi in node_blocks
            ],
            name=f'SDT layer {layer + 1}',
            stats=stats,
            shared_bytes=base_bytes + states.nbytes,
            progress=progress,
        )
        del states, states_ref
    states = np.concatenate(h)
    del h
    states_ref = share(h=states)
    band_pos = model.scored_positions(topk)
    step = _aligned(block_rows * 8, chunks['band'])
    band = map_stage(
        _band_block,
        [
            (*common, states_ref, band_pos[lo : lo + step].numpy(), chunks['band'])
            for lo in range(0, band_pos.numel(), step)
        ],
        name='SDT band',
        stats=stats,
        shared_bytes=base_bytes + states.nbytes,
        progress=progress,
    )
    band_prob = torch.from_numpy(np.concatenate(band)) if band else torch.empty(0)
    return ctx, topk, jac, band_pos, band_prob, stats


def share_model(model: torch.nn.Module) -> Any:
    r"""Puts a model into the object store once; tasks read it from there
    (never pickled per task)."""
    return import_ray().put(model)


__all__ = ['cluster_ray', 'share_model']
