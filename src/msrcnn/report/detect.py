"""Which paper tables a sweep holds: by experiment name (``table4_input`` -> 4), else by the swept keys."""

from __future__ import annotations

import re
from collections.abc import Sequence

from msrcnn.report.paper import ABLATIONS, SCORING, TABLE1_BACKBONES, TABLE2_BACKBONES
from msrcnn.report.runs import ReportError, Run, read_yaml

# Swept keys that choose no table (where runs go, data, training length, seeds).
IGNORED_KEYS = re.compile(
    r"^(hydra\.|paths\.|data\.|trainer\.|logger\.|callbacks\.|seed$|ckpt_path$|torch_threads$)"
)


def table_from_name(experiment_name: str) -> int | None:
    match = re.match(r"table(\d+)_", experiment_name)
    return int(match.group(1)) if match else None


def swept_keys(runs: Sequence[Run]) -> set[str]:
    """Config keys that vary across the runs' overrides, plus comma-separated sweeps of the
    sweeps' ``multirun.yaml`` (which also covers a sweep with a single finished run)."""
    keys: set[str] = set()
    all_keys = {k for r in runs for k in r.overrides}
    for key in all_keys:
        if len({r.overrides.get(key) for r in runs}) > 1:
            keys.add(key)
    for sweep_dir in {r.sweep_dir for r in runs if r.sweep_dir is not None}:
        multirun = read_yaml(sweep_dir / "multirun.yaml") or {}
        hydra = multirun.get("hydra") or {}
        task = ((hydra.get("overrides") or {}).get("task")) or []
        for item in task:
            key, _, value = str(item).partition("=")
            if "," in value and not value.startswith("["):
                keys.add(key)
        keys.update(((hydra.get("sweeper") or {}).get("params")) or {})
    return {k.lstrip("+~") for k in keys if not IGNORED_KEYS.match(k.lstrip("+~"))}


def table_from_keys(keys: set[str], backbones: set[str]) -> int | str | None:
    if "head.samples" in keys:
        return SCORING
    for number, (key, _, _) in ABLATIONS.items():
        if key in keys:
            return number
    if keys & {"backbone", "experiment@_global_", "head", "head.name"}:
        if backbones <= TABLE1_BACKBONES:
            return 1
        if backbones & (TABLE2_BACKBONES - TABLE1_BACKBONES):
            return 2
        return 1
    return None


def detect_tables(runs: Sequence[Run]) -> list[int | str]:
    """The tables these runs belong to: by experiment name, else by the swept keys."""
    tables = {n for n in (table_from_name(r.experiment_name) for r in runs) if n}
    unnamed = [r for r in runs if not table_from_name(r.experiment_name)]
    if unnamed:
        number = table_from_keys(swept_keys(unnamed), {r.backbone for r in unnamed})
        if number:
            tables.add(number)
        elif not tables:
            names = sorted({r.experiment_name for r in unnamed})
            raise ReportError(
                f"cannot tell which paper table the runs of experiment(s) {names} reproduce (no tableN_* "
                "experiment and no swept head.input / head.target / head.tau / backbone / head); pass --table N"
            )
    return sorted(tables, key=str)
