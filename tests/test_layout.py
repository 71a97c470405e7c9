"""The house's import graph, read from the source (every `import` and `from ... import`, function-level ones
included): library folders know no run context, and no two folders import each other."""

import ast
from pathlib import Path

import pytest

TSQ = Path(__file__).resolve().parents[1] / "tsq"
LIBRARY = ("data", "grading", "models", "sampling", "evaluation", "refinement", "training")
FOUNDATION = ("cache", "text", "progress", "validate")  # modules every layer may use; they use only each other


def node(module: str) -> str:
    """The folder (package) a tsq module belongs to, or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    """node -> the nodes it imports (itself left out)."""
    graph: dict[str, set[str]] = {}
    for path in TSQ.rglob("*.py"):
        module = ".".join(path.relative_to(TSQ.parent).with_suffix("").parts).removesuffix(".__init__")
        mine = graph.setdefault(node(module), set())
        for item in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(item, ast.Import):
                names = [alias.name for alias in item.names]
            elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
                names = [item.module]
            mine |= {node(n) for n in names if n.startswith("tsq.")}
        mine.discard(node(module))
    return graph


def test_library_folders_never_import_the_stages():
    graph = imports()
    assert {folder: graph[folder] & {"stages"} for folder in LIBRARY} == {folder: set() for folder in LIBRARY}


def test_foundation_modules_use_only_each_other():
    graph = imports()
    assert {m: graph[m] - set(FOUNDATION) for m in FOUNDATION} == {m: set() for m in FOUNDATION}


def test_no_two_folders_import_each_other_directly_or_around_a_loop():
    graph = imports()
    order, state = [], {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == "done":
            return
        if state.get(n) == "open":
            pytest.fail("import loop: " + " -> ".join([*path[path.index(n) :], n]))
        state[n] = "open"
        for m in sorted(graph.get(n, ())):
            visit(m, [*path, n])
        state[n] = "done"
        order.append(n)

    for n in sorted(graph):
        visit(n, [])
    assert "stages" in order and order.index("stages") > max(order.index(f) for f in LIBRARY)
