"""The package's structure: one-way imports, declared dependencies."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'torch_geometric_sdt'


def _load_import_graph():
    spec = importlib.util.spec_from_file_location(
        'import_graph', ROOT / 'scripts' / 'import_graph.py'
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_and_no_upward_import():
    ig = _load_import_graph()
    graph = ig.graph()
    deps = {
        a: {b for b in t if not ig._is_package_init(a, b)} for a, t in graph.items()
    }
    assert ig.cycles(deps) == []
    assert ig.upward(graph) == []


def test_import_graph_finds_a_cycle_and_an_upward_import():
    ig = _load_import_graph()
    graph = {
        'torch_geometric_sdt.utils.a': {'torch_geometric_sdt.nn.b'},
        'torch_geometric_sdt.nn.b': {'torch_geometric_sdt.utils.a'},
    }
    assert ig.cycles(graph) == [
        ['torch_geometric_sdt.nn.b', 'torch_geometric_sdt.utils.a']
    ]
    assert ig.upward(graph) == [
        ('torch_geometric_sdt.utils.a', 'torch_geometric_sdt.nn.b')
    ]


def test_import_graph_script_exits_zero():
    out = subprocess.run(
        [sys.executable, 'scripts/import_graph.py'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'cycles: 0' in out.stdout and 'upward imports: 0' in out.stdout


# Import name -> distribution name, where they differ.
_DISTRIBUTION = {'faiss': 'faiss-cpu', 'torch_geometric': 'torch-geometric'}
# Optional packages: imported only where a `typing.WITH_*` flag (or the
# caller's choice of backend) says they are there.
_OPTIONAL = {'faiss', 'torch_scatter', 'torch_sparse', 'ray', 'pyarrow'}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level package name -> files importing it, over the package."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or '']
            else:
                continue
            for name in names:
                top = name.split('.')[0]
                if top and top not in stdlib and top != 'torch_geometric_sdt':
                    found.setdefault(top, set()).add(path.name)
    return found


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r'[<>=!~\[; ]', r, maxsplit=1)[0].lower() for r in requirements}


def test_every_import_is_a_declared_dependency():
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    required = _requirement_names(project['dependencies'])
    extras = set().union(
        *(_requirement_names(r) for r in project['optional-dependencies'].values())
    )
    for top, files in _third_party_imports().items():
        dist = _DISTRIBUTION.get(top, top).replace('_', '-').lower()
        if top in _OPTIONAL:
            assert dist in extras or top in {'torch_scatter', 'torch_sparse'}, top
            assert dist not in required, f'{dist} is optional but required'
        else:
            assert dist in required, f'{top} (in {sorted(files)}) is not declared'


def test_optional_flags_name_only_optional_packages():
    import torch_geometric_sdt.typing as sdt_typing

    flags = {n for n in sdt_typing.__all__ if n.startswith('WITH_')}
    assert flags == {
        'WITH_FAISS',
        'WITH_RAY',
        'WITH_TORCH_SCATTER',
        'WITH_TORCH_SPARSE',
    }
