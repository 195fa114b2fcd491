"""The import graph of the ``qd`` package has no cycle, and no method imports the run that calls it.

Read statically with ``ast`` from every ``qd/**/*.py``: every ``import`` and ``from ... import``
statement, at module level and inside functions alike (an import inside a function runs later, but
a circle through one is still a circle a reader must follow), except those under ``if TYPE_CHECKING:``
(annotations only, never executed). Importing ``a.b.c`` also runs ``a/b/__init__.py``, so a module
depends on the packages above what it imports.

Try: ``pytest -q tests/test_imports.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qd"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, (ast.Name, ast.Attribute)) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def imported(path: Path) -> set[str]:
    """The qd modules a file imports (the module itself, or the package an imported name lives in)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for rest in child.orelse:
                    visit(rest)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in MODULES)
            visit(child)

    visit(ast.parse(path.read_text()))
    deps = {name for name in found if name in MODULES}
    own_packages = {".".join(this.split(".")[:i]) for i in range(1, this.count(".") + 1)}
    for name in found:
        parts = name.split(".")
        # the packages above an imported module run first, except the importer's own (already running)
        # and the root package qd (it holds nothing)
        deps.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts))) if p in MODULES and p not in own_packages)
    return deps - {this}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def cycle() -> list[str] | None:
    """One import cycle of the graph (as a path a -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def dfs(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := dfs(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := dfs(node)):
            return found
    return None


def test_graph_reads_the_package():
    # the graph sees what it should: the run imports the method contract, a method imports it too
    assert "qd.methods.contract" in GRAPH["qd.run"]
    assert "qd.methods.contract" in GRAPH["qd.methods.lsq"]  # an import inside its function
    assert "qd.tasks" in GRAPH["qd.data"]  # the dataset registry, imported inside prepare


def test_no_import_cycle():
    found = cycle()
    assert found is None, "import cycle: " + " -> ".join(found)


def test_no_method_imports_the_run():
    offenders = sorted(m for m, deps in GRAPH.items() if m.startswith("qd.methods") and "qd.run" in deps)
    assert offenders == []


def test_cycle_detection_finds_a_circle():
    # the check itself: a graph with a circle through a function-level import is refused
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
        assert cycle() == ["a", "b", "c", "a"]
    finally:
        GRAPH = saved
