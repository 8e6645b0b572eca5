"""The paper's tables from finished (or partial) sweeps, with the published numbers beside ours.

    python experiments/report.py multirun/table4_input/2026-11-24_10-00-00
    python experiments/report.py SWEEP_DIR [SWEEP_DIR ...] [--table N] [--format md|csv|text]

Every run directory (one holding ``.hydra/config.yaml``, e.g. ``SWEEP_DIR/0``, ``SWEEP_DIR/1`` or a
single run directory) is read: its ``results.json`` (written by ``src/train.py`` after the final
evaluation), ``.hydra/config.yaml`` and ``.hydra/overrides.yaml``. The table comes from the
experiment name (``experiment=table4_input`` -> Table 4) or, for other sweeps such as
``-m experiment=demo head.input=concat,multiply``, from the swept keys (``head.input`` -> Table 4,
``head.target`` -> 5, ``head.tau`` -> 6, backbones -> 1 or 2); ``--table N`` chooses it. Table 7
(the GT-MaskIoU upper bound) can be drawn from any sweep: every evaluation computes it.

Rows follow the paper's layout; a row without a run, or whose run has no ``results.json`` (failed
or still running), reads ``missing``. The paper's numbers come from ``paper_numbers.yaml`` beside
this file. Importable: :func:`find_runs`, :func:`detect_tables`, :func:`build_table`,
:func:`render`, :func:`report`.

Seeds: runs whose ``.hydra/config.yaml`` agree on everything but ``seed`` (and where the run was
written and logged: :data:`NOT_THE_CONFIGURATION`) are one configuration, e.g. the jobs of
``python src/train.py -m experiment=table4_input seed=0,1,2`` that share a ``head.input``. Each of
our cells is the mean ± sample standard deviation over the finished seeds, with their number ``(n)``;
a seed without ``results.json`` is named in the notes and not counted. One column gives each row's
difference to the table's baseline (Tables 4-6: the default row; Tables 1 and 2: the backbone's Mask
R-CNN; Table 7: MS R-CNN minus the Mask R-CNN column) with its standard error (Welch:
sqrt(sd_a^2/n_a + sd_b^2/n_b); ``n/a`` with one run on either side), marked ``*`` beyond two
standard errors. ``--format csv`` gives mean, sd and n, and diff, SE and the mark, as columns of their own.

The mask scoring gain's 95% paired bootstrap interval (``results.json``'s ``mask_scoring_gain``) is a
column of Tables 4-7: one interval per seed (a mean of the seeds' bounds would be no interval), and
how many seeds' intervals lie wholly above 0; in csv, the intervals, that count, the count below 0 and n.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PAPER_FILE = Path(__file__).resolve().with_name("paper_numbers.yaml")
MISSING = "missing"
FORMATS = ("md", "csv", "text")
TABLES = (1, 2, 3, 4, 5, 6, 7)
# Not a paper table: per configuration, does mask scoring help (gain, its intervals, the correlations).
SCORING = "scoring"

# Display names of the rows; the numbers live in paper_numbers.yaml.
BACKBONE_LABELS = {
    "r18_fpn": "R18-FPN",
    "r50_fpn": "R50-FPN",
    "r101_fpn": "R101-FPN",
    "r50_c4": "R50-C4",
    "r101_c4": "R101-C4 (Faster R-CNN)",
    "r50_dcn_fpn": "R50 DCN+FPN",
    "r101_dcn_fpn": "R101 DCN+FPN",
}
ABLATIONS = {  # table -> (config key, label of the key, row labels)
    4: (
        "head.input",
        "input design",
        {
            "concat": "(a) concat",
            "multiply": "(b) multiply",
            "concat_all": "(c) concat_all",
            "concat_highres": "(d) concat_highres",
        },
    ),
    5: (
        "head.target",
        "training target",
        {
            "target_class": "(1) target_class",
            "all_classes": "(2) all_classes",
            "positive_classes": "(3) positive_classes",
        },
    ),
    6: (
        "head.tau",
        "threshold tau",
        {"0.0": "tau 0.0", "0.3": "tau 0.3", "0.5": "tau 0.5", "0.7": "tau 0.7"},
    ),
}
HEAD_DEFAULTS = {
    "head.input": "concat",
    "head.target": "target_class",
    "head.samples": "positives",
    "head.tau": 0.0,
}
TABLE1_BACKBONES = {"r18_fpn", "r50_fpn", "r101_fpn"}
TABLE2_BACKBONES = {"r101_c4", "r101_fpn", "r101_dcn_fpn", "r50_c4", "r50_dcn_fpn"}
IGNORED_KEYS = re.compile(
    r"^(hydra\.|paths\.|data\.|trainer\.|logger\.|callbacks\.|seed$|ckpt_path$|torch_threads$)"
)


# Not part of a run's configuration: its seed, and where it was written and logged. Runs whose
# configs agree on everything else are the seeds of one configuration.
NOT_THE_CONFIGURATION = ("seed", "ckpt_path", "torch_threads", "paths", "logger", "hydra")
SIGNIFICANT_SE = 2.0  # a difference beyond this many standard errors is marked
MARK = "*"
STAND_IN = "†"  # Table 7: the class-score ranking stands in for a Mask R-CNN run


class ReportError(Exception):
    """Nothing to report: no runs, an unreadable file, or a table that cannot be told."""


# --------------------------------------------------------------------------- runs
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


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: cannot read ({err})") from None


def load_run(path: Path) -> Run:
    """The run in ``path`` (which holds ``.hydra/config.yaml``)."""
    hydra_dir = path / ".hydra"
    config = _read_yaml(hydra_dir / "config.yaml") or {}
    overrides: dict[str, str] = {}
    if (hydra_dir / "overrides.yaml").is_file():
        for item in _read_yaml(hydra_dir / "overrides.yaml") or []:
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
                if c.is_dir()
                and not c.name.startswith(".")
                and c.name not in ("wandb", "checkpoints", "csv", "tensorboard")
            ]
            found += [c for c in level if (c / ".hydra" / "config.yaml").is_file()]
        if not found:
            raise ReportError(
                f"{root}: no runs found (no .hydra/config.yaml in it or in its subfolders); pass a sweep "
                "directory such as multirun/table4_input/<date> or a run directory such as outputs/demo/<date>"
            )
        for path in found:
            runs.setdefault(path.resolve(), load_run(path))
    return sorted(runs.values(), key=lambda r: (str(r.path.parent), _natural(r.path.name)))


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def load_paper(path: str | Path = PAPER_FILE) -> dict[str, Any]:
    paper = _read_yaml(Path(path))
    if not isinstance(paper, dict):
        raise ReportError(f"{path}: not a mapping of tables")
    return paper


# --------------------------------------------------------------------------- which table
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
        multirun = _read_yaml(sweep_dir / "multirun.yaml") or {}
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


# --------------------------------------------------------------------------- seeds
class Stat(float):
    """Our number for a cell over the seeds of one configuration: the float's value is the mean;
    ``sd`` the sample standard deviation (None for one run), ``n`` the number of values, ``ratio``
    printed with three decimals (a correlation), ``mark`` a suffix (Table 7's stand-in)."""

    values: tuple[float, ...]
    n: int
    sd: float | None
    ratio: bool
    mark: str

    def __new__(cls, values: Iterable[float], ratio: bool = False, mark: str = "") -> Stat:
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("a Stat needs at least one value")
        self = super().__new__(cls, statistics.fmean(values))
        self.values, self.n, self.ratio, self.mark = values, len(values), ratio, mark
        self.sd = statistics.stdev(values) if len(values) > 1 else None
        return self


@dataclass(frozen=True)
class Diff:
    """A row's mean minus its baseline's, with Welch's standard error (None: n = 1 on a side)."""

    diff: float
    se: float | None

    @property
    def marked(self) -> bool:
        return self.se is not None and abs(self.diff) > SIGNIFICANT_SE * self.se


def welch(a: Stat, b: Stat) -> Diff:
    """``a - b`` with SE = sqrt(sd_a^2/n_a + sd_b^2/n_b); no SE when either side has one run."""
    if a.sd is None or b.sd is None:
        return Diff(float(a) - float(b), None)
    return Diff(float(a) - float(b), math.sqrt(a.sd**2 / a.n + b.sd**2 / b.n))


def diff_cell(row: Cell, baseline: Cell) -> Cell:
    """The difference column's cell: a Diff, or None (printed ``-``) without both numbers."""
    return welch(row, baseline) if isinstance(row, Stat) and isinstance(baseline, Stat) else None


def legend(diff: str, baseline: str) -> str:
    return (
        f"ours: mean \u00b1 sd (n finished seeds); {diff}: our mean minus {baseline}, (SE) its standard "
        f"error sqrt(sd_a\u00b2/n_a + sd_b\u00b2/n_b), n/a with one run on either side; "
        f"{MARK}: |diff| > {SIGNIFICANT_SE:g} SE"
    )


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


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out if node else {prefix: node}


def differing_keys(configs: Sequence[dict[str, Any]], limit: int = 4) -> str:
    """The config keys (seed and run location left out) on which ``configs`` disagree."""
    flat = [
        {k.rstrip("."): v for k, v in _flatten(c).items() if k.split(".")[0] not in NOT_THE_CONFIGURATION}
        for c in configs
    ]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), default=str) for g in flat}) > 1})
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# --------------------------------------------------------------------------- tables
Cell = Any  # str, Stat (ours), float (the paper's), Diff, None (not published / undefined)


