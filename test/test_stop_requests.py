r"""Stop requests through the real command line, at every stage of a run.

Each case starts ``python -m torch_geometric_sdt`` in a fresh process, waits
until stderr announces the stage (the ``[sdt] <stage> ...`` lines, or the
progress bar of a step inside ``cluster (sdt)``), then sends the signal:

* ``SIGTERM`` must end the run with status 130, ``interrupted`` on stderr and
  no traceback, whatever runs at that moment (numba kernels and native
  libraries included), without finishing the stage;
* ``SIGKILL`` ends it with status -9;

and either way the output folder must hold neither the output nor a
temporary file (a run killed outright while writing leaves its hidden
temporary, which the next write of the same file removes: the check does
that clean-up first). One case per kind of stage runs by default; the whole matrix
(every kNN backend, every stage of ``--method sdt`` and ``infomap-knn``, both
signals) needs ``FULL_TEST=1``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from torch_geometric.testing import onlyFullTest

from torch_geometric_sdt import io
from torch_geometric_sdt.datasets import synthetic_faces
from torch_geometric_sdt.nn.knn import knn
from torch_geometric_sdt.typing import WITH_FAISS
from torch_geometric_sdt.utils.atomic import remove_stale_temporaries

ROOT = Path(__file__).resolve().parents[1]
K = 80  # The shipped SDT model's k.
# A fresh process compiles pynndescent's and the Top-K Jaccard's numba code
# before it runs them: tens of seconds on two cores.
TIMEOUT = 600

# What stderr shows when each stage starts (in this order) and, for the
# stages inside `cluster (sdt)`, which progress bars come first.
STAGES = {
    'kNN': ['[sdt] kNN'],
    # The Top-K predictor (after the Jaccard of the kNN context):
    'Top-K': ['[sdt] cluster', 'Top-K:'],
    # The Top-K Jaccard of the predicted Top-K:
    'Jaccard': ['[sdt] cluster', 'Top-K: 100%', 'topk_jaccard:'],
    # The SDT node states and band scores, after that Jaccard:
    'SDT': ['[sdt] cluster', 'Top-K: 100%', 'topk_jaccard: 100%'],
    'Infomap': ['[sdt] cluster', 'Infomap input: 100%'],
    'write': ['[sdt] write'],
}
# The stages of `--method infomap-knn`, whose clustering stage is mostly
# Infomap (without a progress bar; see _cluster_case):
BASELINE_STAGES = {
    'kNN': ['[sdt] kNN'],
    'Infomap': ['[sdt] cluster'],
    'write': ['[sdt] write'],
}
SIGNALS = [signal.SIGTERM, signal.SIGKILL]

_FAISS = pytest.mark.skipif(not WITH_FAISS, reason='faiss is not installed')
# (pynndescent runs by default, see below.)
BACKENDS = [
    'exact',
    pytest.param('faiss', marks=_FAISS),
    pytest.param('faiss-hnsw', marks=_FAISS),
    pytest.param('faiss-ivf', marks=_FAISS),
]
# Seconds from the start of the kNN stage to the signal: the faiss and exact
# backends are then in their search, pynndescent in a fresh process first
# compiles its numba code (about 30 s on two cores at 30K points) and then
# runs it (about 15 s), so the full run also stops it later on; a machine
# fast enough to finish before the signal skips that case.
DELAY = {'pynndescent': 3.0}
NNDESCENT_LATER = [10.0, 20.0, 30.0, 40.0]


class _Run:
    r"""A ``sdt`` process whose stderr is read (and kept) by a thread that
    sends :obj:`sig` as soon as all of :obj:`markers` have shown, in order,
    :obj:`delay` seconds later."""

    def __init__(
        self,
        argv: list[str],
        markers: list[str],
        sig: signal.Signals,
        delay: float = 0.0,
    ) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.argv = argv
        self.markers = list(markers)
        self.sig = sig
        self.delay = delay
        self.lines: list[str] = []
        self.sent = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'torch_geometric_sdt', *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,  # Universal newlines: progress bars ('\r') are lines.
            env=env,
            cwd=ROOT,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        todo = list(self.markers)
        for line in self.proc.stderr:  # Read to the end: the pipe never fills.
            self.lines.append(line)
            if todo and todo[0] in line:
                todo.pop(0)
                if not todo:
                    if self.delay > 0:
                        threading.Timer(self.delay, self._send).start()
                    else:
                        self._send()

    def _send(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self.sig)
            self.sent.set()

    def finish(self) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=60)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        return rc, ''.join(self.lines)


def _check(run: _Run, out: Path, markers: list[str], rc: int, err: str) -> None:
    r"""Checks a run stopped at the stage of :obj:`markers` that was to write
    :obj:`out`."""
    tail = err[-3000:]
    stage = markers[-1]
    assert run.sent.is_set(), f'the run ended before {stage!r} (status {rc}):\n{tail}'
    # The stage itself was stopped: its `[sdt] <stage>` line has no `done`.
    lines = [ln for ln in err.splitlines() if ln.startswith(markers[0])]
    assert not any('done in' in ln for ln in lines), tail
    if run.sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL, tail
        # Killed outright while writing, a run leaves its hidden temporary,
        # which the next write of the same file removes:
        remove_stale_temporaries(out)
    else:
        command = run.argv[0]
        assert rc == 130, tail
        assert f'sdt {command}: interrupted' in err, tail
        for bad in ('Traceback', 'SystemError', 'Exception ignored'):
            assert bad not in err, tail
    assert sorted(p.name for p in out.parent.iterdir()) == [], tail


def _stop(
    argvs: dict[signal.Signals, list[str]],
    outs: dict[signal.Signals, Path],
    markers: list[str],
    delay: float = 0.0,
    may_finish: bool = False,
) -> None:
    r"""Runs one process per signal side by side and checks each (or skips
    if :obj:`may_finish` and a run finished before its signal)."""
    runs = {sig: _Run(argv, markers, sig, delay) for sig, argv in argvs.items()}
    try:
        results = {sig: run.finish() for sig, run in runs.items()}
    finally:
        for run in runs.values():
            if run.proc.poll() is None:  # pragma: no cover
                run.proc.kill()
                run.proc.wait()
    if may_finish and not all(run.sent.is_set() for run in runs.values()):
        pytest.skip(f'the stage ended within {delay} s, before the signal')
    for sig, (rc, err) in results.items():
        _check(runs[sig], outs[sig], markers, rc, err)


# Data #######################################################################


@pytest.fixture(scope='module')
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('stop')
    # Random points: every kNN backend takes seconds on them.
    x = np.random.default_rng(0).standard_normal((30_000, 64)).astype(np.float32)
    np.save(root / 'random.npy', x)
    # Faces for the clustering stages, with their kNN cache so that those
    # runs start at the clustering.
    faces, _ = synthetic_faces(20_000, dim=64, seed=0)
    faces = faces.numpy()
    np.save(root / 'faces.npy', faces)
    io.write_knn(root / 'faces_knn.npz', knn(faces, K, backend='exact'))
    return {
        'random': root / 'random.npy',
        'faces': root / 'faces.npy',
        'faces_knn': root / 'faces_knn.npz',
    }


def _outputs(tmp_path: Path, name: str) -> dict[signal.Signals, Path]:
    r"""One empty folder per signal, and the output to write there."""
    outs = {}
    for sig in SIGNALS:
        (tmp_path / sig.name).mkdir()
        outs[sig] = tmp_path / sig.name / name
    return outs


def _knn_case(
    data: dict[str, Path],
    tmp_path: Path,
    backend: str,
    delay: float | None = None,
    may_finish: bool = False,
) -> None:
    outs = _outputs(tmp_path, 'knn.npz')
    argvs = {
        sig: ['knn', str(data['random']), '-o', str(out), '-k', str(K)]
        + ['--backend', backend]
        for sig, out in outs.items()
    }
    if delay is None:
        delay = DELAY.get(backend, 0.5)
    _stop(argvs, outs, STAGES['kNN'], delay, may_finish)


def _cluster_case(
    data: dict[str, Path], tmp_path: Path, method: str, stage: str
) -> None:
    outs = _outputs(tmp_path, 'pred.meta')
    source = ['--backend', 'exact']
    if stage != 'kNN':  # Start at the clustering.
        source = ['--knn', str(data['faces_knn'])]
    argvs = {
        sig: ['cluster', str(data['faces']), '-o', str(out), '-k', str(K)]
        + ['--method', method, *source]
        for sig, out in outs.items()
    }
    stages = STAGES if method == 'sdt' else BASELINE_STAGES
    markers, delay = stages[stage], 0.0
    if method != 'sdt' and stage == 'Infomap':
        delay = 1.0  # Into Infomap itself, which shows no progress.
    _stop(argvs, outs, markers, delay)


# The default run: NN-descent (numba) during kNN, and one SDT stage #########


def test_stop_during_nndescent(data, tmp_path):
    _knn_case(data, tmp_path, 'pynndescent')


def test_stop_during_sdt_top_k(data, tmp_path):
    _cluster_case(data, tmp_path, 'sdt', 'Top-K')


# The full matrix ############################################################


@onlyFullTest
@pytest.mark.parametrize('backend', BACKENDS)
def test_stop_knn_every_backend(data, tmp_path, backend):
    _knn_case(data, tmp_path, backend)


@onlyFullTest
@pytest.mark.parametrize('delay', NNDESCENT_LATER)
def test_stop_nndescent_later(data, tmp_path, delay):
    _knn_case(data, tmp_path, 'pynndescent', delay, may_finish=True)


@onlyFullTest
@pytest.mark.parametrize('stage', [s for s in STAGES if s != 'Top-K'])
def test_stop_cluster_sdt_every_stage(data, tmp_path, stage):
    _cluster_case(data, tmp_path, 'sdt', stage)


@onlyFullTest
@pytest.mark.parametrize('stage', list(BASELINE_STAGES))
def test_stop_cluster_infomap_every_stage(data, tmp_path, stage):
    _cluster_case(data, tmp_path, 'infomap-knn', stage)
