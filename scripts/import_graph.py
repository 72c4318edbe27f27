"""Prints the package's internal import graph, its cycles and the imports
that go against the layering ``cli -> models -> nn / transforms -> utils``.

Usage: python scripts/import_graph.py [--json]

Every ``import`` statement counts, also one inside a function, except those
under ``if TYPE_CHECKING:`` (they never run). Exit status 1 when there is a
cycle or an upward import.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

PACKAGE = 'torch_geometric_sdt'
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: Layer of every module, by prefix (longest match wins); a module may import
#: only modules of the same or a lower layer.
LAYERS = {
    f'{PACKAGE}.cli': 5,
    f'{PACKAGE}.__main__': 5,
    f'{PACKAGE}': 5,  # the package's own __init__
    f'{PACKAGE}.memory': 4,
    f'{PACKAGE}.datasets': 4,
    f'{PACKAGE}.io': 4,
    f'{PACKAGE}.index': 4,
    f'{PACKAGE}.nn.models': 3,
    f'{PACKAGE}.baselines': 3,
    f'{PACKAGE}.nn': 2,
    f'{PACKAGE}.transforms': 2,
    f'{PACKAGE}.metrics': 1,
    f'{PACKAGE}.utils': 1,
    f'{PACKAGE}.typing': 0,
    f'{PACKAGE}.defaults': 0,
    f'{PACKAGE}.version': 0,
    f'{PACKAGE}.pretrained': 0,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def layer(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + '.')), key=len)
    return LAYERS[best]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'
    )


def imports(path: Path, modules: set[str]) -> set[str]:
    name = module_name(path)
    is_pkg = path.name == '__init__.py'
    base = name.split('.') if is_pkg else name.split('.')[:-1]
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition('.')[0]
        return target or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith(PACKAGE):
                        found.add(resolve(alias.name) or alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    stem = '.'.join(base[: len(base) - child.level + 1])
                    mod = f'{stem}.{child.module}' if child.module else stem
                else:
                    mod = child.module or ''
                if not mod.startswith(PACKAGE):
                    continue
                for alias in child.names:
                    full = f'{mod}.{alias.name}'
                    found.add(full if full in modules else resolve(mod) or mod)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob('*.py'))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def _is_package_init(name: str, target: str) -> bool:
    # A package's __init__ re-exports its own submodules: not a dependency.
    return target.startswith(name + '.')


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (a, b)
        for a, targets in g.items()
        for b in targets
        if layer(b) > layer(a) and not _is_package_init(a, b)
    )


def main() -> int:
    sys.setrecursionlimit(10_000)
    g = graph()
    # Package __init__ files only re-export; leave their edges to submodules
    # out of the cycle search.
    g_dep = {a: {b for b in t if not _is_package_init(a, b)} for a, t in g.items()}
    cyc, up = cycles(g_dep), upward(g)
    if '--json' in sys.argv:
        print(
            json.dumps(
                {
                    'modules': len(g),
                    'edges': sum(len(t) for t in g_dep.values()),
                    'cycles': cyc,
                    'upward': up,
                    'graph': {a: sorted(t) for a, t in sorted(g.items())},
                },
                indent=1,
            )
        )
    else:
        print(f'{len(g)} modules, {sum(len(t) for t in g_dep.values())} edges')
        for a in sorted(g):
            print(f'{a} -> {", ".join(sorted(g[a])) or "-"}')
        print(f'cycles: {len(cyc)}')
        for c in cyc:
            print('  ' + ' <-> '.join(c))
        print(f'upward imports: {len(up)}')
        for a, b in up:
            print(f'  {a} ({layer(a)}) -> {b} ({layer(b)})')
    return 1 if cyc or up else 0


if __name__ == '__main__':
    raise SystemExit(main())
