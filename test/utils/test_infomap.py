from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch_geometric.testing import withPackage

from torch_geometric_sdt.testing import assert_api_refuses
from torch_geometric_sdt.utils import infomap
from torch_geometric_sdt.utils.infomap import cluster_links, consecutive_cluster_ids


def planted(
    num_blocks: int,
    size: int,
    p_in: float = 0.9,
    num_bridges: int = 2,
    seed: int = 0,
) -> Tensor:
    r"""Directed links: dense inside blocks, a few bridges between them."""
    gen = torch.Generator().manual_seed(seed)
    n = num_blocks * size
    block = torch.arange(n) // size
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
    keep = (block[src] == block[dst]) & (src != dst)
    keep &= torch.rand(n, n, generator=gen) < p_in
    edge_index = torch.stack([src[keep], dst[keep]])
    bridges = torch.stack(
        [torch.arange(num_bridges) * size, (torch.arange(num_bridges) + 1) * size]
    )
    return torch.cat([edge_index, bridges % n], dim=1)


def test_planted_partition() -> None:
    edge_index = planted(5, 12)
    out = infomap(edge_index)
    assert out.dtype == torch.long and out.shape == (60,)
    assert torch.equal(out, torch.arange(60) // 12)
    undirected = infomap(edge_index, directed=False)
    assert torch.equal(undirected, torch.arange(60) // 12)


def test_weights_change_partition() -> None:
    # A complete directed graph on 8 nodes, its weights planting A|B or C|D.
    n = 8
    src, dst = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
    off = src != dst
    edge_index = torch.stack([src[off], dst[off]])

    def weights(group: Tensor) -> Tensor:
        same = group[edge_index[0]] == group[edge_index[1]]
        return torch.where(same, 10.0, 0.05)

    ab = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    cd = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    assert torch.equal(infomap(edge_index, weights(ab)), ab)
    assert torch.equal(infomap(edge_index, weights(cd)), cd)
    # Unit weights: a complete graph has no module structure.
    assert torch.equal(infomap(edge_index), torch.zeros(n, dtype=torch.long))


def test_isolated_nodes() -> None:
    edge_index = planted(2, 10, p_in=1.0, num_bridges=0) + 3
    out = infomap(edge_index, num_nodes=26)
    expected = torch.tensor([0, 1, 2] + [3] * 10 + [4] * 10 + [5, 6, 7])
    assert torch.equal(out, expected)


def test_empty() -> None:
    empty = torch.empty(2, 0, dtype=torch.long)
    assert torch.equal(infomap(empty, num_nodes=5), torch.arange(5))
    assert infomap(empty).numel() == 0
    assert torch.equal(infomap(empty, torch.empty(0), num_nodes=3), torch.arange(3))


def test_seed_determinism_and_chunks() -> None:
    gen = torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, 300, (2, 1500), generator=gen)
    weight = torch.rand(1500, generator=gen)
    a = infomap(edge_index, weight, seed=7)
    b = infomap(edge_index, weight, seed=7)
    assert torch.equal(a, b)
    c = infomap(edge_index, weight, seed=7, chunk_size=97)
    assert torch.equal(a, c)
    d = infomap(edge_index, weight, seed=7, num_trials=3, progress=False)
    assert d.shape == (300,)


def test_consecutive_ids() -> None:
    gen = torch.Generator().manual_seed(5)
    edge_index = torch.randint(0, 200, (2, 600), generator=gen)
    out = infomap(edge_index, num_nodes=220).numpy()
    # Ids are 0..C-1, numbered in order of each cluster's first node:
    _, first = np.unique(out, return_index=True)
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))
    assert np.all(np.diff(first) > 0) and out[0] == 0
    labels = np.array([9, 9, -4, 7, -4, 100])
    assert consecutive_cluster_ids(labels).tolist() == [0, 0, 1, 2, 1, 3]


def test_numpy_input_and_two_level() -> None:
    edge_index = planted(3, 8, p_in=1.0)
    out = infomap(edge_index.numpy(), np.ones(edge_index.size(1)))
    assert torch.equal(out, torch.arange(24) // 8)
    hierarchical = infomap(edge_index, two_level=False)
    assert hierarchical.shape == (24,)


def test_validation() -> None:
    edge_index = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match='shape'):
        infomap(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='integer dtype'):
        infomap(edge_index.float())
    with pytest.raises(ValueError, match='negative'):
        infomap(torch.tensor([[0, -1], [1, 2]]))
    with pytest.raises(ValueError, match='out of range'):
        infomap(edge_index, num_nodes=2)
    with pytest.raises(ValueError, match='edge_weight'):
        infomap(edge_index, torch.ones(3))
    with pytest.raises(ValueError, match='non-negative'):
        infomap(edge_index, torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match='NaN'):
        infomap(edge_index, torch.tensor([1.0, float('nan')]))
    with pytest.raises(ValueError, match='num_trials'):
        infomap(edge_index, num_trials=0)


@pytest.mark.parametrize('seed', [0, -1, 2**32, 2**32 + 1, 99999999999999999999])
def test_seed_outside_infomap_range_is_refused(seed) -> None:
    # Infomap's seed is a C unsigned int: 2**32 + 1 would run as seed 1, and
    # larger values fail to parse deep in the library.
    edge_index = torch.tensor([[0, 1], [1, 0]])
    match = r"'seed' must be an integer in \[1, 4294967295\]"
    with pytest.raises(ValueError, match=match):
        infomap(edge_index, seed=seed)


