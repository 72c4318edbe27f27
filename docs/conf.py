"""Sphinx configuration of the torch_geometric_sdt documentation.

Build (offline, warnings as errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Two pages are written at build time into ``docs/_generated/`` (not tracked):
the command-line reference, from the ``sdt`` argument parser itself, and the
benchmark results, from the files present in ``benchmarks/results/``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / '_generated'
RESULTS = ROOT / 'benchmarks' / 'results'

# The package is used from the clone; it need not be installed.
sys.path.insert(0, str(ROOT))

import torch_geometric_sdt  # noqa: E402

project = 'torch_geometric_sdt'
author = 'torch_geometric_sdt contributors'
copyright = '2026, torch_geometric_sdt contributors'
version = release = torch_geometric_sdt.__version__

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]

# `_generated` pages are pulled in with `.. include::` only.
exclude_patterns = ['_build', '_generated']
templates_path: list[str] = []
html_theme = 'alabaster'
html_static_path: list[str] = []
html_title = f'torch_geometric_sdt {release}'
pygments_style = 'sphinx'
# A results file that the Markdown lexer cannot tokenise is shown unhighlighted
# rather than failing the build.
suppress_warnings = ['misc.highlighting_failure']

autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_default_options = {'show-inheritance': False}
autoclass_content = 'class'
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# PyG's 'Shapes:' sections are lists, shown under a heading of their own.
napoleon_custom_sections = ['Shapes']
autodoc_inherit_docstrings = False
add_module_names = False


def _write(path: Path, text: str) -> None:
    """Writes only on change, so that Sphinx does not rebuild needlessly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _indent(text: str, prefix: str = '   ') -> str:
    return '\n'.join(
        prefix + line if line.strip() else '' for line in text.splitlines()
    )


def write_cli_reference() -> None:
    """Writes the help of ``sdt`` and of each sub-command, from its parser."""
    import argparse

    from torch_geometric_sdt import cli

    old = os.environ.get('COLUMNS')
    os.environ['COLUMNS'] = '88'
    try:
        parser = cli._parser()
        lines = [
            '.. This file is written by docs/conf.py; do not edit.',
            '',
            '``sdt --help``',
            '~~~~~~~~~~~~~~',
            '',
            '.. code-block:: none',
            '',
            _indent(parser.format_help()),
            '',
        ]
        subparsers = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        )
        pending = [(f'sdt {name}', sub) for name, sub in subparsers.choices.items()]
        while pending:
            command, sub = pending.pop(0)
            title = f'``{command} --help``'
            lines += [
                title,
                '~' * len(title),
                '',
                '.. code-block:: none',
                '',
                _indent(sub.format_help()),
                '',
            ]
            nested = [
                a for a in sub._actions if isinstance(a, argparse._SubParsersAction)
            ]
            for action in nested:  # sdt index create, ...
                pending[:0] = [
                    (f'{command} {name}', p) for name, p in action.choices.items()
                ]
    finally:
        if old is None:
            del os.environ['COLUMNS']
        else:
            os.environ['COLUMNS'] = old
    _write(GENERATED / 'cli.rst', '\n'.join(lines) + '\n')


def _is_result(path: Path) -> bool:
    return not path.stem.endswith('_quick')


def write_results_page() -> None:
    """Includes every ``benchmarks/results/*.md`` and ``*.png`` present now."""
    lines = ['.. This file is written by docs/conf.py; do not edit.', '']
    tables = sorted(RESULTS.glob('*.md')) if RESULTS.is_dir() else []
    plots = sorted(RESULTS.glob('*.png')) if RESULTS.is_dir() else []
    # RESULTS.md embeds all the others; `*_quick.*` are smoke runs, not results.
    tables = [p for p in tables if p.name != 'RESULTS.md' and _is_result(p)]
    plots = [p for p in plots if _is_result(p)]
    if not tables and not plots:
        lines += ['No results are present in ``benchmarks/results/`` in this build.']
    for path in tables:
        title = f'``{path.name}``'
        lines += [
            title,
            '~' * len(title),
            '',
            f'.. literalinclude:: /../benchmarks/results/{path.name}',
            '   :language: markdown',
            '',
        ]
    if plots:
        lines += ['Plots', '~~~~~', '']
        for path in plots:
            lines += [
                f'``{path.name}``',
                '',
                f'.. image:: /../benchmarks/results/{path.name}',
                f'   :alt: {path.stem}',
                '   :width: 100%',
                '',
            ]
    _write(GENERATED / 'results.rst', '\n'.join(lines) + '\n')


def _escape(text: str) -> str:
    """Escapes the characters that reStructuredText would read as markup."""
    for char in '\\*_`|':
        text = text.replace(char, '\\' + char)
    return text


def write_suites_page() -> None:
    """Lists the benchmark suites and their scripts, from ``benchmarks``."""
    lines = ['.. This file is written by docs/conf.py; do not edit.', '']
    try:
        sys.path.insert(0, str(ROOT))
        from benchmarks.__main__ import DESCRIPTIONS, SUITES
    except Exception as e:  # the suite is optional for the documentation
        lines += [f'The benchmark suite could not be imported here ({e}).']
    else:
        lines += [
            '.. list-table::',
            '   :header-rows: 1',
            '   :widths: 15 25 60',
            '',
            '   * - suite',
            '     - script',
            '     - what it measures',
        ]
        for suite, names in SUITES.items():
            for name in names:
                lines += [
                    f'   * - ``{suite}``',
                    f'     - ``benchmarks/{name}.py``',
                    f'     - {_escape(DESCRIPTIONS.get(name, ""))}',
                ]
    _write(GENERATED / 'suites.rst', '\n'.join(lines) + '\n')


write_cli_reference()
write_results_page()
write_suites_page()
