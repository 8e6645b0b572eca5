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
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
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
HEAD_DEFAULTS = {"head.input": "concat", "head.target": "target_class", "head.tau": 0.0}
TABLE1_BACKBONES = {"r18_fpn", "r50_fpn", "r101_fpn"}
TABLE2_BACKBONES = {"r101_c4", "r101_fpn", "r101_dcn_fpn", "r50_c4", "r50_dcn_fpn"}
IGNORED_KEYS = re.compile(
    r"^(hydra\.|paths\.|data\.|trainer\.|logger\.|callbacks\.|seed$|ckpt_path$|torch_threads$)"
)


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


def table_from_keys(keys: set[str], backbones: set[str]) -> int | None:
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


def detect_tables(runs: Sequence[Run]) -> list[int]:
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
    return sorted(tables)


# --------------------------------------------------------------------------- tables
Cell = Any  # str, float (ours or the paper's), None (not published)


@dataclass
class Table:
    number: int
    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


def _pick(
    runs: Sequence[Run],
    predicate: Callable[[Run], bool],
    table: int | None,
    prefer_backbone: str | None = None,
) -> tuple[Run | None, list[Run]]:
    """The run for a row: finished first, then from this table's experiment, then the preferred
    backbone, then the newest. Also returns every matching run."""
    matches = [r for r in runs if predicate(r)]
    if not matches:
        return None, []
    best = max(
        matches,
        key=lambda r: (
            r.finished,
            table_from_name(r.experiment_name) == table,
            r.backbone == prefer_backbone,
            r.mtime,
        ),
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


def _ours(run: Run | None, key: str, metric: str | None = None) -> Cell:
    """Our number: ``missing`` without a finished run, None (printed ``-``) when undefined."""
    if run is None or run.results is None:
        return MISSING
    value = run.results.get(key)
    if metric is not None:
        value = value.get(metric) if isinstance(value, dict) else None
    if value is None:
        return None
    return float(value) if metric is not None else Ratio(value)


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
    ) -> Run | None:
        run, matches = _pick(self.runs, predicate, self.number, prefer_backbone)
        if run is None:
            return None
        self.used.update(m.path for m in matches)
        if not run.finished:
            why = (
                "failed (see its error.txt)" if run.failed else "no results.json (still running, or stopped)"
            )
            self.notes.append(f"{what}: {run.path}: {why}")
        if len(matches) > 1:
            self.notes.append(f"{what}: {len(matches)} runs match; showing {run.path}")
        return run

    def finish(self, title: str, header: list[str], rows: list[list[Cell]]) -> Table:
        unused = [
            r
            for r in self.runs
            if r.path not in self.used and table_from_name(r.experiment_name) in (None, self.number)
        ]
        if unused:
            self.notes.append("runs not in this table: " + ", ".join(str(r.path) for r in unused))
        return Table(self.number, title, header, rows, self.notes)


def _metric_header(columns: Sequence[tuple[str, str, str]]) -> list[str]:
    header = []
    for label, _, _ in columns:
        header += [label, f"{label} (paper)"]
    return header


