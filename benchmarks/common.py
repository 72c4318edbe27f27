r"""What every benchmark script shares: where the data and the results live,
the run's provenance (machine, commit, command, date), writing results, and
measuring time and peak memory.

Every script writes ``benchmarks/results/<name>.json`` and ``<name>.md``
through :func:`write_results`, whose header names the machine, the commit,
the command and the date of the run.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
#: The shared folder with the real data (``$SDT_SHARED``, else ``../shared``).
SHARED = Path(os.environ.get('SDT_SHARED', ROOT.parent / 'shared'))
LFW = SHARED / 'data' / 'lfw_mobilefacenet192'
PAGE = os.sysconf('SC_PAGE_SIZE')


def _git(*args: str) -> str:
    return subprocess.run(
        ['git', *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit() -> str:
    r"""The repository's commit (``+dirty`` when tracked files outside
    ``benchmarks/results`` have changes: a run that rewrites its own results
    does not mark itself dirty)."""
    try:
        rev = _git('rev-parse', '--short', 'HEAD')
        dirty = _git(
            'status',
            '--porcelain',
            '--untracked-files=no',
            '--',
            '.',
            ':(exclude)benchmarks/results',
        )
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return rev + ('+dirty' if dirty else '')


def command() -> str:
    r"""The command line of this run, as ``python -m <module> ...`` when the
    script was started with ``-m``."""
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    argv = sys.argv[1:] if spec is not None else sys.argv
    head = ['-m', spec.name] if spec is not None else []
    return ' '.join([Path(sys.executable).name, *head, *argv])


def child_env() -> dict[str, str]:
    r"""This process's environment with the repository first on
    ``PYTHONPATH``, for a benchmark run as ``python -m benchmarks.<name>``
    in a subprocess."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(ROOT), env.get('PYTHONPATH')) if p
    )
    return env


def provenance() -> dict[str, Any]:
    r"""Date, command, commit and machine of this run."""
    total = 0
    try:
        with open('/proc/meminfo') as f:
            total = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    machine: dict[str, Any] = {
        'platform': platform.platform(),
        'processor': platform.processor(),
        'cpu_count': os.cpu_count(),
        'memory_gib': round(total / 2**30, 1),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'torch_threads': torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        machine['gpu'] = torch.cuda.get_device_name(0)
    return {
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'command': command(),
        'commit': commit(),
        'machine': machine,
    }


def header(title: str, prov: dict[str, Any]) -> list[str]:
    r"""The markdown title and provenance lines of a results file."""
    m = prov['machine']
    gpu = f', {m["gpu"]}' if 'gpu' in m else ''
    return [
        f'# {title}',
        '',
        f'- Date: {prov["date"]}; commit `{prov["commit"]}`',
        f'- Command: `{prov["command"]}`',
        f'- Machine: {m["platform"]}, {m["cpu_count"]} CPUs, '
        f'{m["memory_gib"]} GiB, torch {m["torch"]} '
        f'({m["torch_threads"]} threads){gpu}',
        '',
    ]


def write_results(
    name: str,
    title: str,
    payload: dict[str, Any],
    body: list[str],
    out: str | Path = RESULTS,
) -> dict[str, Any]:
    r"""Writes ``<out>/<name>.json`` (provenance plus :obj:`payload`) and
    ``<out>/<name>.md`` (header plus the markdown lines :obj:`body`), and
    prints the markdown. Returns the JSON document.

    Provenance keys already in :obj:`payload` (a recorded document rendered
    again) are kept, so a re-rendered table keeps the date, command and
    commit of the run that measured it.
    """
    doc = {**provenance(), **payload}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = '\n'.join(header(title, doc) + body) + '\n'
    (out / f'{name}.md').write_text(text)
    (out / f'{name}.json').write_text(json.dumps(doc, indent=2, default=str) + '\n')
    print(text)
    return doc


def rss_bytes() -> int:
    r"""Resident memory of this process, in bytes."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE


class Measure:
    r"""Wall time and peak memory of a block: ``seconds``, and ``peak``
    (bytes above the level at entry; the CUDA allocator's peak on a CUDA
    :obj:`device`, else the process RSS sampled every :obj:`interval`
    seconds) and ``peak_rss`` (the absolute RSS peak on the CPU).

    .. code-block:: python

        with Measure() as m:
            work()
        print(m.seconds, m.peak)
    """

    def __init__(
        self, device: torch.device | str = 'cpu', interval: float = 0.005
    ) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.seconds = 0.0
        self.peak = 0
        self.peak_rss = 0

    def __enter__(self) -> Measure:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = rss_bytes()
            self.high = self.start
            self.stop = threading.Event()

            def sample() -> None:
                while not self.stop.is_set():
                    self.high = max(self.high, rss_bytes())
                    time.sleep(self.interval)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *args: object) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.seconds = time.perf_counter() - self.t0
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.start
            return
        self.seconds = time.perf_counter() - self.t0
        self.stop.set()
        self.thread.join()
        self.high = max(self.high, rss_bytes())
        self.peak = self.high - self.start
        self.peak_rss = self.high


def fmt_metrics(m: dict[str, Any]) -> str:
    r"""``pairwise F | BCubed F | NMI | clusters | singletons`` table cells."""
    return (
        f'{m["pairwise_fscore"]:.4f} | {m["bcubed_fscore"]:.4f} | '
        f'{m["nmi"]:.4f} | {m["num_clusters"]:,} | {m["num_singletons"]:,}'
    )


METRIC_COLUMNS = 'pairwise F | BCubed F | NMI | clusters | singletons'


#: Where ``--quick`` smoke runs write, so that they never replace the
#: recorded results in :obj:`RESULTS`.
QUICK_RESULTS = Path(tempfile.gettempdir()) / 'sdt_bench_quick'


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file (a checkpoint's identity in results)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def results_dir(quick: bool = False, out: str | Path | None = None) -> Path:
    r"""The results folder of a run: :obj:`out` when given, else
    :obj:`QUICK_RESULTS` for a ``--quick`` run and :obj:`RESULTS` otherwise.
    """
    if out is not None:
        return Path(out)
    return QUICK_RESULTS if quick else RESULTS
