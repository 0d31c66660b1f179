"""Module structure of the fit path: no module imports another module's private helpers, and the sampler,
graph and hyper-parameter modules form no import cycle (static import graph, lazy imports included)."""

import ast
from pathlib import Path

import wbaug

ROOT = Path(wbaug.__file__).parent


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from wbaug... import name`` in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wbaug"):
            out.extend((node.module, alias.name) for alias in node.names)
    return out


def _module_name(path: Path) -> str:
    return ".".join(("wbaug", *path.relative_to(ROOT).with_suffix("").parts))


def test_no_private_helper_imported_across_modules():
    """``from wbaug.x import _name`` is allowed only when ``_name`` is a module (e.g. ``wbaug.ot._jv``)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        for module, name in _imports(path):
            package = ROOT.parent.joinpath(*module.split("."))
            if name.startswith("_") and not (package / f"{name}.py").exists():
                offenders.append(f"{_module_name(path)}: from {module} import {name}")
    assert not offenders, offenders


def test_no_import_cycle_in_sampling():
    graph = {}
    for path in (ROOT / "sampling").glob("*.py"):
        src = _module_name(path)
        deps = set()
        for module, name in _imports(path):
            candidate = f"{module}.{name}"
            deps.add(
                candidate
                if (ROOT.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                else module
            )
        graph[src] = {d for d in deps if d.startswith("wbaug.sampling.") and d != src}

    def reaches(a: str, b: str, seen: set) -> bool:
        for d in graph.get(a, ()):
            if d == b or (d not in seen and (seen.add(d) or reaches(d, b, seen))):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles
    assert "wbaug.sampling.sampler" not in graph["wbaug.sampling.grid_search"]
