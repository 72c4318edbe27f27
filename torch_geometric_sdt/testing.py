"""Helpers for the package's bad-input tests.

Every bad file, array, graph and option is refused with an error that names
the problem and writes nothing. Through the Python API that is a
:class:`ValueError` (or the matching :class:`OSError`) whose message names the
problem, with no output and no temporary file left behind. Through ``sdt``
(:func:`torch_geometric_sdt.cli.main`) it is exit status 2, one line on stderr
naming the problem, and neither the output nor a temporary file left behind.
Graph cases (``edge_index``, kNN lists, per-node Top-K) have no command-line
path except through a kNN cache file.

Each test module keeps a table of its cases and checks them with
:func:`assert_api_refuses` or :func:`assert_cli_refuses`. The cases spoil one
well-formed data set of :data:`GOOD_N` points: the features ``x.npy``, the
labels ``y.meta`` and their kNN cache ``knn.npz``. The helpers below write the
spoilt files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch_geometric_sdt.nn.knn import KNN
    from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer

__all__ = [
    'GOOD_N',
    'GOOD_D',
    'GOOD_K',
    'write_npy',
    'write_bin',
    'write_meta',
    'write_knn_file',
    'knn_array',
    'with_value',
    'small_clusterer',
    'run_cli',
    'assert_nothing_written',
    'assert_cli_refuses',
    'assert_api_refuses',
    'assert_ray_stages_match_local',
]

#: Number of points of the well-formed data set.
GOOD_N = 120
#: Feature dimension of the well-formed data set.
GOOD_D = 16
#: Neighbours per point of the well-formed data set's kNN graph.
GOOD_K = 8


def write_npy(tmp: Path, name: str, array: np.ndarray) -> str:
    """Saves ``array`` as ``tmp / name`` and returns the path."""
    np.save(tmp / name, array)
    return str(tmp / name)


def write_bin(tmp: Path, x: np.ndarray, trim: int = 0, name: str = 'f.bin') -> str:
    """Writes ``x`` as raw little-endian float32, less its last ``trim`` bytes,
    to ``tmp / name`` and returns the path."""
    data = np.ascontiguousarray(x, dtype='<f4').tobytes()
    (tmp / name).write_bytes(data[: len(data) - trim])
    return str(tmp / name)


def write_meta(tmp: Path, text: str, name: str = 'labels.meta') -> str:
    """Writes ``text`` to ``tmp / name`` and returns the path."""
    (tmp / name).write_text(text)
    return str(tmp / name)


def write_knn_file(tmp: Path, data: np.ndarray) -> str:
    """Saves ``data`` as the kNN cache ``tmp / 'cache.npz'`` and returns the
    path."""
    np.savez(tmp / 'cache.npz', data=data)
    return str(tmp / 'cache.npz')


def knn_array(
    graph: KNN, id: float | None = None, dist: float | None = None
) -> np.ndarray:
    """``graph`` in the learn-to-cluster layout ``[N, 2, k]`` (ids, then
    cosine distances), with the id and/or distance of one entry (node 3,
    rank 2) replaced by ``id`` and ``dist``."""
    data = np.stack([graph.index.numpy(), 1 - graph.sim.numpy()], axis=1)
    if id is not None:
        data[3, 0, 2] = id
    if dist is not None:
        data[3, 1, 2] = dist
    return data


def with_value(x: np.ndarray, row: int, value: float) -> np.ndarray:
    """A copy of ``x`` with every entry of one row set to ``value``."""
    x = x.copy()
    x[row] = value
    return x


def small_clusterer() -> SDTClusterer:
    """An untrained :class:`~torch_geometric_sdt.nn.models.SDTClusterer` for
    :data:`GOOD_K` neighbours, small enough to build in milliseconds."""
    from torch_geometric_sdt.nn.models.sdt_clusterer import SDTClusterer

    return SDTClusterer(k=GOOD_K, hidden_channels=8, predictor_channels=8, heads=2)


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    """Runs ``sdt argv`` in-process and returns its exit status and stderr
    (``capsys`` is pytest's fixture of that name). An option that
    :mod:`argparse` itself rejects gives its exit status too."""
    from torch_geometric_sdt.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse rejects an option itself
        rc = int(e.code)
    return rc, capsys.readouterr().err


def assert_nothing_written(out: Path) -> None:
    """Asserts that neither ``out`` nor a temporary file beside it exists."""
    assert not out.exists()
    left = [p.name for p in out.parent.iterdir() if '.tmp' in p.name]
    assert left == [], f'temporary files left behind: {left}'


def assert_cli_refuses(
    build: Callable[[Path, dict], list[str]],
    match: str,
    tmp_path: Path,
    good: dict,
    capsys: Any,
) -> None:
    """Asserts that ``sdt build(tmp_path, good) -o OUT -q`` exits with status
    2 and one line on stderr matching the regular expression ``match``
    (:mod:`argparse` prints its usage first), without a traceback, and writes
    neither ``OUT`` nor a temporary file. ``evaluate`` writes nothing and is
    run without ``-o``."""
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    argv = build(tmp_path, good)
    if argv[0] == 'evaluate':
        out = out_dir / 'never.txt'  # evaluate writes nothing at all
    else:
        out = out_dir / ('model.safetensors' if argv[0] == 'train' else 'out.npz')
        if argv[0] == 'cluster':
            out = out_dir / 'pred.meta'
        argv += ['-o', str(out)]
    rc, err = run_cli(argv + ['-q'], capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert 'Traceback' not in err
    assert any(re.search(match, line) for line in lines), err
    if 'invalid choice' not in match:  # argparse prints usage first
        assert len(lines) == 1, err
    assert_nothing_written(out)


def assert_api_refuses(
    call: Callable[[Path, dict], Any],
    exc: type[BaseException],
    match: str,
    tmp_path: Path,
    good: dict,
) -> None:
    """Asserts that ``call(tmp_path, good)`` raises ``exc`` with a message
    matching the regular expression ``match`` (searched as
    :func:`pytest.raises` does) and leaves no temporary file in
    ``tmp_path``."""
    before = set(tmp_path.iterdir())
    try:
        call(tmp_path, good)
    except exc as e:
        if not re.search(match, str(e)):
            raise AssertionError(
                f'Regex pattern did not match.\n Regex: {match!r}\n Input: {str(e)!r}'
            ) from e
    else:
        raise AssertionError(f'DID NOT RAISE {exc.__name__}')
    created = {p for p in tmp_path.iterdir() if p not in before}
    assert not any('.tmp' in p.name for p in created)


def assert_ray_stages_match_local(
    model: SDTClusterer, x: Any, block_rows: int, chunks: dict[str, int]
) -> dict:
    """Runs the SDT stages on the Ray engine
    (:func:`~torch_geometric_sdt.nn.models.sdt_distributed.cluster_ray`,
    :obj:`block_rows` nodes per task and the given chunk sizes) and asserts
    that they equal the local engine's stages run with the same chunks: the
    kNN ids, the set Jaccard, the Top-K and the scored pairs (equal), the
    Top-K Jaccard (within :math:`10^{-6}`) and the pairs' probabilities
    (within :math:`10^{-4}`, as the Jaccard scores feed them). Returns the
    engine statistics (:meth:`EngineStats.as_dict`)."""
    import torch

    from torch_geometric_sdt.nn.models.sdt_distributed import cluster_ray

    ctx, topk, jac, band_pos, band_prob, stats = cluster_ray(
        model,
        x,
        graph=None,
        topk=None,
        backend='exact',
        address=None,
        chunks=chunks,
        block_rows=block_rows,
    )
    local = model.context(x, backend='exact')
    assert torch.equal(ctx.knn.index, local.knn.index)
    assert torch.equal(ctx.shared, local.shared)
    assert torch.equal(topk, model.predict_topk(local, batch_size=chunks['topk']))
    # A few Jaccard scores may round their last bit differently in a worker
    # process.
    torch.testing.assert_close(jac, model.jaccard(local, topk), rtol=0, atol=1e-6)
    h = model.node_states(local, topk, jac, chunk_size=chunks['nodes'])
    pos, prob = model.score_band(local, topk, jac, h, chunk_size=chunks['band'])
    assert torch.equal(band_pos, pos)
    torch.testing.assert_close(band_prob, prob, rtol=0, atol=1e-4)
    return stats.as_dict()
