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


# --- every default of the head, Soft-NMS, backbone, model and predictor is stated once ---------------


def _literal_defaults(path: Path, root: Path = SRC) -> list[tuple[str, object, str]]:
    """``(name, value, where)`` of every literal default in a Python file: function parameters and
    class-level annotated assignments (dataclass fields); ``where`` is relative to ``root``."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                if isinstance(default, ast.Constant):
                    found.append(
                        (arg.arg, default.value, f"{path.relative_to(root)}:{node.lineno} {node.name}()")
                    )
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if isinstance(stmt.value, ast.Constant):
                        where = f"{path.relative_to(root)}:{stmt.lineno} {node.name}"
                        found.append((stmt.target.id, stmt.value.value, where))
    return found


def _yaml_keys(path: Path) -> dict[str, object]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return {k: v for k, v in data.items() if k not in ("defaults", "hydra")}


def _group_defaults() -> dict[str, dict[str, object]]:
    """Per group, each key's default as the code states it (the one statement the schema derives from)."""
    from omegaconf import OmegaConf

    from msrcnn.app import schemas

    groups = {
        "head": schemas.HeadConfig,
        "soft_nms": schemas.SoftNMSGroupConfig,
        "backbone": schemas.BackboneConfig,
        "model": schemas.ModelConfig,
        "predict": schemas.PredictConfig,
    }
    defaults = {}
    for group, schema in groups.items():
        plain = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
        defaults[group] = {
            k: v for k, v in plain.items() if not isinstance(v, dict) and v not in (None, "???")
        }
    return defaults


# Parameters that share a name and a value with a group's key but are another setting (with the reason).
OTHER_SETTINGS = {
    ("evaluation/records.py", "max_dets"): "the evaluation's top-k (COCO maxDets), not the Predictor's",
    ("evaluation/evaluator.py", "max_dets"): "the evaluation's top-k (COCO maxDets), not the Predictor's",
    ("config/schema.py", "max_dets"): "eval.max_dets: the evaluation's top-k (COCO maxDets)",
    ("app/schemas.py", "max_dets"): "src/eval.py's max_dets: the evaluation's top-k (COCO maxDets)",
    ("evaluation/records.py", "mask_threshold"): "the binarisation of a record's masks for the evaluation",
}


def test_each_default_of_the_builders_groups_is_stated_once_in_src():
    """A key of the head, Soft-NMS, backbone, model or predictor groups has its default in one place: a
    second literal default of a parameter or field of that name and value elsewhere in ``src/`` is a copy
    that can drift (the schema derives from the first; see msrcnn.app.schemas). Each exception in
    :data:`OTHER_SETTINGS` must still be one (a stale entry fails too)."""
    statements: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, value, where in _literal_defaults(path):
            statements.setdefault((name, repr(value)), []).append(where)
    copies, excused = [], set()
    for group, keys in _group_defaults().items():
        for key, value in keys.items():
            places = []
            for where in statements.get((key, repr(value)), []):
                entry = (where.removeprefix("msrcnn/").split(":")[0], key)
                if entry in OTHER_SETTINGS:
                    excused.add(entry)
                else:
                    places.append(where)
            if len(places) > 1:
                copies.append(f"{group}.{key}={value!r}: {'; '.join(places)}")
    assert not copies, "defaults stated more than once:\n" + "\n".join(copies)
    assert excused == set(OTHER_SETTINGS), f"stale OTHER_SETTINGS: {sorted(set(OTHER_SETTINGS) - excused)}"


def test_no_group_yaml_restates_a_default():
    """conf/'s group files hold only what an option changes: a key set to the code's default is a copy."""
    conf = SRC.parent / "conf"
    defaults = _group_defaults()
    restated = []
    for group, files in (
        ("head", sorted((conf / "head").glob("*.yaml"))),
        ("backbone", sorted((conf / "backbone").glob("*.yaml"))),
        ("model", sorted((conf / "model").glob("*.yaml"))),
        ("predict", [conf / "predict.yaml"]),
    ):
        for path in files:
            for key, value in _yaml_keys(path).items():
                if key != "name" and key in defaults[group] and defaults[group][key] == value:
                    restated.append(f"{path.relative_to(conf)}: {key}: {value!r}")
    assert not restated, "conf/ restates code defaults:\n" + "\n".join(restated)


def test_the_copy_finder_finds_a_copied_default(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f(a, *, width: int = 64):\n    pass\n\nclass C:\n    width: int = 64\n")
    found = [(n, v) for n, v, _ in _literal_defaults(source, root=tmp_path)]
    assert found == [("width", 64), ("width", 64)]
