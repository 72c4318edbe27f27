from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import SUITES, main, run_script
from benchmarks.common import write_results
from benchmarks.report import build_report, split_markdown
from benchmarks.scale import growth

ROOT = Path(__file__).resolve().parents[1]


def test_list_runs_and_names_every_suite():
    res = subprocess.run(
        [sys.executable, '-m', 'benchmarks', 'list'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for suite, names in SUITES.items():
        assert f'{suite}:' in res.stdout
        for name in names:
            assert name in res.stdout
    assert set(SUITES) == {'quality', 'speed', 'scale'}
    assert SUITES['scale'] == ('scale', 'ray_engine')


def test_run_skips_a_missing_script(capsys):
    assert run_script('no_such_benchmark', quick=True, extra=[]) == {
        'name': 'no_such_benchmark',
        'status': 'skipped',
    }
    assert 'does not exist yet' in capsys.readouterr().out
    assert main(['run', '--suite', 'scale', '--only', 'knn']) == 2


def _fake_scale_rows() -> list[dict]:
    stages = ('knn', 'topk')
    rows = []
    for n in (1000, 10_000):
        rows.append(
            {
                'num_nodes': n,
                'stages': {
                    s: {'seconds': 1e-4 * n * (i + 1), 'peak_rss_above_base': 100 * n}
                    for i, s in enumerate(stages)
                },
                'sdt_total_s': 3e-4 * n,
                'baseline': {'seconds': 1e-5 * n},
                'measured_peak': 100 * n,
                'estimate': {'peak': 120 * n},
            }
        )
    return rows


def test_report_builds_results_md(tmp_path):
    body = ['Some words.', '', '## A table', '', '| a | b |', '|---|---|', '| 1 | 2 |']
    write_results('fake', 'A fake result', {'rows': [1, 2]}, body, out=tmp_path)
    write_results(
        'scale', 'Scale', {'rows': _fake_scale_rows()}, ['| x |'], out=tmp_path
    )
    sensitivity = [
        {
            'data': 'synthetic',
            'method': m,
            'threshold': t,
            'pairwise_fscore': 0.5 + t / 4,
            'bcubed_fscore': 0.4 + t / 4,
        }
        for m in ('sdt', 'infomap-knn')
        for t in (0.5, 0.6, 0.7)
    ]
    write_results(
        'sdt_quality', 'Quality', {'sensitivity': sensitivity}, ['ok'], out=tmp_path
    )
    path = build_report(tmp_path)
    assert path == tmp_path / 'RESULTS.md'
    text = path.read_text()
    doc = json.loads((tmp_path / 'fake.json').read_text())
    assert '## A fake result' in text
    assert f'- Date: {doc["date"]}; commit `{doc["commit"]}`' in text
    assert f'- Command: `{doc["command"]}`' in text
    assert doc['machine']['platform'] in text
    # The .md body is embedded once, headings nested under the section:
    assert '| 1 | 2 |' in text and '#### A table' in text
    assert text.count('Some words.') == 1
    # The plots exist and are embedded under their result:
    for png in ('scale_time', 'scale_memory', 'scale_stages', 'quality_threshold'):
        assert (tmp_path / f'{png}.png').stat().st_size > 1000
        assert f'![{png}.png]({png}.png)' in text
    quality = text.index('## Quality')
    assert text.index('quality_threshold.png') > quality
    assert text.index('scale_time.png') > text.index('## Scale')
    # Smoke runs named *_quick are left out unless asked for:
    write_results('fake_quick', 'A smoke run', {}, ['x'], out=tmp_path)
    assert '## A smoke run' not in build_report(tmp_path, plots=False).read_text()
    text = build_report(tmp_path, plots=False, include_quick=True).read_text()
    assert '## A smoke run' in text


def test_report_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match='no results folder'):
        build_report(tmp_path / 'absent')


def test_split_markdown_drops_provenance():
    title, body = split_markdown(
        '# T\n\n- Date: x\n- Command: `y`\n- Machine: z\n\n| a |\n## H\n'
    )
    assert title == 'T'
    assert body == ['| a |', '#### H']


def test_growth_exponent():
    rows = [
        {'num_nodes': n, 'stages': {'knn': {'seconds': 2e-6 * n**1.5}}}
        for n in (1000, 10_000, 100_000)
    ]
    assert growth(rows, 'knn') == pytest.approx(1.5)
    assert growth(rows[:1], 'knn') is None


def test_rewriting_a_recorded_document_keeps_its_provenance(tmp_path):
    first = write_results('thing', 'Thing', {'value': 1}, ['a'], out=tmp_path)
    doc = json.loads((tmp_path / 'thing.json').read_text())
    doc.update(date='2000-01-01T00:00:00', commit='abc1234', command='python x.py')
    again = write_results('thing', 'Thing', doc, ['b'], out=tmp_path)
    assert again['date'] == '2000-01-01T00:00:00' != first['date']
    assert again['commit'] == 'abc1234' and again['value'] == 1
    text = (tmp_path / 'thing.md').read_text()
    assert '- Date: 2000-01-01T00:00:00; commit `abc1234`' in text
    assert '- Command: `python x.py`' in text


def test_knn_sweep_selects_entries_and_renders_ratios(tmp_path):
    from benchmarks.knn import SWEEP, label, sweep, write_sweep

    assert SWEEP[0] == ('faiss-hnsw', {}) and ('pynndescent', {}) in SWEEP
    assert label('faiss-ivf', {'nprobe': 64}) == 'faiss-ivf nprobe=64'
    res = sweep(
        3000,
        16,
        10,
        300,
        only=['faiss-ivf', 'faiss-hnsw M=16,ef_construction=40,ef_search=128'],
    )
    runs = res['runs']
    ivf = [r for r in runs if r['backend'] == 'faiss-ivf']
    assert len(ivf) == sum(b == 'faiss-ivf' for b, _ in SWEEP)
    assert [r['options'] for r in runs if r['backend'] == 'faiss-hnsw'] == [
        {'M': 16, 'ef_construction': 40, 'ef_search': 128}
    ]
    assert res['queries'] == 300 and all(0.0 <= r['recall'] <= 1.0 for r in runs)
    # More probes never lose recall on the same index:
    recalls = [r['recall'] for r in ivf]
    assert recalls == sorted(recalls) and recalls[-1] > 0.9
    write_sweep(res, tmp_path)
    md = (tmp_path / 'knn_sweep_3000.md').read_text()
    # No NN-descent run: the ratio is against the first row.
    assert '| faiss-hnsw | M=16, ef_construction=40, ef_search=128 |' in md
    assert 'time / faiss-hnsw M=16' in md
    assert '| recall@10 | recall@k |' in md and 'SDT pairwise F' not in md
    first = md.splitlines()[md.splitlines().index('|' + '---|' * 6) + 1]
    assert first.split('|')[4].strip() == '1.00'
    assert all(0.0 <= r['recall@10'] <= 1.0 for r in runs)
    # --render redraws the table from the JSON with the recorded provenance:
    doc = json.loads((tmp_path / 'knn_sweep_3000.json').read_text())
    subprocess.run(
        [
            sys.executable,
            '-m',
            'benchmarks.knn',
            '--render',
            str(tmp_path / 'knn_sweep_3000.json'),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (tmp_path / 'knn_sweep_3000.md').read_text() == md
    assert json.loads((tmp_path / 'knn_sweep_3000.json').read_text()) == doc


def test_knn_sweep_end_to_end_clusters_every_graph(tmp_path):
    from benchmarks.knn import sweep, write_sweep

    with pytest.raises(ValueError, match='k = 80'):
        sweep(500, 16, 10, 50, only=['exact'], e2e=True)
    res = sweep(1500, 16, 80, 100, only=['exact'], e2e=True)
    (run,) = res['runs']
    # The exact graph recalls itself; the clusterings are scored.
    assert run['recall'] == run['recall@10'] == 1.0
    for key in ('sdt_pairwise_f', 'sdt_bcubed_f', 'infomap_knn_pairwise_f'):
        assert 0.0 < run[key] <= 1.0
    assert run['sdt_seconds'] > 0
    write_sweep(res, tmp_path)
    md = (tmp_path / 'knn_sweep_1500_e2e.md').read_text()
    assert '| SDT pairwise F | SDT BCubed F | infomap-knn pairwise F |' in md
    row = next(line for line in md.splitlines() if line.startswith('| exact |'))
    assert f'{run["sdt_pairwise_f"]:.4f}' in row


def test_sdt_draws_summary_counts_lost_draws():
    from benchmarks.sdt_draws import THRESHOLDS, summary

    def m(p: float, b: float) -> dict:
        return {'pairwise_fscore': p, 'bcubed_fscore': b}

    draws = [
        {
            'num_nodes': 10,
            'seed': s,
            'metrics': {
                'sdt': m(p, 0.9),
                'infomap-knn': m(0.95, 0.8),
                'fc-es': m(0.5, 0.5),
            },
        }
        for s, p in ((0, 0.97), (1, 0.92), (2, 0.96))
    ]
    out = summary(draws)
    assert [e['baseline'] for e in out] == list(THRESHOLDS)
    pf = out[0]['pairwise_fscore']
    assert pf['lost'] == 1 and pf['draws'] == 3
    assert pf['min'] == pytest.approx(-0.03) and pf['max'] == pytest.approx(0.02)
    assert pf['mean'] == pytest.approx((0.02 - 0.03 + 0.01) / 3)
    assert out[0]['bcubed_fscore']['lost'] == 0
    assert out[1]['pairwise_fscore']['lost'] == 0


def test_regimes_verdict_and_tables_name_every_loss():
    from benchmarks.regimes import tables, verdict

    def cell(name: str, sdt: float) -> dict:
        return _regime_cell(
            name,
            {
                'sdt': sdt,
                'sdt (oracle Top-K)': 0.99,
                'infomap-knn': 0.9,
                'infomap-knn (tuned)': 0.95,
                'fc-es': 0.5,
                'fc-es (tuned)': 0.8,
            },
        )

    win, loss = cell('a:arcface', 0.97), cell('b:squeezed', 0.6)
    assert verdict(win).startswith('SDT wins (+0.0200 over infomap-knn (tuned))')
    text = verdict(loss)
    assert text.startswith('**SDT loses** (-0.3500 to infomap-knn (tuned))')
    assert 'untuned infomap-knn' in text and 'fc-es' not in text
    md = '\n'.join(tables({'cells': [win, loss]}))
    assert '| b:squeezed | 100 | 0.6000 | 0.9900 | 0.9000 |' in md
    assert '| hdbscan |' not in md  # Methods no cell ran are left out.


def _regime_cell(name: str, scores: dict[str, float], **extra) -> dict:
    return {
        'cell': name,
        'stats': {
            'num_nodes': 100,
            'dim': 8,
            'identities': 5,
            'mean_size': 20.0,
            'max_size': 30,
            'singleton_share': 0.0,
            'items_above_k': 0.0,
            'random_pair_cosine': 0.3,
        },
        'knn_seconds': 0.1,
        'topk': {
            'predicted_mean': 5.0,
            'oracle_mean': 5.0,
            'mae': 0.0,
            'signed_error': 0.0,
        },
        'tuned_thresholds': {'infomap-knn': 0.6, 'fc-es': 0.3},
        'metrics': {
            k: {'pairwise_fscore': v, 'bcubed_fscore': v - 0.1, 'seconds': 0.1}
            for k, v in scores.items()
        },
        **extra,
    }


def test_regimes_summary_labels_and_sklearn_baselines_in_the_verdict():
    from benchmarks.regimes import summary, tables, verdict

    base = {'sdt (oracle Top-K)': 0.99, 'infomap-knn': 0.9, 'fc-es': 0.5}
    a = _regime_cell(
        'a:arcface',
        {'sdt': 0.95, **base, 'infomap-knn (tuned)': 0.953, 'dbscan (tuned)': 0.97},
        label='a:arcface N=100 D=8 draw 0',
        tuning={
            'dbscan (tuned)': {
                'params': {'eps': 0.5, 'min_samples': 2, 'eps_grid': [0.1, 0.9]},
                'tuning_fscore': 0.9,
                'tuning_seconds': 0.2,
            }
        },
    )
    b = _regime_cell(
        'b:squeezed',
        {'sdt': 0.8, **base, 'infomap-knn (tuned)': 0.9, 'hdbscan': 0.85},
        label='b:squeezed N=100 D=8 draw 1',
    )
    assert verdict(a).startswith('**SDT loses** (-0.0200 to dbscan (tuned))')
    assert 'untuned' not in verdict(a)
    assert 'untuned infomap-knn, hdbscan' in verdict(b)
    rows = {s['method']: s for s in summary([a, b])}
    tuned = rows['infomap-knn (tuned)']
    # a trails by 0.003 (within the margin), b by 0.1:
    assert tuned['cells'] == 2 and tuned['sdt_below'] == 1
    assert tuned['sdt_minus'] == pytest.approx((-0.003 - 0.1) / 2)
    assert tuned['pairwise_fscore'] == pytest.approx((0.953 + 0.9) / 2)
    assert tuned['bcubed_fscore'] == pytest.approx((0.953 + 0.9) / 2 - 0.1)
    assert rows['dbscan (tuned)']['cells'] == 1 and rows['hdbscan']['cells'] == 1
    assert 'agglomerative (tuned)' not in rows
    md = '\n'.join(tables({'cells': [a, b]}))
    # Cells are named with N, dim and draw; methods a cell did not run: '-'.
    assert '| a:arcface N=100 D=8 draw 0 | 100 | 0.9500 |' in md
    assert '| b:squeezed N=100 D=8 draw 1 | 100 | 0.8000 |' in md
    assert '| infomap-knn (tuned) | 2 | 0.9265 | 0.8265 | 1 of 2 | -0.0515 |' in md
    assert '| dbscan (tuned) | eps 0.5, min_samples 2, eps_grid [0.1, 0.9] |' in md


def test_regimes_agglomerative_cut_and_dbscan_graph_match_sklearn():
    pytest.importorskip('sklearn')
    import numpy as np
    import torch
    from sklearn.cluster import DBSCAN

    from benchmarks.regimes import (
        _agglomerative,
        _singletons,
        cut_tree,
        dbscan_grid,
        evaluate,
        fit_agglomerative,
        fit_dbscan,
        tune_agglomerative,
    )
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.nn import knn

    x, y = regime_draw('lfw', 300, 16, seed=7)
    tree = _agglomerative(0.0).fit(x.numpy())
    for t in np.quantile(tree.distances_, (0.3, 0.6, 0.9, 0.99)):
        ours = cut_tree(tree.children_, tree.distances_, float(t))
        theirs = fit_agglomerative(x, float(t))
        assert evaluate(ours, theirs)['pairwise_fscore'] == 1.0
        assert int(ours.max()) == int(theirs.max())
    params, score = tune_agglomerative(x, y)
    pred = fit_agglomerative(x, params['distance_threshold'])
    assert evaluate(pred, y)['pairwise_fscore'] == pytest.approx(score)

    grid = dbscan_grid(knn(x, 20))
    assert grid == sorted(grid) and 0.0 < grid[0] < grid[-1] <= 2.0
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(radius=grid[-1], algorithm='brute').fit(x.numpy())
    dist = nn.radius_neighbors_graph(x.numpy(), mode='distance')
    for eps in grid[::4]:
        for ms in (1, 3):
            lab = DBSCAN(eps=eps, min_samples=ms, metric='precomputed')
            graph = _singletons(lab.fit_predict(dist.copy()))
            direct = fit_dbscan(x, eps, ms)
            assert (
                torch.equal(
                    torch.unique(graph, return_inverse=True)[1],
                    torch.unique(direct, return_inverse=True)[1],
                )
                or evaluate(graph, direct)['pairwise_fscore'] == 1.0
            )


def test_regimes_locality_draw_shares_the_geometry_only_when_asked():
    import torch

    from benchmarks.regimes import locality_draw

    for same, low, high in ((True, 0.0, 1e-4), (False, 0.3, 2.0)):
        x, y, big = locality_draw(400, 60, 128, seed=1, same_geometry=same)
        assert x.shape == (400, 128) and big.shape == (60, 128)
        assert int(y.max()) + 1 == torch.unique(y).numel()
        # The faces live in a 64-d subspace: the extra identity in the
        # set's own (same geometry) or in another one.
        v = torch.linalg.svd(x.double(), full_matrices=False)[2][:64]
        rest = big.double() - big.double() @ v.T @ v
        assert low <= float(rest.norm(dim=1).max()) <= high


def test_regimes_locality_reports_agreement_with_a_stub_model():
    from benchmarks.regimes import OWN_LEVEL, locality, locality_draw
    from torch_geometric_sdt.baselines import cluster_knn
    from torch_geometric_sdt.utils import noise_scale

    class Stub:
        k = 20

        def cluster(self, x, *, graph, scale=None):
            assert x.size(0) == graph.num_nodes
            assert scale is None or scale == noise_scale(x[:300])
            return cluster_knn(graph, 'infomap-knn', threshold=0.7)

    x, y, big = locality_draw(300, 50, 32, seed=3)
    row = locality(Stub(), x, y, big, 0.7)
    assert row['num_nodes'] == 300 and row['extra'] == 50
    assert 0.0 < row['knn_rows_changed'] <= 1.0
    sdt, base = row['metrics']['sdt'], row['metrics']['infomap-knn (tuned)']
    assert sdt == base  # The stub is infomap-knn at the same threshold.
    assert row['metrics'][OWN_LEVEL] == base
    assert 0.0 <= sdt['agreement'] <= 1.0 and sdt['extra_clusters'] >= 1
    # Nothing added, nothing changes:
    row = locality(Stub(), x, y, big[:0], 0.7)
    assert row['knn_rows_changed'] == 0.0
    assert row['metrics']['sdt']['agreement'] == 1.0


def test_regimes_fscore_plot(tmp_path):
    from benchmarks.plots import regimes_fscore

    base = {'sdt (oracle Top-K)': 0.99, 'infomap-knn (tuned)': 0.9, 'hdbscan': 0.8}
    cells = [
        _regime_cell(
            f'c{i}:arcface', {'sdt': 0.5 + i / 40, **base, 'dbscan (tuned)': 0.7}
        )
        for i in range(18)
    ]
    del cells[0]['metrics']['hdbscan']
    path = regimes_fscore(cells, tmp_path / 'regimes_fscore.png')
    assert path is not None and path.stat().st_size > 1000
    assert regimes_fscore([], tmp_path / 'none.png') is None


def test_regimes_seeds_and_draws_stay_in_range(monkeypatch):
    from benchmarks import regimes

    top = regimes.FIRST_SEED + len(regimes.CELLS) - 1
    top += regimes.DRAW_STRIDE * (regimes.MAX_DRAWS - 1)
    assert top < regimes.FIRST_SEED + regimes.TUNE_OFFSET
    assert top + regimes.TUNE_OFFSET < regimes.LOCALITY_SEED
    assert regimes.LOCALITY_SEED + regimes.TUNE_OFFSET < regimes.SEED_LIMIT <= 10_000
    for argv in (['--draws', str(regimes.MAX_DRAWS + 1)], ['--draws', '0']):
        monkeypatch.setattr(sys, 'argv', ['regimes', *argv])
        with pytest.raises(SystemExit) as e:
            regimes.main()
        assert e.value.code == 2


def test_sdt_draws_summary_counts_draws_lost_by_the_margin():
    from benchmarks.sdt_draws import MARGIN, TUNED, summary

    def m(p: float) -> dict:
        return {'pairwise_fscore': p, 'bcubed_fscore': p}

    draws = [
        {
            'num_nodes': 10,
            'seed': s,
            'metrics': {
                'sdt': m(p),
                'infomap-knn': m(0.94),
                'fc-es': m(0.5),
                TUNED: m(0.96),
            },
        }
        for s, p in ((0, 0.97), (1, 0.955), (2, 0.935))
    ]
    assert MARGIN == 0.01
    out = summary(draws)
    assert [e['baseline'] for e in out] == ['infomap-knn', 'fc-es', TUNED]
    tuned = out[2]['pairwise_fscore']
    # Below the tuned infomap-knn in 2 draws, by more than 0.01 in one.
    assert tuned['lost'] == 2 and tuned['lost_by_margin'] == 1
    assert out[0]['pairwise_fscore']['lost_by_margin'] == 0


def test_regime_ablation_scores_every_column_veto_on_and_off():
    import torch

    from benchmarks.regime_ablation import COLUMNS, VARIANTS, score_cell
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.datasets import synthetic_faces

    x, y = synthetic_faces(400, dim=32, seed=4)
    torch.manual_seed(0)
    shipped = SDTClusterer(k=10, hidden_channels=16, predictor_channels=16, heads=2)
    shipped.config['eta'] = 0.9  # An untrained head vetoes Top-K edges.
    no_veto = SDTClusterer(**{**shipped.config, 'veto': False})
    no_veto.load_state_dict(shipped.state_dict())
    models = {'SDT (shipped)': shipped, 'SDT (shipped, no veto)': no_veto}
    out = score_cell(models, x, y)
    assert set(out) == set(COLUMNS) - set(VARIANTS)
    for scores in out.values():
        assert 0.0 <= scores['pairwise_fscore'] <= 1.0
        assert 0.0 <= scores['bcubed_fscore'] <= 1.0
    # The oracle Top-K is the ceiling on a clean draw, and the veto changes
    # the partition when the head scores Top-K edges below eta.
    assert out['Top-K Jaccard only (oracle Top-K)']['pairwise_fscore'] > 0.9
    veto, kept = out['SDT (shipped)'], out['SDT (shipped, no veto)']
    assert veto['bcubed_fscore'] != kept['bcubed_fscore']


def test_chunk_sizes_times_both_settings_with_the_same_output():
    from benchmarks.chunk_sizes import CURRENT, PREVIOUS, markdown, run

    res = run(1200, 1)
    assert [r['stage'] for r in res['rows']] == list(CURRENT)
    for r in res['rows']:
        assert r['previous_size'] == PREVIOUS[r['stage']]
        assert r['current_size'] == CURRENT[r['stage']]
        assert r['speedup'] == r['previous_s'] / r['current_s'] > 0
    md = '\n'.join(markdown(res))
    assert '| topk | 4,096 | 256 |' in md


def test_incremental_scores_rounds_removal_and_references(tmp_path):
    from benchmarks.incremental import markdown, plot, run

    res = run(600, 2, ['infomap-knn'])
    assert res['step'] == 6
    m = res['methods'][0]
    assert [r['round'] for r in m['rounds']] == [1, 2]
    for r in m['rounds']:
        assert r['ratio'] == r['add_s'] / m['create_s'] > 0
        assert 0 < r['region_size'] <= r['faces']
        assert r['kept_id_untouched'] in (None, 1.0)
    for key in ('incremental', 'at_once', 'after_remove', 'never_added'):
        assert 0 < m[key]['pairwise_fscore'] <= 1
    md = '\n'.join(markdown(res))
    assert '| infomap-knn | 1 | 606 |' in md and 'add / create' in md
    assert 'add / at once' in md and 'never added' in md
    assert [p.name for p in plot(res, tmp_path)] == ['incremental_rounds.png']


def test_incremental_timing_only_skips_the_references(tmp_path):
    from benchmarks.incremental import markdown, result_name, run, write

    res = run(600, 1, ['infomap-knn'], backend='auto', references=False)
    m = res['methods'][0]
    assert 'at_once' not in m and 'after_remove' not in m
    assert m['rounds'][0]['ratio'] == m['rounds'][0]['add_s'] / m['create_s'] > 0
    md = '\n'.join(markdown(res))
    assert 'Timing only' in md and "backend 'auto'" in md
    assert 'add / at once' not in md and 'never added' not in md
    # Named by size, and by method unless the SDT model alone.
    assert result_name(res) == 'incremental_600_infomap-knn'
    sdt_only = {**res, 'methods': [{**m, 'method': 'sdt'}]}
    assert result_name(sdt_only) == 'incremental_600'
    write(res, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        'incremental_600_infomap-knn.json',
        'incremental_600_infomap-knn.md',
        'incremental_600_infomap-knn_rounds.png',
    ]


def test_scale_row_compares_the_topk_with_the_oracle(tmp_path):
    from benchmarks.scale import generate, markdown, run_baseline, run_one, summary

    generate(1500, 32, tmp_path)
    row = run_one(tmp_path, 80)
    row['baseline'] = run_baseline(tmp_path, 'infomap-knn', 0.7)
    assert row['features'] == 'memory-mapped .npy' and row['num_nodes'] == 1500
    assert 1.0 <= row['oracle_mean_topk'] <= 80.0
    assert 0.0 <= row['topk_mae'] <= 79.0
    # The mean error is at least the gap of the means:
    assert row['topk_mae'] >= abs(row['mean_topk'] - row['oracle_mean_topk']) - 1e-9
    old = {k: v for k, v in row.items() if k not in ('oracle_mean_topk', 'topk_mae')}
    text = '\n'.join(markdown([row, old], summary([row, old], 32, 80)))
    assert '| oracle mean Top-K | Top-K MAE |' in text
    assert f'| {row["topk_mae"]:.2f} |' in text
    # The row recorded before the comparison:
    assert f'| {row["mean_topk"]:.1f} | - | - | {row["num_links"]:,} |' in text


def test_scale_runs_the_baselines_apart_on_the_graph_of_the_sdt_stages(tmp_path):
    from benchmarks import scale
    from torch_geometric_sdt.baselines import cluster_knn
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.memory import estimate_memory
    from torch_geometric_sdt.metrics import evaluate
    from torch_geometric_sdt.nn.knn import knn

    out = tmp_path / 'out'
    argv = ['--sizes', '1500', '--dim', '32', '--regime', 'msceleb']
    scale.main([*argv, '--out', str(out), '--tmp', str(tmp_path)])
    assert not (out / 'scale.json').exists()
    (row,) = json.loads((out / 'scale_msceleb.json').read_text())['rows']
    assert row['regime'] == 'msceleb' and row['num_nodes'] == 1500
    assert row['matches_cluster'] is True  # the SDT stages are cluster()
    x, y = regime_draw('msceleb', 1500, 32, seed=0)
    assert y.bincount().min() >= 50  # the regime's identity sizes
    graph = knn(x, 80)
    for key, method, thr in (('baseline', 'infomap-knn', 0.7), ('fc_es', 'fc-es', 0.3)):
        want = evaluate(cluster_knn(graph, method, threshold=thr), y)
        assert row[key]['metrics'] == pytest.approx(want)
        assert row[key]['threshold'] == thr and row[key]['seconds'] > 0
        assert row[key]['peak_rss_above_base'] > 0
    text = (out / 'scale_msceleb.md').read_text()
    assert "regime_draw('msceleb')" in text and '## Baselines on the same' in text
    # A baseline killed for memory is recorded as such, the rest kept:
    row['fc_es'] = {'method': 'fc-es', 'threshold': 0.3, 'error': 'exit status -9'}
    text = '\n'.join(scale.markdown([row], scale.summary([row], 32, 80), 'msceleb'))
    assert '| 1,500 | fc-es (0.3) | failed (exit status -9) |' in text
    assert f'| 1,500 | infomap-knn (0.7) | {row["baseline"]["seconds"]:.2f} |' in text
    assert row['sdt_metrics']['pairwise_fscore'] > 0.9
    # The totals the report names: time of the SDT stages, peak of the process
    assert row['end_to_end_seconds'] == row['sdt_total_s'] > 0
    assert row['peak_rss_gb'] == row['max_rss'] / 1e9
    assert row['peak_rss_gb'] * 1e9 > row['measured_peak'] > 0
    assert f'| 1,500 | {row["end_to_end_seconds"]:.0f} | ' in text
    # The 5.21M projection is also given at the Top-K the model predicted:
    proj = json.loads((out / 'scale_msceleb.json').read_text())['projection']
    assert proj['mean_topk'] == row['mean_topk'] > proj['assumed_mean_topk'] == 20
    want = estimate_memory(
        scale.PROJECTION_NODES, 32, 80, mapped=True, mean_topk=row['mean_topk']
    )
    assert proj['estimate_at_measured_topk'] == want
    assert proj['estimate_at_measured_topk']['peak'] > proj['estimate']['peak']
    assert (
        f'At the mean Top-K the model predicted at 1,500 ({row["mean_topk"]:.1f}'
        in text
    )


def test_knn_memory_rows_keep_other_sizes_and_compare_with_the_model(tmp_path):
    from benchmarks import knn_memory
    from torch_geometric_sdt.memory import estimate_memory

    recorded = {'num_nodes': 7, 'dim': 256, 'k': 80, 'knn_backend': 'pynndescent'}
    recorded.update(seconds=1.0, peak_rss_above_base=2**30, graph_bytes=1)
    recorded.update(date='then', commit='abc')
    (tmp_path / 'knn_memory.json').write_text(json.dumps({'rows': [recorded]}))
    knn_memory.main(['--sizes', '2500', '--dim', '32', '--out', str(tmp_path)])
    doc = json.loads((tmp_path / 'knn_memory.json').read_text())
    old, row = doc['rows']  # sorted by size; the recorded row is kept
    assert old['commit'] == 'abc' and row['num_nodes'] == 2500
    assert row['knn_backend'] == 'exact' and row['graph_bytes'] == 2500 * 80 * 12
    want = estimate_memory(2500, 32, 80, backend='exact', mapped=True)['knn']
    assert row['estimate_knn'] == want
    assert row['estimate_over_measured'] == want / row['peak_rss_above_base']
    assert row['peak_rss_above_base'] > 0 and row['seconds'] > 0
    text = (tmp_path / 'knn_memory.md').read_text()
    assert '| 2,500 | exact |' in text and '| 7 | pynndescent |' in text


def test_scale_report_compares_recorded_rows_with_this_memory_model(
    tmp_path, monkeypatch
):
    from benchmarks import scale
    from torch_geometric_sdt.memory import estimate_memory

    scale.generate(1500, 32, tmp_path)
    row = scale.run_one(tmp_path, 80)
    row['baseline'] = scale.run_baseline(tmp_path, 'infomap-knn', 0.7)
    assert 'estimate' not in row  # computed when the report is written
    stale = {**row, 'estimate': {'peak': 1}, 'estimate_over_measured': 0.0}
    # A row recorded when the features were held in memory:
    held = {k: v for k, v in stale.items() if k != 'features'}
    held['num_nodes'] = 1501
    (tmp_path / 'scale.json').write_text(json.dumps({'rows': [stale, held]}))
    monkeypatch.setattr(sys, 'argv', ['scale', '--report', '--out', str(tmp_path)])
    scale.main()
    got, old = json.loads((tmp_path / 'scale.json').read_text())['rows']
    want = estimate_memory(
        1500, 32, 80, method='sdt', backend=row['knn_backend'], mapped=True
    )
    assert got['estimate'] == want
    assert got['estimate_over_measured'] == want['peak'] / row['measured_peak']
    assert got['stages'] == row['stages']  # nothing was run again
    assert old['estimate'] == estimate_memory(
        1501, 32, 80, method='sdt', backend=row['knn_backend']
    )
    assert '| 1,500 |' in (tmp_path / 'scale.md').read_text()

    monkeypatch.setattr(
        sys, 'argv', ['scale', '--report', '--out', str(tmp_path / 'none')]
    )
    with pytest.raises(SystemExit):
        scale.main()


def test_scale_row_with_a_links_cap_is_cluster_with_that_cap(tmp_path):
    from benchmarks import scale
    from torch_geometric_sdt.memory import estimate_memory

    scale.generate(1500, 32, tmp_path, 'msceleb')
    row = scale.run_one(tmp_path, 80, max_links=8)
    assert row['max_links'] == 8 and row['matches_cluster'] is True
    assert row['num_links'] <= 8 * 1500 < 4 * row['mean_topk'] * 1500
    scale.add_estimates(row)
    row['baseline'] = {'method': 'infomap-knn', 'threshold': 0.7, 'error': 'not run'}
    want = estimate_memory(1500, 32, 80, backend='exact', mapped=True, max_links=8)
    assert row['estimate'] == want
    assert scale.result_name('msceleb', 8) == 'scale_msceleb_links8'
    assert scale.result_name('lfw') == 'scale'
    text = '\n'.join(scale.markdown([row], scale.summary([row], 32, 80), 'msceleb'))
    assert 'at most 8 links per node (`max_links=8`)' in text


def test_link_cap_scores_both_rules_against_the_model_partition():
    from benchmarks.link_cap import columns, score_caps, tables, verdict
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    x, y = regime_draw('msceleb', 800, 32, seed=0)
    cell = score_caps(model, x, y, (4,))  # raises if 'none' is not cluster()'s
    assert [key for key, _ in columns((4,))] == ['none', '4', '4 strongest']
    assert cell['mean_topk'] > 40
    # Both rules keep 4 links of every node that has that many:
    assert cell['4']['links'] == cell['4 strongest']['links'] <= 4 * 800
    assert cell['none']['links'] > 10 * cell['4']['links']
    row = {'cell': 'msceleb', 'num_nodes': 800, **cell}
    summ = verdict([row], (4,))
    delta = cell['4']['pairwise_fscore'] - cell['none']['pairwise_fscore']
    assert summ['4']['worst_delta'] == delta
    assert summ['4']['links_ratio'] == cell['4']['links'] / cell['none']['links']
    assert '| msceleb | 800 |' in '\n'.join(tables([row], (4,)))


def test_precision_scores_both_precisions_and_the_share_that_moves():
    from benchmarks.precision import COMPARED, score_cell, tables
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.datasets import regime_draw
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    x, y = regime_draw('lfw', 900, 32, seed=1)
    cell = score_cell(model, x, y)
    model.precision = 'float32'
    want = model.cluster(x)
    from torch_geometric_sdt.metrics import evaluate

    assert cell['float32']['pairwise_fscore'] == evaluate(want, y)['pairwise_fscore']
    assert set(COMPARED) <= set(cell)
    assert 0.0 < cell['topk_differs'] < 0.2  # bfloat16 moves a few K_i
    assert cell['topk_mean_change'] >= cell['topk_differs']  # |change| >= 1 where any
    for p in COMPARED:
        assert cell[p]['topk_mae'] >= 0 and cell[p]['mean_topk'] >= 1
    row = {'cell': 'lfw', 'num_nodes': 900, **cell}
    text = '\n'.join(tables([row]))
    assert '| lfw | 900 |' in text and '**mean**' in text


def test_scale_row_at_bfloat16_is_cluster_at_that_precision(tmp_path):
    from benchmarks import scale

    scale.generate(1200, 32, tmp_path)
    row = scale.run_one(tmp_path, 80, precision='bfloat16')
    # run_one raises unless the staged pipeline equals cluster() at bfloat16:
    assert row['precision'] == 'bfloat16' and row['matches_cluster'] is True
    assert scale.result_name('lfw', None, 'bfloat16') == 'scale_bfloat16'
    assert scale.result_name('msceleb', 8, 'float32') == 'scale_msceleb_links8'
    row['baseline'] = {'method': 'infomap-knn', 'threshold': 0.7, 'error': 'not run'}
    text = '\n'.join(scale.markdown([row], scale.summary([row], 32, 80)))
    assert "the Top-K predictor in bfloat16 (`precision='bfloat16'`)" in text


def test_model_speed_times_both_models_and_their_topk_stage(tmp_path, monkeypatch):
    from benchmarks import model_speed
    from torch_geometric_sdt.pretrained import default_model_path

    argv = ['model_speed', '--baseline', str(default_model_path()), '--nodes', '600']
    argv += ['--repeats', '2', '--out', str(tmp_path)]
    monkeypatch.setattr(sys, 'argv', argv)
    model_speed.main()
    doc = json.loads((tmp_path / 'model_speed.json').read_text())
    assert doc['num_nodes'] == 600
    for key in ('seconds', 'predict_topk_seconds'):
        assert sorted(doc[key]) == ['baseline', 'shipped']
        assert all(len(v) == 2 and min(v) > 0 for v in doc[key].values())
    ratios = [
        a / b
        for a, b in zip(
            *(doc['predict_topk_seconds'][m] for m in ('shipped', 'baseline'))
        )
    ]
    assert doc['predict_topk_ratios'] == pytest.approx(ratios)
    # The same checkpoint on both sides predicts the same Top-K:
    assert doc['mean_topk']['shipped'] == doc['mean_topk']['baseline']
    md = (tmp_path / 'model_speed.md').read_text()
    assert '`predict_topk` alone: **' in md


def test_eta_choice_sweeps_every_size_and_keeps_the_model_eta(tmp_path):
    from benchmarks.eta_choice import markdown, sweep_size
    from torch_geometric_sdt import SDTClusterer
    from torch_geometric_sdt.pretrained import default_model_path

    model = SDTClusterer.load(default_model_path())
    own = model.config['eta']
    grid = (0.3, 0.6, 0.9)
    s = sweep_size(model, 600, 64, grid)
    assert model.config['eta'] == own
    assert [r['eta'] for r in s['sweep']] == list(grid)
    assert s['chosen'] in grid and s['num_nodes'] == 600
    assert all(0 < r['pairwise_fscore'] <= 1 for r in s['sweep'])
    res = {'model': 'shipped', 'model_eta': 0.6, 'dim': 64, 'grid': list(grid)}
    md = '\n'.join(markdown({**res, 'sizes': [s]}))
    rows = {line.split(' |')[0]: line for line in md.splitlines() if line[:3] == '| 0'}
    assert sorted(rows) == ['| 0.30', '| 0.60*', '| 0.90']
    assert [r for r in rows.values() if '**' in r] == [
        rows[f'| {s["chosen"]:.2f}' + ('*' if s['chosen'] == 0.6 else '')]
    ]
    assert '600 faces: the rule picks' in md
