"""A sweep's run directories: finding them and reading each run's config, overrides and results."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from msrcnn.report.defaults import HEAD_DEFAULTS

# Not part of a run's configuration: its seed, and where it was written and logged. Runs whose
# configs agree on everything else are the seeds of one configuration.
NOT_THE_CONFIGURATION = ("seed", "ckpt_path", "torch_threads", "paths", "logger", "hydra")
# Folders of a run that hold no runs.
_NOT_RUNS = ("wandb", "checkpoints", "csv", "tensorboard")


class ReportError(Exception):
    """Nothing to report: no runs, an unreadable file, or a table that cannot be told."""


@dataclass
class Run:
    """One run directory of a sweep."""

    path: Path
    config: dict[str, Any]
    overrides: dict[str, str]
    results: dict[str, Any] | None
    sweep_dir: Path | None = None  # the folder with multirun.yaml, when there is one

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def experiment_name(self) -> str:
        return str(self.get("experiment_name", ""))

    @property
    def backbone(self) -> str:
        return str(self.get("backbone.name", "r18_fpn"))

    @property
    def head(self) -> str:
        return str(self.get("head.name", "maskiou"))

    @property
    def is_mask_scoring(self) -> bool:
        return self.head == "maskiou"

    def head_value(self, key: str) -> Any:
        return self.get(key, HEAD_DEFAULTS.get(key))

    @property
    def finished(self) -> bool:
        return self.results is not None

    @property
    def failed(self) -> bool:
        """The sweep recorded the job as failed (``failed.json``, see ``msrcnn.app.multirun``)."""
        return (self.path / "failed.json").is_file()

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def configuration(self) -> str:
        """The run's config without its seed and run location (:data:`NOT_THE_CONFIGURATION`)."""
        config = {k: v for k, v in self.config.items() if k not in NOT_THE_CONFIGURATION}
        return json.dumps(config, sort_keys=True, default=str)

    @property
    def mtime(self) -> float:
        path = self.path / "results.json"
        return (path if path.exists() else self.path).stat().st_mtime

    def __str__(self) -> str:
        return str(self.path)


def read_yaml(path: Path) -> Any:
    """The YAML file's content; :class:`ReportError` when it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: cannot read ({err})") from None


def load_run(path: Path) -> Run:
    """The run in ``path`` (which holds ``.hydra/config.yaml``)."""
    hydra_dir = path / ".hydra"
    config = read_yaml(hydra_dir / "config.yaml") or {}
    overrides: dict[str, str] = {}
    if (hydra_dir / "overrides.yaml").is_file():
        for item in read_yaml(hydra_dir / "overrides.yaml") or []:
            key, _, value = str(item).partition("=")
            overrides[key] = value
    results = None
    results_file = path / "results.json"
    if results_file.is_file():
        try:
            results = json.loads(results_file.read_text())
        except (OSError, json.JSONDecodeError):
            results = None  # being written or broken: reported as missing
    sweep_dir = next((p for p in (path, path.parent) if (p / "multirun.yaml").is_file()), None)
    return Run(path=path, config=config, overrides=overrides, results=results, sweep_dir=sweep_dir)


def find_runs(dirs: Iterable[str | Path], max_depth: int = 3) -> list[Run]:
    """Every run directory in or below ``dirs`` (down to ``max_depth`` levels), sorted by path.

    Raises:
        ReportError: a directory that does not exist or holds no run.
    """
    runs: dict[Path, Run] = {}
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise ReportError(f"{root}: no such directory")
        found = [root] if (root / ".hydra" / "config.yaml").is_file() else []
        level = [root]
        for _ in range(max_depth):
            level = [
                c
                for p in level
                for c in sorted(p.iterdir())
                if c.is_dir() and not c.name.startswith(".") and c.name not in _NOT_RUNS
            ]
            found += [c for c in level if (c / ".hydra" / "config.yaml").is_file()]
        if not found:
            raise ReportError(
                f"{root}: no runs found (no .hydra/config.yaml in it or in its subfolders); pass a sweep "
                "directory such as multirun/table4_input/<date> or a run directory such as outputs/demo/<date>"
            )
        for path in found:
            runs.setdefault(path.resolve(), load_run(path))
    return sorted(runs.values(), key=path_order)


def path_order(run: Run) -> tuple:
    """Sort key of runs: by folder, then by name with numbers in numeric order (``2`` before ``10``)."""
    return (str(run.path.parent), natural_key(run.path.name))


def natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