def test_infomap_range_bounds_are_accepted() -> None:
    edge_index = planted(2, 6, p_in=1.0)
    expected = torch.arange(12) // 6
    assert torch.equal(infomap(edge_index, seed=2**32 - 1), expected)
    assert torch.equal(infomap(edge_index, seed=np.int64(5)), expected)
    for bad in (True, 1.0, '7'):
        with pytest.raises(ValueError, match="'seed' must be an integer"):
            infomap(edge_index, seed=bad)
    for trials in (0, 2**32, 10**20):
        with pytest.raises(ValueError, match=r"'num_trials' must be .*4294967295"):
            infomap(edge_index, num_trials=trials)
    with pytest.raises(ValueError, match="'seed'"):  # through cluster_links too
        cluster_links(edge_index, torch.ones(edge_index.size(1)), 12, seed=2**32)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def test_scratch_folder_is_named_after_the_process_and_removed(
    tmp_path, monkeypatch
) -> None:
    import os
    import re
    import shutil
    import tempfile

    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    seen = []
    rmtree = shutil.rmtree

    def record(path, *args, **kwargs):
        seen.append((os.path.basename(path), sorted(os.listdir(path))))
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, 'rmtree', record)
    infomap(planted(2, 6))
    assert len(seen) == 1
    name, files = seen[0]
    assert re.fullmatch(rf'sdt-infomap-{os.getpid()}-[a-z0-9_]+', name)
    assert files == ['modules.clu']
    assert list(tmp_path.iterdir()) == []


def test_stale_scratch_folders_of_dead_processes_are_removed(
    tmp_path, monkeypatch
) -> None:
    import os
    import tempfile

    from torch_geometric_sdt.utils.infomap import remove_stale_scratch

    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    dead = _dead_pid()
    stale = tmp_path / f'sdt-infomap-{dead}-x7_ab1'
    kept = [
        tmp_path / f'sdt-infomap-{os.getppid()}-x7_ab1',  # a live process
        tmp_path / f'sdt-infomap-{os.getpid()}-x7_ab1',  # this one
        tmp_path / 'sdt-infomap-x7_ab1',  # no process id (older naming)
        tmp_path / f'sdt-infomap-{dead}',
        tmp_path / f'other-{dead}-x7_ab1',
    ]
    for folder in [stale, *kept]:
        folder.mkdir()
        (folder / 'modules.clu').write_text('# partial\n')
    a_file = tmp_path / f'sdt-infomap-{dead}-file01'
    a_file.write_text('not a folder')
    assert torch.equal(infomap(planted(2, 6)), torch.arange(12) // 6)
    assert not stale.exists()
    assert all((folder / 'modules.clu').exists() for folder in kept)
    assert a_file.exists()
    assert remove_stale_scratch(str(tmp_path)) == []
    assert remove_stale_scratch(str(tmp_path / 'missing')) == []


@withPackage('faiss')
def test_faiss_imported_after_infomap_does_not_crash():
    # Infomap's SWIG map accessors segfault once faiss (another SWIG module)
    # has been imported after infomap; run that order in a fresh process.
    code = (
        'import torch\n'
        'from torch_geometric_sdt.utils import infomap\n'
        'import faiss\n'
        'ei = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])\n'
        'print(infomap(ei, num_nodes=5).tolist())\n'
    )
    res = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == '[0, 0, 1, 1, 2]'


# Bad input: each bad edge_index or weight is refused, naming it.
# Each case: (id, call(tmp, good), exception type, regex of the message).
BAD_INPUT = [
    (
        'edge_index out of range',
        lambda t, g: infomap(torch.tensor([[0, 1], [1, 9]]), num_nodes=3),
        ValueError,
        "refers to node 9, out of range for 'num_nodes=3'",
    ),
    (
        'edge_index negative',
        lambda t, g: infomap(torch.tensor([[0, -1], [1, 0]])),
        ValueError,
        'negative node indices',
    ),
    (
        'edge_index float',
        lambda t, g: infomap(torch.zeros(2, 3)),
        ValueError,
        'integer dtype',
    ),
    (
        'edge_index shape',
        lambda t, g: infomap(torch.zeros(3, 3, dtype=torch.long)),
        ValueError,
        r'shape \[2, num_edges\]',
    ),
    (
        'edge_weight negative',
        lambda t, g: infomap(torch.tensor([[0], [1]]), torch.tensor([-1.0])),
        ValueError,
        'non-negative',
    ),
]


@pytest.mark.parametrize(
    'call,exc,match', [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused(tmp_path, good, call, exc, match):
    assert_api_refuses(call, exc, match, tmp_path, good)


def test_weights_of_every_dtype_give_the_same_partition() -> None:
    from torch_geometric_sdt.utils.infomap import _validate

    edge_index = planted(4, 10)
    gen = torch.Generator().manual_seed(0)
    weight = torch.randint(1, 9, (edge_index.size(1),), generator=gen)
    want = infomap(edge_index, weight.double(), seed=7)
    assert want.unique().numel() == 4
    for dtype in (torch.float32, torch.float16, torch.int64):
        assert torch.equal(infomap(edge_index, weight.to(dtype), seed=7), want)
    # float32 weights are handed over chunk by chunk, not copied whole:
    _, w32, _ = _validate(edge_index, weight.float(), None)
    assert w32.dtype == np.float32
    _, w16, _ = _validate(edge_index, weight.half(), None)
    assert w16.dtype == np.float64
