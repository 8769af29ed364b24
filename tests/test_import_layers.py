""" The package's import graph, read from the source (ast), lazy imports inside functions included:

* no import cycle between the package's modules (a cycle works today only by the order of imports, and
  breaks when someone imports a module first or moves a line);
* no private name (``_x``) or private module imported from another subpackage (it is an internal of that
  subpackage, free to change under its own tests);
* the bottom layer ``core`` imports nothing else from the package.
"""
import ast
from pathlib import Path

import pytest

PKG = 'timm_normplugins'
ROOT = Path(__file__).resolve().parents[1] / PKG

# Cycles in code other engineers own, listed so this test stays useful meanwhile. Each entry must still be a
# cycle: once it is gone, the test asks to drop it from here.
KNOWN_CYCLES = set()  # none: add one here only with a reason
KNOWN_PRIVATE = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules():
    return {_module_name(p): p for p in sorted(ROOT.rglob('*.py'))}


def _is_package(mods, name):
    return mods[name].name == '__init__.py'


def _imports(mods, name):
    """``(target module, imported names)`` for every import of the package inside module ``name``."""
    path = mods[name]
    package = name if _is_package(mods, name) else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == PKG or a.name.startswith(PKG + '.'):
                    yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target != PKG and not target.startswith(PKG + '.'):
                continue
            names = [a.name for a in node.names]
            subs = [n for n in names if f'{target}.{n}' in mods]
            for n in subs:  # ``from .pkg import submodule``
                yield f'{target}.{n}', ()
            if len(subs) < len(names):
                yield target, tuple(n for n in names if n not in subs)


def import_graph():
    """Edges ``module -> modules whose code its imports run``: the target and every package ``__init__`` above
    it that is not already running as a parent of the importer."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m in mods:
        ancestors = {'.'.join(m.split('.')[:i]) for i in range(1, m.count('.') + 1)}
        for target, _ in _imports(mods, m):
            while target not in mods:  # ``import timm_normplugins.x.y`` of a name, not a module
                target = target.rpartition('.')[0]
            parts = target.split('.')
            for i in range(1, len(parts) + 1):
                t = '.'.join(parts[:i])
                if t != m and t not in ancestors and t in mods:
                    graph[m].add(t)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _subpackage(name):
    parts = name.split('.')
    return parts[1] if len(parts) > 1 else ''


def _private(part):
    return part.startswith('_') and not (part.startswith('__') and part.endswith('__'))


def private_imports():
    mods = _modules()
    bad = []
    for m in mods:
        for target, names in _imports(mods, m):
            if _subpackage(target) == _subpackage(m):
                continue
            private_parts = [p for p in target.split('.')[1:] if _private(p)]
            private_names = [n for n in names if _private(n)]
            if private_parts or private_names:
                bad.append(f'{m} imports {", ".join(private_names) or "module"} from {target}')
    return bad


def test_the_walker_sees_cycles_and_private_imports(tmp_path, monkeypatch):
    # the checks themselves, on a tiny package with one of each
    pkg = tmp_path / PKG
    (pkg / 'a').mkdir(parents=True)
    (pkg / 'b').mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'a' / '__init__.py').write_text('from .x import f\n')
    (pkg / 'a' / 'x.py').write_text('def f():\n    from ..b.y import _g\n')
    (pkg / 'b' / '__init__.py').write_text('')
    (pkg / 'b' / 'y.py').write_text('from ..a import f\n_g = 1\n')
    monkeypatch.setitem(globals(), 'ROOT', pkg)
    assert cycles(import_graph()) == [frozenset({f'{PKG}.a', f'{PKG}.a.x', f'{PKG}.b.y'})]
    assert private_imports() == [f'{PKG}.a.x imports _g from {PKG}.b.y']


def test_no_import_cycle():
    found = set(cycles(import_graph()))
    new = [sorted(c) for c in found - KNOWN_CYCLES]
    assert not new, f'import cycles: {new}'
    gone = [sorted(c) for c in KNOWN_CYCLES - found]
    assert not gone, f'no longer cycles, drop them from KNOWN_CYCLES: {gone}'


def test_no_private_import_across_subpackages():
    found = set(private_imports())
    assert not found - KNOWN_PRIVATE, '\n'.join(sorted(found - KNOWN_PRIVATE))
    assert not KNOWN_PRIVATE - found, f'gone, drop them from KNOWN_PRIVATE: {sorted(KNOWN_PRIVATE - found)}'


def test_core_is_the_bottom_layer():
    graph = import_graph()
    core = [m for m in graph if m == f'{PKG}.core' or m.startswith(f'{PKG}.core.')]
    assert core, 'timm_normplugins/core is missing'
    up = {m: sorted(t for t in graph[m] if t not in core and t != PKG) for m in core}
    assert not any(up.values()), f'core imports from higher layers: {up}'