def _backbone_table(number: int, runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Tables 1 and 2: per backbone, Mask R-CNN (head=none run), the class-score ranking of the
    MS R-CNN run (segm_cls) and MS R-CNN."""
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
        for model, run, paper_key, segm_key in (
            ("Mask R-CNN", mask_rcnn, "mask_rcnn", "segm"),
            ("MS R-CNN ranked by class score (segm_cls)", ms, None, "segm_cls"),
            ("MS R-CNN", ms, "ms_rcnn", "segm"),
        ):
            row: list[Cell] = [label, model]
            for _, key, metric in columns:
                ours_key = segm_key if key == "segm" else key
                paper_value = _paper(numbers, paper_key, key, metric) if paper_key else None
                row += [_ours(run, ours_key, metric), paper_value]
            rows.append(row)
    return b.finish(spec["title"], ["backbone", "model", *_metric_header(columns)], rows)


def _ablation_table(number: int, runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Tables 4-6: MS R-CNN per setting, and the Mask R-CNN baseline."""
    spec = paper[f"table{number}"]
    key, key_label, labels = ABLATIONS[number]
    columns = [("AP", "segm", "AP"), ("AP50", "segm", "AP50"), ("AP75", "segm", "AP75")]
    b = _Builder(number, runs)
    rows: list[list[Cell]] = []
    default_run = None
    for value, numbers in spec["rows"].items():
        if key == "head.tau":

            def matches(r: Run, v: Any = value) -> bool:
                return _float_eq(r.head_value(key), v)
        else:

            def matches(r: Run, v: Any = value) -> bool:
                return str(r.head_value(key)) == v

        label = labels.get(str(value), str(value))
        run = b.pick(
            lambda r, m=matches: r.is_mask_scoring and m(r) and _at_defaults(r, key), label, "r18_fpn"
        )
        if _float_eq(value, HEAD_DEFAULTS[key]) or str(value) == HEAD_DEFAULTS[key]:
            default_run = run
        rows.append([label, *[c for _, k, m in columns for c in (_ours(run, k, m), _paper(numbers, k, m))]])
    baseline = paper.get("ablation_baseline", {}).get("mask_rcnn", {})
    mask_rcnn = b.pick(_mask_rcnn(None), "Mask R-CNN", "r18_fpn")
    if mask_rcnn is not None:
        rows.append(
            [
                "Mask R-CNN (head=none run)",
                *[c for _, k, m in columns for c in (_ours(mask_rcnn, k, m), _paper(baseline, k, m))],
            ]
        )
    else:
        default_label = labels.get(str(HEAD_DEFAULTS[key]), str(HEAD_DEFAULTS[key]))
        rows.append(
            [
                f"Mask R-CNN ranking (segm_cls of the {default_label} run)",
                *[
                    c
                    for _, k, m in columns
                    for c in (_ours(default_run, "segm_cls", m), _paper(baseline, k, m))
                ],
            ]
        )
        b.notes.append(
            "Mask R-CNN row: ours is the class-score ranking of the same MS R-CNN model (segm_cls); "
            "the paper's is a separately trained Mask R-CNN (add head=none runs to compare like for like)"
        )
    return b.finish(spec["title"], [key_label, *_metric_header(columns)], rows)


def _upper_bound_table(runs: Sequence[Run], paper: dict[str, Any]) -> Table:
    """Table 7: Mask R-CNN / MS R-CNN / MS R-CNN with GT MaskIoU (segm_oracle), and Pearson r."""
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
            baseline = _ours(ms, "segm_cls", "AP")
            fallback = fallback or ms is not None
            baseline = f"{baseline:.1f}*" if isinstance(baseline, float) else baseline
        rows.append(
            [
                label,
                baseline,
                _paper(numbers, "mask_rcnn"),
                _ours(ms, "segm", "AP"),
                _paper(numbers, "ms_rcnn"),
                _ours(ms, "segm_oracle", "AP"),
                _paper(numbers, "oracle"),
                _ours(ms, "maskiou_pearson"),
                _ratio(_paper(pearson, backbone)),
            ]
        )
    if fallback:
        b.notes.append(
            "*: no head=none run for this backbone; the class-score ranking (segm_cls) of the "
            "MS R-CNN run stands in for Mask R-CNN"
        )
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
    ]
    return b.finish(spec["title"], header, rows)


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
    return Table(3, spec["title"], ["backbone", "model", *[f"{m} (paper)" for m in metrics]], rows, notes)


def build_table(number: int, runs: Sequence[Run], paper: dict[str, Any] | None = None) -> Table:
    """Table ``number`` (1-7) in the paper's layout from ``runs``."""
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
def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, Ratio):
        return f"{cell:.3f}"
    if isinstance(cell, float):
        return f"{cell:.1f}"
    return str(cell)


def render(table: Table, fmt: str = "md") -> str:
    """The table as Markdown (``md``), ``csv`` (one header row, full precision, a ``table`` column)
    or aligned plain ``text``."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["table", *table.header])
        for row in table.rows:
            writer.writerow([table.number, *["" if c is None else c for c in row]])
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
    return any(re.fullmatch(r"-?\d+(\.\d+)?\*?", row[i]) for row in cells)


def report(
    dirs: Sequence[str | Path], table: int | None = None, fmt: str = "md", paper_file: str | Path = PAPER_FILE
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
    parser.add_argument("--table", type=int, choices=TABLES, help="the paper's table (default: detected)")
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
