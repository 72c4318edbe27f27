r"""The paper's ablation on held-out LFW identities, one step at a time.

The LFW identities are split in halves as in :mod:`benchmarks.sdt_quality`
(same seed, same cached models); every model is trained on the training
half with the same seed and budget, and every number is measured on the
other half. Each comparison changes one thing:

1. **Jaccard over the full kNN list vs. inside the Top-K** (predicted
   :math:`K`, and the oracle :math:`K^*` as the ceiling): ROC AUC of the
   coefficient for "same identity" over all non-self kNN edges; clustering
   with the Top-K Jaccard alone (edges inside each node's Top-K weighted by
   :math:`J_{ij}`, directed Infomap, no threshold, no SDT); and the full SDT
   pipeline given each Top-K.
2. **exponential vs. sigmoid** distance-to-probability transform, with the
   predicted Top-K (ROC AUC and Top-K-Jaccard-only clustering).
3. **LSTM vs. Transformer** Top-K predictor: mean absolute error of
   :math:`K` against :math:`K^*`.
4. **vanilla attention vs. SDT** and **SDT vs. MoE-SDT** (4 experts, top-2
   gating): the full pipeline, and the ROC AUC of the edge head on the
   boundary-band pairs. The three models share the seed, so their Top-K
   predictors are identical (checked below).

Writes ``benchmarks/results/sdt_ablation.{md,json}``::

    PYTHONPATH=. python -m benchmarks.sdt_ablation
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import (
    LFW,
    METRIC_COLUMNS,
    Measure,
    results_dir,
    write_results,
)
from benchmarks.sdt_quality import TRAIN, lfw_split, metrics, trained_model
from torch_geometric_sdt.metrics import roc_auc
from torch_geometric_sdt.nn.knn import KNN, knn
from torch_geometric_sdt.nn.models import SDTClusterer
from torch_geometric_sdt.nn.models.knn_context import band_positions
from torch_geometric_sdt.utils import topk_jaccard, topk_target
from torch_geometric_sdt.utils.infomap import cluster_links


def topk_links(graph: KNN, topk: Tensor, jac: Tensor) -> tuple[Tensor, Tensor]:
    r"""Links node :math:`\to` neighbour for the non-self ranks inside each
    node's Top-K, weighted by the Top-K Jaccard."""
    n, k = graph.index.shape
    rank = torch.arange(k)
    inside = (rank >= 1) & (rank < topk.unsqueeze(1))
    pos = inside.view(-1).nonzero().view(-1)
    edge_index = torch.stack([pos // k, graph.index.view(-1)[pos]])
    return edge_index, jac.view(-1)[pos].clamp(min=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='small smoke run')
    parser.add_argument('-k', type=int, default=80)
    parser.add_argument('--retrain', action='store_true')
    parser.add_argument('--out', default=None, help='results folder')
    args = parser.parse_args()
    if not (LFW / 'features.npy').exists():
        raise SystemExit(f'LFW embeddings not found at {LFW} (set SDT_SHARED)')
    k = args.k
    s = lfw_split()
    suffix = ''
    budget = dict(TRAIN)
    if args.quick:
        s = {key: v[:2000] for key, v in s.items()}
        suffix = '_quick'
        budget['max_steps_per_epoch'] = 5
    x_te, y_te = s['x_test'], s['y_test']

    def train(
        name: str, stage_two: bool = True, **config: Any
    ) -> tuple[SDTClusterer, dict[str, Any]]:
        return trained_model(
            name + suffix,
            s['x_train'],
            s['y_train'],
            args.retrain,
            train=budget if stage_two else dict(budget, sdt_epochs=0),
            k=k,
            **config,
        )

    variants = {
        'SDT (differential)': train('lfw_relational'),
        'vanilla attention': train('lfw_vanilla', differential=False),
        'MoE-SDT (4 experts, top-2)': train('lfw_moe', num_experts=4, moe_top=2),
    }
    # The LSTM only needs stage 1 (the Top-K predictor):
    lstm, lstm_training = train('lfw_lstm', stage_two=False, predictor='lstm')
    model = variants['SDT (differential)'][0]

    graph = knn(x_te, k)
    ctx = model.context(x_te, graph=graph)
    oracle = topk_target(graph.index, y_te)
    predicted = model.predict_topk(ctx)
    full = torch.full_like(predicted, k)
    non_self = torch.ones_like(graph.index, dtype=torch.bool)
    non_self[:, 0] = False
    same = (y_te[graph.index] == y_te[:, None])[non_self]
    n = graph.index.size(0)
    result: dict[str, Any] = {'num_test': n, 'k': k, 'train_budget': budget}

    # 1 + 2: the coefficient --------------------------------------------------
    rows = []
    settings = [
        ('full-k', full, 'sigmoid'),
        ('Top-K, predicted K', predicted, 'sigmoid'),
        ('Top-K, oracle K (ceiling)', oracle, 'sigmoid'),
        ('full-k, exp', full, 'exp'),
        ('Top-K, predicted K, exp', predicted, 'exp'),
    ]
    for label, topk, transform in settings:
        jac = topk_jaccard(graph, topk=topk, transform=transform)
        auc = roc_auc(jac[non_self], same)
        pred = cluster_links(*topk_links(graph, topk, jac), n)
        row = {
            'setting': label,
            'transform': transform,
            'auc': auc,
            'jaccard_only': metrics(pred, y_te),
        }
        if transform == 'sigmoid':
            row['sdt_pipeline'] = metrics(
                model.cluster(x_te, graph=graph, topk=topk), y_te
            )
        rows.append(row)
        print(label, f'{auc:.4f}', flush=True)
    result['coefficient'] = rows
    result['cosine_auc'] = roc_auc(graph.sim[non_self], same)

    # 3: Top-K predictors -------------------------------------------------------
    def mae_row(label: str, m: SDTClusterer, training: dict[str, Any]) -> dict:
        with Measure() as t:
            k_hat = m.predict_topk(ctx)
        err = (k_hat - oracle).abs().float()
        return {
            'predictor': label,
            'mae': float(err.mean()),
            'exact': float((err == 0).float().mean()),
            'within_2': float((err <= 2).float().mean()),
            'params': sum(p.numel() for p in m.topk_predictor.parameters()),
            'inference_seconds': round(t.seconds, 2),
            'val_topk_mae': training['val_topk_mae'],
        }

    result['predictors'] = [
        mae_row('Transformer', model, variants['SDT (differential)'][1]),
        mae_row('LSTM', lstm, lstm_training),
    ]
    result['oracle_topk_mean'] = float(oracle.float().mean())

    # 4: attention variants -----------------------------------------------------
    pos = band_positions(predicted, k, model.band)
    band_same = y_te[pos // k] == y_te[graph.index.view(-1)[pos]]
    att = []
    for label, (m, training) in variants.items():
        same_k = bool(torch.equal(m.predict_topk(ctx), predicted))
        with Measure() as t:
            pred, d = m.cluster(x_te, graph=graph, return_details=True)
        att.append(
            {
                'variant': label,
                'eta': m.config['eta'],
                'same_topk_as_sdt': same_k,
                'band_auc': roc_auc(d['band_prob'], band_same) if same_k else None,
                'params': sum(p.numel() for p in m.parameters()),
                'cluster_seconds': round(t.seconds, 1),
                'train_seconds': training['seconds'],
                **metrics(pred, y_te),
            }
        )
        print(label, att[-1], flush=True)
    result['attention'] = att

    body = [
        f'LFW, identity-disjoint halves: models trained on '
        f'{s["x_train"].size(0):,} items, everything measured on the other '
        f'{n:,} items; k = {k}; training budget `{budget}`, seed 0.',
        '',
        '## 1-2. The coefficient: full-k vs. Top-K, exp vs. sigmoid',
        '',
        f'ROC AUC over all {int(same.numel()):,} non-self kNN edges '
        f'(cosine similarity: {result["cosine_auc"]:.4f}); "Jaccard only" clusters '
        'the edges inside each Top-K weighted by the coefficient; "SDT pipeline" is '
        'the LFW-trained SDT model given that Top-K.',
        '',
        f'| setting | transform | ROC AUC | Jaccard only: {METRIC_COLUMNS} '
        '| SDT pipeline: pairwise F | BCubed F |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        m = r['jaccard_only']
        sdt = r.get('sdt_pipeline')
        body.append(
            f'| {r["setting"]} | {r["transform"]} | {r["auc"]:.4f} | '
            f'{m["pairwise_fscore"]:.4f} | {m["bcubed_fscore"]:.4f} | '
            f'{m["nmi"]:.4f} | {m["num_clusters"]:,} | {m["num_singletons"]:,} | '
            + (
                f'{sdt["pairwise_fscore"]:.4f} | {sdt["bcubed_fscore"]:.4f} |'
                if sdt
                else '| |'
            )
        )
    body += [
        '',
        '## 3. Top-K predictor: LSTM vs. Transformer',
        '',
        f'Oracle K* mean {result["oracle_topk_mean"]:.2f}.',
        '',
        '| predictor | MAE of K | exact | within 2 | parameters '
        '| validation MAE (training) | inference s |',
        '|---|---:|---:|---:|---:|---:|---:|',
    ]
    for r in result['predictors']:
        body.append(
            f'| {r["predictor"]} | {r["mae"]:.3f} | {r["exact"]:.3f} | '
            f'{r["within_2"]:.3f} | {r["params"]:,} | {r["val_topk_mae"]:.3f} | '
            f'{r["inference_seconds"]} |'
        )
    body += [
        '',
        '## 4. Attention: vanilla vs. SDT vs. MoE-SDT',
        '',
        f'| variant | eta | same Top-K | band ROC AUC | {METRIC_COLUMNS} '
        '| parameters | train s | cluster s |',
        '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in att:
        auc = f'{r["band_auc"]:.4f}' if r['band_auc'] is not None else ''
        body.append(
            f'| {r["variant"]} | {r["eta"]} | {r["same_topk_as_sdt"]} | {auc} | '
            f'{r["pairwise_fscore"]:.4f} | {r["bcubed_fscore"]:.4f} | '
            f'{r["nmi"]:.4f} | {r["num_clusters"]:,} | {r["num_singletons"]:,} | '
            f'{r["params"]:,} | {r["train_seconds"]} | {r["cluster_seconds"]} |'
        )
    body.append('')
    write_results(
        'sdt_ablation',
        'Ablation on held-out LFW identities' + (' (quick run)' if args.quick else ''),
        result,
        body,
        out=results_dir(args.quick, args.out),
    )


if __name__ == '__main__':
    main()
