"""The one-way house: how the modules of ``src/msrcnn`` depend on each other, and where defaults live.

The import graph counts every ``import`` of an msrcnn module, function-local ones included: a
function-local import is a dependency that merely fails later.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "msrcnn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The msrcnn module ``name`` refers to (``a.b.c`` may name a function ``c`` of module ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the msrcnn modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                names = [f"{source}.{alias.name}" for alias in node.names]
            for name in names:
                if not name.startswith("msrcnn"):
                    continue
                target = _resolve(name, modules)
                if target and target != module:
                    graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (the modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_config_layer_imports_no_model_code():
    graph = import_graph()
    below = {"msrcnn.models", "msrcnn.ops", "msrcnn.training", "msrcnn.data", "msrcnn.evaluation"}
    for module, targets in graph.items():
        if module.startswith("msrcnn.config"):
            wrong = sorted(t for t in targets if any(t == b or t.startswith(b + ".") for b in below))
            assert not wrong, f"{module} imports {', '.join(wrong)}"


def test_the_model_and_data_code_import_no_app_config_or_training():
    """The model is a plain torch module (no Hydra, no Lightning); the data code knows no model."""
    graph = import_graph()
    rules = {
        "msrcnn.models": (
            "msrcnn.app",
            "msrcnn.config",
            "msrcnn.training",
            "msrcnn.data",
            "msrcnn.evaluation",
        ),
        "msrcnn.ops": ("msrcnn.app", "msrcnn.config", "msrcnn.training", "msrcnn.models", "msrcnn.data"),
        "msrcnn.data": ("msrcnn.app", "msrcnn.config", "msrcnn.training", "msrcnn.models"),
    }
    for module, targets in graph.items():
        for layer, forbidden in rules.items():
            if module == layer or module.startswith(layer + "."):
                wrong = sorted(t for t in targets if t.startswith(forbidden))
                assert not wrong, f"{module} imports {', '.join(wrong)}"
