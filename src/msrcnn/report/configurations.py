"""Runs as configurations: the seeds of one configuration grouped (:class:`Group`), the configuration
chosen for a table's row (:func:`pick_configuration`), and the predicates that say which runs a row takes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from msrcnn.report.defaults import HEAD_DEFAULTS
from msrcnn.report.detect import table_from_name
from msrcnn.report.runs import NOT_THE_CONFIGURATION, Run, path_order


@dataclass
class Group:
    """The runs of one configuration, one per seed (finished or not)."""

    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].config

    def __str__(self) -> str:
        if len(self.runs) == 1:
            return str(self.runs[0].path)
        parents = {r.path.parent for r in self.runs}
        names = ",".join(r.path.name for r in self.runs)
        return (
            f"{parents.pop()}/{{{names}}}" if len(parents) == 1 else ", ".join(str(r.path) for r in self.runs)
        )


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b.": value}`` (each key ends with a dot: strip it)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out if node else {prefix: node}


def differing_keys(configs: Sequence[dict[str, Any]], limit: int = 4) -> str:
    """The config keys (seed and run location left out) on which ``configs`` disagree."""
    flat = [
        {k.rstrip("."): v for k, v in flatten(c).items() if k.split(".")[0] not in NOT_THE_CONFIGURATION}
        for c in configs
    ]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), default=str) for g in flat}) > 1})
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def group_by_configuration(matches: Sequence[Run], notes: list[str], what: str) -> list[Group]:
    """``matches`` by configuration; of several runs with one seed, the finished then newest."""
    by_config: dict[str, dict[Any, list[Run]]] = {}
    for run in matches:
        by_config.setdefault(run.configuration, {}).setdefault(run.seed, []).append(run)
    groups = []
    for seeds in by_config.values():
        chosen = []
        for seed, runs in seeds.items():
            best = max(runs, key=lambda r: (r.finished, r.mtime))
            if len(runs) > 1:
                others = ", ".join(str(r.path) for r in runs if r is not best)
                notes.append(f"{what}: {len(runs)} runs of seed {seed}; using {best.path}, not {others}")
            chosen.append(best)
        groups.append(Group(sorted(chosen, key=path_order)))
    return groups


def pick_configuration(
    runs: Sequence[Run],
    predicate: Callable[[Run], bool],
    table: int | None,
    prefer_backbone: str | None = None,
    notes: list[str] | None = None,
    what: str = "",
) -> tuple[Group | None, list[Run]]:
    """The configuration for a row, its seeds grouped: one with a finished run first, then from this
    table's experiment, then the preferred backbone, then the newest. Also returns every matching run."""
    matches = [r for r in runs if predicate(r)]
    if not matches:
        return None, []
    notes = notes if notes is not None else []
    groups = group_by_configuration(matches, notes, what)
    best = max(
        groups,
        key=lambda g: (
            bool(g.finished),
            table_from_name(g.runs[0].experiment_name) == table,
            g.runs[0].backbone == prefer_backbone,
            max(r.mtime for r in g.runs),
        ),
    )
    if len(groups) > 1:
        notes.append(
            f"{what}: {len(groups)} configurations match (they differ in "
            f"{differing_keys([g.config for g in groups]) or 'nothing shown'}); showing {best}"
        )
    return best, matches


def float_eq(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def at_defaults(run: Run, except_key: str | None = None) -> bool:
    """The run's head is the paper's: every key of :data:`HEAD_DEFAULTS` (but ``except_key``) at its default."""
    for key, default in HEAD_DEFAULTS.items():
        if key == except_key:
            continue
        value = run.head_value(key)
        if not (float_eq(value, default) if key == "head.tau" else str(value) == default):
            return False
    return True


def ms_rcnn_on(backbone: str) -> Callable[[Run], bool]:
    """Runs of MS R-CNN on ``backbone`` with the paper's head."""
    return lambda r: r.is_mask_scoring and r.backbone == backbone and at_defaults(r)


def mask_rcnn_on(backbone: str | None) -> Callable[[Run], bool]:
    """Runs of Mask R-CNN (``head=none``) on ``backbone`` (None: any)."""
    return lambda r: not r.is_mask_scoring and (backbone is None or r.backbone == backbone)
