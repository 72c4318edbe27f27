"""The documentation: the Sphinx build, API coverage and the guide snippets."""

from __future__ import annotations

import importlib
import pkgutil
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch_geometric.typing as pyg_typing
from torch_geometric.testing import withPackage

import torch_geometric_sdt

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
API = DOCS / 'api'
SNIPPETS = DOCS / 'snippets'
PYG_GUIDE = DOCS / 'guides' / 'pyg.rst'

_DIRECTIVE = re.compile(
    r'^\.\. (?:auto(?:class|function|data|exception|attribute)|py:data)::'
    r'\s+(\S+)\s*$',
    re.MULTILINE,
)
_AUTOMODULE = re.compile(
    r'^\.\. automodule::\s+(\S+)\s*\n((?:[ \t]+:[^\n]*\n?)*)', re.MULTILINE
)


def _resolve(name: str) -> Any:
    """Resolves a dotted name as :mod:`sphinx.ext.autodoc` does for a module
    member: imports the module named by all but the last part, then reads the
    attribute (so ``torch_geometric_sdt.utils.topk_jaccard`` is the function
    and ``torch_geometric_sdt.nn.knn.KNN`` is read from the module).
    """
    module, _, attr = name.rpartition('.')
    return getattr(importlib.import_module(module), attr)


def _documented() -> dict[str, Any]:
    """Every object the API reference documents: dotted name -> object."""
    out: dict[str, Any] = {}
    for path in sorted(API.glob('*.rst')):
        text = path.read_text()
        for name in _DIRECTIVE.findall(text):
            out[name] = _resolve(name)
        for module, options in _AUTOMODULE.findall(text):
            if re.search(r':members:\s*$', options, re.MULTILINE):
                mod = importlib.import_module(module)
                for name in getattr(mod, '__all__', []):
                    out[f'{module}.{name}'] = getattr(mod, name)
    return out


def _public_modules() -> list[str]:
    """The package, its subpackages and modules that declare ``__all__``."""
    names = ['torch_geometric_sdt']
    for info in pkgutil.walk_packages(
        torch_geometric_sdt.__path__, prefix='torch_geometric_sdt.'
    ):
        if info.name.rsplit('.', 1)[-1].startswith('_'):
            continue
        module = importlib.import_module(info.name)
        if info.ispkg or hasattr(module, '__all__'):
            names.append(info.name)
    return names


def test_every_public_name_is_documented():
    documented = _documented()
    assert 'torch_geometric_sdt.nn.conv.SparseDiffAttention' in documented
    missing = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if not any(
                full.rsplit('.', 1)[-1] == name and doc is obj
                for full, doc in documented.items()
            ):
                missing.append(f'{module_name}.{name}')
    assert not missing, f'public names missing from docs/api/*.rst: {missing}'


def test_pyg_guide_runs_every_snippet():
    # Every code block of the PyG guide is a snippet file that the test below
    # executes, so the guide's code cannot rot.
    text = PYG_GUIDE.read_text()
    assert '.. code-block:: python' not in text
    included = set(re.findall(r'literalinclude:: /snippets/(\S+\.py)', text))
    assert included == {p.name for p in SNIPPETS.glob('*.py')}


@pytest.mark.parametrize('name', sorted(p.stem for p in SNIPPETS.glob('*.py')), ids=str)
def test_snippet(name: str):
    if name == 'neighbor_loader' and not (
        pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE
    ):
        pytest.skip("NeighborLoader needs 'pyg-lib' or 'torch-sparse'")
    runpy.run_path(str(SNIPPETS / f'{name}.py'), run_name='__main__')


@withPackage('sphinx')
def test_sphinx_build(tmp_path: Path):
    out = tmp_path / 'html'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'sphinx',
            '-W',
            '--keep-going',
            '-q',
            '-b',
            'html',
            '-d',
            str(tmp_path / 'doctrees'),
            str(DOCS),
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    nn_page = (out / 'api' / 'nn.html').read_text()
    assert 'SparseDiffAttention' in nn_page
    assert 'Top-K mask' in nn_page  # the class docstring was rendered
    utils_page = (out / 'api' / 'utils.html').read_text()
    assert 'topk_jaccard' in utils_page
    assert 'GraphNet' in (out / 'guides' / 'pyg.html').read_text()
    assert 'sdt cluster' in (out / 'api' / 'cli.html').read_text()
    assert (out / 'method.html').exists()