@dataclass
class Table:
    number: int | str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1  # the rows' labels; then our numbers, the paper's (paper) and the diff (SE)


def _group(matches: Sequence[Run], notes: list[str], what: str) -> list[Group]:
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
        groups.append(Group(sorted(chosen, key=lambda r: (str(r.path.parent), _natural(r.path.name)))))
    return groups


def _pick(
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
    groups = _group(matches, notes, what)
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


def _float_eq(a: Any, b: Any) -> bool:
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return False


def _at_defaults(run: Run, except_key: str | None = None) -> bool:
    for key, default in HEAD_DEFAULTS.items():
        if key == except_key:
            continue
        value = run.head_value(key)
        if not (_float_eq(value, default) if key == "head.tau" else str(value) == default):
            return False
    return True


def _ms_default(backbone: str) -> Callable[[Run], bool]:
    return lambda r: r.is_mask_scoring and r.backbone == backbone and _at_defaults(r)


def _mask_rcnn(backbone: str | None) -> Callable[[Run], bool]:
    return lambda r: not r.is_mask_scoring and (backbone is None or r.backbone == backbone)


class Ratio(float):
    """A value printed with three decimals (a correlation), not as a percentage."""


GAIN_INTERVAL = "gain 95% interval"


@dataclass(frozen=True)
class Intervals:
    """The mask scoring gain's 95% paired bootstrap interval of each finished seed, ``(AP, low, high)``
    per run. Not averaged over seeds (the mean of the bounds is no interval): each seed's interval is
    listed, with how many lie wholly above 0 (helps) and below 0 (hurts)."""

    values: tuple[tuple[float, float, float], ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def above(self) -> int:
        return sum(low > 0 for _, low, _ in self.values)

    @property
    def below(self) -> int:
        return sum(high < 0 for _, _, high in self.values)


def _intervals(group: Group | None, key: str = "mask_scoring_gain") -> Cell:
    """The group's :class:`Intervals` (``missing`` without a finished run; None when no run has one)."""
    if group is None or not group.finished:
        return MISSING
    values = []
    for run in group.finished:
        diff = run.results.get(key)
        if isinstance(diff, dict) and None not in (diff.get("AP"), diff.get("low"), diff.get("high")):
            values.append((float(diff["AP"]), float(diff["low"]), float(diff["high"])))
    return Intervals(tuple(values)) if values else None


INTERVAL_NOTE = (
    f"{GAIN_INTERVAL}: MS R-CNN mask AP minus the same run's class-score ranking (segm_cls), with its "
    "95% paired bootstrap interval over the evaluated images (1,000 resamples), one per seed; "
    "'k/n above 0': the seeds whose interval lies wholly above 0 (the gain is clear on that run's images)"
)


def _ours(group: Group | None, key: str, metric: str | None = None, mark: str = "") -> Cell:
    """Our number over the group's finished seeds (a :class:`Stat`): ``missing`` without a finished
    run, None (printed ``-``) when no finished run defines it."""
    if group is None or not group.finished:
        return MISSING
    values = []
    for run in group.finished:
        value = run.results.get(key)
        if metric is not None:
            value = value.get(metric) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return Stat(values, ratio=metric is None, mark=mark) if values else None


def _ratio(value: Cell) -> Cell:
    return Ratio(value) if isinstance(value, float) else value


def _paper(node: Any, *path: str) -> Cell:
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else float(node)


class _Builder:
    def __init__(self, number: int, runs: Sequence[Run]) -> None:
        self.number = number
        self.runs = runs
        self.used: set[Path] = set()
        self.notes: list[str] = []

    def pick(
        self, predicate: Callable[[Run], bool], what: str, prefer_backbone: str | None = None
    ) -> Group | None:
        group, matches = _pick(self.runs, predicate, self.number, prefer_backbone, self.notes, what)
        if group is None:
            return None
        self.used.update(m.path for m in matches)
        done = len(group.finished)
        for run in group.runs:
            if not run.finished:
                why = (
                    "failed (see its error.txt)"
                    if run.failed
                    else "no results.json (still running, or stopped)"
                )
                counted = f"; not counted: n = {done} of {len(group.runs)} seeds" if done else ""
                self.notes.append(f"{what}: {run.path}: {why}{counted}")
        return group

    def finish(
        self, title: str, header: list[str], rows: list[list[Cell]], legend_line: str, label_columns: int = 1
    ) -> Table:
        unused = [
            r
            for r in self.runs
            if r.path not in self.used and table_from_name(r.experiment_name) in (None, self.number)
        ]
        if unused:
            self.notes.append("runs not in this table: " + ", ".join(str(r.path) for r in unused))
        return Table(self.number, title, header, rows, [legend_line, *self.notes], label_columns)


def _metric_header(columns: Sequence[tuple[str, str, str]]) -> list[str]:
    header = []
    for label, _, _ in columns:
        header += [label, f"{label} (paper)"]
    return header


def _diff_header(label: str) -> str:
    return f"{label} diff (SE)"


def _backbone_table(number: int, runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Tables 1 and 2: per backbone, Mask R-CNN (head=none run), the class-score ranking of the
    MS R-CNN run (segm_cls) and MS R-CNN; the mask AP difference to the backbone's Mask R-CNN."""
    spec = paper[f"table{number}"]
    if number == 1:
        columns = [
            ("APm", "segm", "AP"),
            ("APm50", "segm", "AP50"),
            ("APm75", "segm", "AP75"),
            ("APb", "bbox", "AP"),
            ("APb50", "bbox", "AP50"),
            ("APb75", "bbox", "AP75"),
        ]
    else:
        columns = [("APm", "segm", "AP"), ("APb", "bbox", "AP")]
    b = _Builder(number, runs)
    rows: list[list[Cell]] = []
    for backbone, numbers in spec["rows"].items():
        label = BACKBONE_LABELS.get(backbone, backbone)
        mask_rcnn = b.pick(_mask_rcnn(backbone), f"{label} Mask R-CNN")
        ms = b.pick(_ms_default(backbone), f"{label} MS R-CNN")
        baseline = None
        for model, group, paper_key, segm_key in (
            ("Mask R-CNN", mask_rcnn, "mask_rcnn", "segm"),
            ("MS R-CNN ranked by class score (segm_cls)", ms, None, "segm_cls"),
            ("MS R-CNN", ms, "ms_rcnn", "segm"),
        ):
            row: list[Cell] = [label, model]
            for _, key, metric in columns:
                ours_key = segm_key if key == "segm" else key
                paper_value = _paper(numbers, paper_key, key, metric) if paper_key else None
                row += [_ours(group, ours_key, metric), paper_value]
            if baseline is None:
                baseline = row[2]
                row.append("baseline")
            else:
                row.append(diff_cell(row[2], baseline))
            rows.append(row)
    header = ["backbone", "model", *_metric_header(columns), _diff_header("APm")]
    return b.finish(spec["title"], header, rows, legend("APm diff", "the backbone's Mask R-CNN row's"), 2)


def _ablation_table(number: int, runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Tables 4-6: MS R-CNN per setting, and the Mask R-CNN baseline; the AP difference to the
    default setting's row (concat / target_class / tau 0)."""
    spec = paper[f"table{number}"]
    key, key_label, labels = ABLATIONS[number]
    columns = [("AP", "segm", "AP"), ("AP50", "segm", "AP50"), ("AP75", "segm", "AP75")]
    b = _Builder(number, runs)
    rows: list[list[Cell]] = []
    default_group = None
    default_row = 0
    for value, numbers in spec["rows"].items():
        if key == "head.tau":

            def matches(r: Run, v: Any = value) -> bool:
                return _float_eq(r.head_value(key), v)
        else:

            def matches(r: Run, v: Any = value) -> bool:
                return str(r.head_value(key)) == v

        label = labels.get(str(value), str(value))
        group = b.pick(
            lambda r, m=matches: r.is_mask_scoring and m(r) and _at_defaults(r, key), label, "r18_fpn"
        )
        if _float_eq(value, HEAD_DEFAULTS[key]) or str(value) == HEAD_DEFAULTS[key]:
            default_group, default_row = group, len(rows)
        rows.append(
            [
                label,
                *[c for _, k, m in columns for c in (_ours(group, k, m), _paper(numbers, k, m))],
                _intervals(group),
            ]
        )
    baseline = paper.get("ablation_baseline", {}).get("mask_rcnn", {})
    mask_rcnn = b.pick(_mask_rcnn(None), "Mask R-CNN", "r18_fpn")
    default_label = labels.get(str(HEAD_DEFAULTS[key]), str(HEAD_DEFAULTS[key]))
    if mask_rcnn is not None:
        rows.append(
            [
                "Mask R-CNN (head=none run)",
                *[c for _, k, m in columns for c in (_ours(mask_rcnn, k, m), _paper(baseline, k, m))],
                None,
            ]
        )
    else:
        rows.append(
            [
                f"Mask R-CNN ranking (segm_cls of the {default_label} run)",
                *[
                    c
                    for _, k, m in columns
                    for c in (_ours(default_group, "segm_cls", m), _paper(baseline, k, m))
                ],
                None,
            ]
        )
        b.notes.append(
            "Mask R-CNN row: ours is the class-score ranking of the same MS R-CNN model (segm_cls); "
            "the paper's is a separately trained Mask R-CNN (add head=none runs to compare like for like)"
        )
    ap_default = rows[default_row][1]
    for i, row in enumerate(rows):
        row.append("baseline" if i == default_row else diff_cell(row[1], ap_default))
    header = [key_label, *_metric_header(columns), GAIN_INTERVAL, _diff_header("AP")]
    b.notes.append(INTERVAL_NOTE)
    return b.finish(spec["title"], header, rows, legend("AP diff", f"the {default_label} row's"))


def _upper_bound_table(runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Table 7: Mask R-CNN / MS R-CNN / MS R-CNN with GT MaskIoU (segm_oracle), and Pearson r;
    the difference MS R-CNN minus Mask R-CNN per backbone."""
    spec = paper["table7"]
    pearson = paper.get("section4_4", {}).get("maskiou_pearson", {})
    backbones = list(spec["rows"])
    backbones += sorted({r.backbone for r in runs if r.is_mask_scoring and r.backbone not in backbones})
    b = _Builder(7, runs)
    rows: list[list[Cell]] = []
    fallback = False
    for backbone in backbones:
        label = BACKBONE_LABELS.get(backbone, backbone)
        numbers = spec["rows"].get(backbone, {})
        ms = b.pick(_ms_default(backbone), f"{label} MS R-CNN")
        mask_rcnn = b.pick(_mask_rcnn(backbone), f"{label} Mask R-CNN")
        if mask_rcnn is not None:
            baseline = _ours(mask_rcnn, "segm", "AP")
        else:
            baseline = _ours(ms, "segm_cls", "AP", mark=STAND_IN)
            fallback = fallback or isinstance(baseline, Stat)
        ms_ap = _ours(ms, "segm", "AP")
        rows.append(
            [
                label,
                baseline,
                _paper(numbers, "mask_rcnn"),
                ms_ap,
                _paper(numbers, "ms_rcnn"),
                _ours(ms, "segm_oracle", "AP"),
                _paper(numbers, "oracle"),
                _ours(ms, "maskiou_pearson"),
                _ratio(_paper(pearson, backbone)),
                _intervals(ms),
                diff_cell(ms_ap, baseline),
            ]
        )
    if fallback:
        b.notes.append(
            f"{STAND_IN}: no head=none run for this backbone; the class-score ranking (segm_cls) of the "
            "MS R-CNN run stands in for Mask R-CNN"
        )
    b.notes.append(INTERVAL_NOTE)
    b.notes.append(
        "Pearson r: predicted vs GT MaskIoU over the top-100 detections per image (paper Section 4.4: "
        "about 0.74; IoU-Net's box IoU: "
        f"{paper.get('section4_4', {}).get('iou_net_box_iou_pearson')})"
    )
    header = [
        "backbone",
        "Mask R-CNN AP",
        "Mask R-CNN AP (paper)",
        "MS R-CNN AP",
        "MS R-CNN AP (paper)",
        "MS R-CNN + GT MaskIoU AP",
        "MS R-CNN + GT MaskIoU AP (paper)",
        "Pearson r",
        "Pearson r (paper)",
        GAIN_INTERVAL,
        _diff_header("MS R-CNN AP"),
    ]
    return b.finish(spec["title"], header, rows, legend("MS R-CNN AP diff", "the row's Mask R-CNN AP"))


def _test_dev_table(runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Table 3 (test-dev): scored by the COCO evaluation server, so only the paper's numbers."""
    spec = paper["table3"]
    metrics = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    rows = [
        [
            BACKBONE_LABELS.get(backbone, backbone),
            model_label,
            *[_paper(numbers, model, "segm", m) for m in metrics],
        ]
        for backbone, numbers in spec["rows"].items()
        for model, model_label in (("mask_rcnn", "Mask R-CNN"), ("ms_rcnn", "MS R-CNN"))
    ]
    notes = [
        "test-dev has no public annotations: run `python src/eval.py ckpt_path=... data=coco "
        "data.root=/data/coco split=test` and upload detections_segm.json to the COCO evaluation server"
    ]
    header = ["backbone", "model", *[f"{m} (paper)" for m in metrics]]
    return Table(3, spec["title"], header, rows, notes, label_columns=2)


LABEL_KEYS = ("experiment_name", "data.name", "backbone.name", "trainer.max_steps")


def _configuration_labels(groups: Sequence[Group]) -> list[str]:
    """Each group's values of the config keys on which the groups differ (``key=value, ...``)."""
    flat = [
        {
            **HEAD_DEFAULTS,  # a run written before a head key existed had its default
            **{
                k.rstrip("."): v
                for k, v in _flatten(g.config).items()
                if k.split(".")[0] not in NOT_THE_CONFIGURATION
            },
        }
        for g in groups
    ]
    keys = sorted({k for f in flat for k in f if len({json.dumps(g.get(k), default=str) for g in flat}) > 1})
    # the keys a reader tells configurations apart by, when they differ; else the first few that do
    named = [k for k in keys if k in LABEL_KEYS or k.startswith("head.")]
    keys = named or keys[:3]
    return [", ".join(f"{k}={f.get(k)}" for k in keys) or str(g) for f, g in zip(flat, groups)]


def _scoring_table(runs: Sequence[Run]) -> Table:
    """Does mask scoring help, per configuration of MS R-CNN runs (e.g. a sweep of ``head.samples``): the
    mask AP of both rankings, the gain with each seed's 95% interval, the oracle's headroom, and how well
    the predicted MaskIoU and the class score track the true MaskIoU (all detections / found objects).
    The difference column: each row's gain minus the first row's (the paper's ``head.samples=positives``
    where present), with Welch's SE."""
    b = _Builder(0, runs)
    notes: list[str] = []
    matches = [r for r in runs if r.is_mask_scoring]
    groups = _group(matches, notes, "runs")
    groups.sort(key=lambda g: (str(g.runs[0].head_value("head.samples")) != "positives", str(g)))
    b.used.update(r.path for r in matches)
    b.notes += notes
    labels = _configuration_labels(groups) if len(groups) > 1 else [str(g) for g in groups]
    rows: list[list[Cell]] = []
    for label, group in zip(labels, groups):
        b.pick(lambda r, g=group: r in g.runs, label)
        rows.append(
            [
                label,
                _ours(group, "segm", "AP"),
                _ours(group, "segm_cls", "AP"),
                _ours(group, "mask_scoring_gain", "AP"),
                _intervals(group),
                _ours(group, "oracle_headroom", "AP"),
                _ours(group, "maskiou_pearson"),
                _ours(group, "class_score_pearson"),
                _ours(group, "maskiou_pearson_matched"),
                _ours(group, "class_score_pearson_matched"),
            ]
        )
    for row in rows:
        row.append("baseline" if row is rows[0] else diff_cell(row[3], rows[0][3]))
    header = [
        "configuration",
        "mask AP, mask score",
        "mask AP, class score",
        "gain",
        GAIN_INTERVAL,
        "oracle headroom",
        "Pearson r, MaskIoU (all)",
        "Pearson r, class score (all)",
        "Pearson r, MaskIoU (found)",
        "Pearson r, class score (found)",
        _diff_header("gain"),
    ]
    table = b.finish(
        "Does mask scoring help? (per configuration, mean ± sd over seeds)",
        header,
        rows,
        legend("gain diff", "the first row's"),
    )
    table.number = SCORING
    table.notes.insert(1, INTERVAL_NOTE)
    table.notes.insert(
        2,
        "Pearson r of the predicted MaskIoU and of the class score with the true MaskIoU of each detection "
        "(all: every evaluated detection; found: those whose true MaskIoU > 0.5)",
    )
    return table


def build_table(number: int | str, runs: Sequence[Run], paper: dict[str, Any] | None = None) -> Table:
    """Table ``number`` (1-7) in the paper's layout from ``runs``; ``"scoring"``: :func:`_scoring_table`."""
    if number == SCORING:
        return _scoring_table(runs)
    paper = paper if paper is not None else load_paper()
    if number in (1, 2):
        return _backbone_table(number, runs, paper)
    if number == 3:
        return _test_dev_table(runs, paper)
    if number in ABLATIONS:
        return _ablation_table(number, runs, paper)
    if number == 7:
        return _upper_bound_table(runs, paper)
    raise ReportError(f"there is no table {number}; the paper's tables are {list(TABLES)}")


# --------------------------------------------------------------------------- output
def _interval_text(ap: float, low: float, high: float) -> str:
    return f"{ap:+.2f} [{low:+.2f}, {high:+.2f}]"


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Intervals):
        runs = "; ".join(_interval_text(*v) for v in cell.values)
        if cell.n == 1:
            return runs
        below = f", {cell.below}/{cell.n} below 0" if cell.below else ""
        return f"{cell.above}/{cell.n} above 0{below}: {runs}"
    if isinstance(cell, Stat):
        digits = 3 if cell.ratio else 1
        spread = f" \u00b1 {cell.sd:.{digits}f}" if cell.sd is not None else ""
        return f"{cell:.{digits}f}{cell.mark}{spread} ({cell.n})"
    if isinstance(cell, Diff):
        se = f"{cell.se:.2f}" if cell.se is not None else "n/a"
        return f"{cell.diff:+.2f} ({se})" + (f" {MARK}" if cell.marked else "")
    if isinstance(cell, Ratio):
        return f"{cell:.3f}"
    if isinstance(cell, float):
        return f"{cell:.1f}"
    return str(cell)


def _csv_columns(table: Table) -> list[tuple[str, str]]:
    """Per column of ``table``: its header and kind (``stat``: mean, sd, n; ``diff``: diff, SE, mark)."""
    kinds = []
    for i, name in enumerate(table.header):
        if i < table.label_columns or name.endswith("(paper)"):
            kinds.append((name, "plain"))
        elif name == GAIN_INTERVAL:
            kinds.append((name, "interval"))
        elif name.endswith(" diff (SE)"):
            kinds.append((name[: -len(" (SE)")], "diff"))
        else:
            kinds.append((name, "stat"))
    return kinds


def _csv_cells(cell: Cell, kind: str) -> list[Any]:
    if kind == "interval":
        if isinstance(cell, Intervals):
            runs = ";".join(f"{ap:g} [{low:g}, {high:g}]" for ap, low, high in cell.values)
            return [runs, cell.above, cell.below, cell.n]
        return [cell if cell is not None else "", "", "", 0]
    if kind == "stat":
        if isinstance(cell, Stat):
            return [float(cell), "" if cell.sd is None else cell.sd, cell.n]
        return [cell if cell is not None else "", "", 0]
    if kind == "diff":
        if isinstance(cell, Diff):
            return [cell.diff, "" if cell.se is None else cell.se, cell.marked]
        return [cell if cell is not None else "", "", ""]
    return ["" if cell is None else cell]


def render(table: Table, fmt: str = "md") -> str:
    """The table as Markdown (``md``), ``csv`` (one header row, full precision, a ``table`` column;
    our numbers as mean, ``sd`` and ``n`` columns, the difference as diff, ``SE`` and ``> 2 SE``)
    or aligned plain ``text``."""
    if fmt == "csv":
        kinds = _csv_columns(table)
        header = ["table"]
        for name, kind in kinds:
            if kind == "stat":
                header += [name, f"{name} sd", f"{name} n"]
            elif kind == "diff":
                header += [name, f"{name} SE", f"{name} > {SIGNIFICANT_SE:g} SE"]
            elif kind == "interval":
                header += [f"{name} per seed", f"{name} above 0", f"{name} below 0", f"{name} n"]
            else:
                header.append(name)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        for row in table.rows:
            writer.writerow([table.number, *[v for c, (_, k) in zip(row, kinds) for v in _csv_cells(c, k)]])
        return buffer.getvalue()
    cells = [[_text(c) for c in row] for row in table.rows]
    if fmt == "md":
        lines = [
            f"### {table.title}",
            "",
            "| " + " | ".join(table.header) + " |",
            "|"
            + "|".join(
                "---" if i == 0 or not _numeric_column(cells, i) else "---:" for i in range(len(table.header))
            )
            + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        if table.notes:
            lines += [""] + [f"- {note}" for note in table.notes]
        return "\n".join(lines) + "\n"
    if fmt == "text":
        widths = [
            max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(table.header)
        ]
        line = lambda values: "  ".join(  # noqa: E731
            v.ljust(w) if i == 0 or not _numeric_column(cells, i) else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()
        lines = [table.title, line(table.header), line(["-" * w for w in widths])] + [line(r) for r in cells]
        lines += [f"note: {note}" for note in table.notes]
        return "\n".join(lines) + "\n"
    raise ReportError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}")


def _numeric_column(cells: list[list[str]], i: int) -> bool:
    return any(re.match(r"[+-]?\d", row[i]) for row in cells)


def report(
    dirs: Sequence[str | Path],
    table: int | str | None = None,
    fmt: str = "md",
    paper_file: str | Path = PAPER_FILE,
) -> str:
    """The rendered table(s) of the runs under ``dirs``."""
    runs = find_runs(dirs)
    paper = load_paper(paper_file)
    numbers = [table] if table is not None else detect_tables(runs)
    return "\n".join(render(build_table(n, runs, paper), fmt) for n in numbers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the paper's tables from sweep directories, with the published numbers beside ours.",
        epilog="example: python experiments/report.py multirun/table4_input/2026-11-24_10-00-00 --format md",
    )
    parser.add_argument("dirs", nargs="+", metavar="SWEEP_DIR", help="sweep or run directories")
    parser.add_argument(
        "--table",
        type=lambda v: v if v == SCORING else int(v),
        choices=[*TABLES, SCORING],
        help=f"the paper's table, or {SCORING} (per configuration: does mask scoring help; default: detected)",
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument("--paper", default=str(PAPER_FILE), help="the published numbers (YAML)")
    args = parser.parse_args(argv)
    try:
        print(report(args.dirs, args.table, args.format, args.paper), end="")
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
