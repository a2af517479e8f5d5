"""The package's shape: no import circles, the numerics and run directories without Lightning,
no file over 400 lines, ``__all__`` in every public module."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pnode_zoo"
MAX_LINES = 400



def module_name(path: Path) -> str:
    """``pnode_zoo/ode/__init__.py`` -> ``pnode_zoo.ode``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (module level and
    inside functions), relative imports resolved; ``from a import b`` counts ``a.b`` when it
    is a module, ``a`` otherwise. Importing ``a.b.c`` runs ``a`` and ``a.b`` too, except the
    packages that hold ``name`` itself (Python runs them first); an import that names one of
    those (``from pnode_zoo.ode import X`` inside ``pnode_zoo.ode``) still counts. Imports
    under ``if TYPE_CHECKING:`` never run and do not count."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                targets.add(submodule if submodule in known else module)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges = set(targets)
    for target in targets:
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts)))
    edges -= own - targets
    return (edges & known) - {name}


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """``node`` and every node below it, leaving out the bodies of ``if TYPE_CHECKING:``."""
    found = [node]
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            found.extend(n for other in child.orelse for n in _runtime_nodes(other))
        else:
            found.extend(_runtime_nodes(child))
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def circle(graph: dict[str, set[str]], component: list[str]) -> str:
    """One closed path through ``component``, for the message: ``a -> b -> a``."""
    members, path = set(component), [component[0]]
    while True:
        step = sorted(graph[path[-1]] & members)
        nxt = next((m for m in step if m == path[0]), None) or next(
            (m for m in step if m not in path), step[0])
        if nxt in path:
            return " -> ".join([*path[path.index(nxt):], nxt])
        path.append(nxt)


def test_cycle_finder_names_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert circle(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_import_graph_resolves_relative_and_function_level(tmp_path: Path) -> None:
    source = tmp_path / "p" / "q.py"
    source.parent.mkdir()
    source.write_text("from typing import TYPE_CHECKING\nfrom . import r\n"
                      "def f():\n    from .s import t\n    import p.u.v\n"
                      "if TYPE_CHECKING:\n    import p.w\n")
    known = {"p", "p.q", "p.r", "p.s", "p.u", "p.u.v", "p.w"}
    assert imported("p.q", source, known) == {"p.r", "p.s", "p.u", "p.u.v"}


def test_no_import_circles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(circle(graph, c) for c in found)


@pytest.mark.parametrize("module", ["pnode_zoo.ode", "pnode_zoo.models", "pnode_zoo.runs"])
def test_imports_without_lightning(module: str) -> None:
    code = (f"import sys, {module}\n"
            "loaded = sorted(m for m in ('lightning', 'pytorch_lightning', 'lightning_fabric') "
            "if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, f"importing {module} loads {result.stderr.strip()}"


def test_no_long_files() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them): {long}"


def public_modules() -> list[str]:
    return [name for name in modules()
            if not any(part.startswith("_") for part in name.split(".")[1:])]


@pytest.mark.parametrize("module", public_modules())
def test_public_modules_declare_all(module: str) -> None:
    imported_module = importlib.import_module(module)
    names = getattr(imported_module, "__all__", None)
    assert isinstance(names, list | tuple), f"{module} has no __all__"
    missing = [name for name in names if not hasattr(imported_module, name)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"
    assert len(set(names)) == len(names), f"{module}.__all__ repeats a name"
