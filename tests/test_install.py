"""The installation: msrcnn importable from the project's environment anywhere, its runtime imports
declared, uv.lock in step with pyproject.toml."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys

import pytest

from msrcnn_testing import ROOT, script_env


def test_msrcnn_imports_from_any_directory_without_pythonpath(tmp_path):
    """``make install`` installs this checkout editable: no PYTHONPATH, no sys.path edits."""
    proc = subprocess.run(
        [sys.executable, "-c", "import msrcnn, msrcnn.evaluation, msrcnn.ops; print(msrcnn.__file__)"],
        cwd=tmp_path,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(ROOT / "src" / "msrcnn" / "__init__.py")


def _top_level_imports() -> dict[str, str]:
    """Top-level module of every absolute import in src/ -> one file importing it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_runtime_import_is_a_declared_dependency():
    """What src/ imports is the standard library, msrcnn itself (and the scripts beside it), or a
    distribution listed in pyproject's ``dependencies`` (not only in the dev group)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in project["dependencies"]
    }
    local = {"msrcnn", *(p.stem for p in (ROOT / "src").glob("*.py"))}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, where in _top_level_imports().items():
        if module in sys.stdlib_module_names or module in local:
            continue
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not distributions & declared:
            undeclared[module] = (where, sorted(distributions))
    assert not undeclared, f"imported by src/ but not in pyproject's dependencies: {undeclared}"


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_uv_lock_matches_pyproject():
    proc = subprocess.run(
        ["uv", "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("distribution", ["torch", "torchvision"])
def test_installed_torch_and_torchvision_are_inside_the_declared_range(distribution):
    """The environment runs the versions pyproject.toml declares as tested (packaging's reading of the range)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (declared,) = [r for r in map(Requirement, project["dependencies"]) if r.name == distribution]
    assert declared.specifier, f"{distribution} has no tested range in pyproject.toml"
    installed = importlib.metadata.version(distribution)
    assert declared.specifier.contains(installed, prereleases=True), (installed, str(declared.specifier))


def test_the_import_check_reads_pyproject_s_torchvision_range():
    """msrcnn.models checks torchvision against msrcnn's installed metadata: the same range as pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    from msrcnn.models.torchvision_ports import torchvision_range

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (declared,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "torchvision"]
    assert set(torchvision_range().split(",")) == {str(s) for s in declared.specifier}
