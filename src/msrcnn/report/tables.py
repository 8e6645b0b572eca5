"""The tables: Tables 1-7 in the paper's layout, our numbers beside the published ones, and the
``scoring`` table (per configuration: does mask scoring help). :func:`build_table` builds any of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msrcnn.report.configurations import (
    Group,
    at_defaults,
    flatten,
    float_eq,
    group_by_configuration,
    mask_rcnn_on,
    ms_rcnn_on,
    pick_configuration,
)
from msrcnn.report.defaults import HEAD_DEFAULTS
from msrcnn.report.detect import table_from_name
from msrcnn.report.paper import (
    ABLATION_BACKBONE,
    ABLATIONS,
    BACKBONE_LABELS,
    SCORING,
    STAND_IN,
    TABLES,
    load_paper,
    paper_value,
)
from msrcnn.report.runs import NOT_THE_CONFIGURATION, ReportError, Run
from msrcnn.report.stats import Intervals, Ratio, Stat, legend, welch

MISSING = "missing"
GAIN_INTERVAL = "gain 95% interval"
INTERVAL_NOTE = (
    f"{GAIN_INTERVAL}: MS R-CNN mask AP minus the same run's class-score ranking (segm_cls), with its "
    "95% paired bootstrap interval over the evaluated images (1,000 resamples), one per seed; "
    "'k/n above 0': the seeds whose interval lies wholly above 0 (the gain is clear on that run's images)"
)
Cell = Any  # str, Stat (ours), float (the paper's), Diff, None (not published / undefined)


@dataclass
class Table:
    number: int | str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    label_columns: int = 1  # the rows' labels; then our numbers, the paper's (paper) and the diff (SE)


def diff_cell(row: Cell, baseline: Cell) -> Cell:
    """The difference column's cell: a Diff, or None (printed ``-``) without both numbers."""
    return welch(row, baseline) if isinstance(row, Stat) and isinstance(baseline, Stat) else None


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


class _Builder:
    """One table being built: the configurations its rows took, the runs they used (the others are named
    in a note) and its notes."""

    def __init__(self, number: int, runs: Sequence[Run]) -> None:
        self.number = number
        self.runs = runs
        self.used: set[Path] = set()
        self.notes: list[str] = []

    def pick(
        self, predicate: Callable[[Run], bool], what: str, prefer_backbone: str | None = None
    ) -> Group | None:
        group, matches = pick_configuration(
            self.runs, predicate, self.number, prefer_backbone, self.notes, what
        )
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
        mask_rcnn = b.pick(mask_rcnn_on(backbone), f"{label} Mask R-CNN")
        ms = b.pick(ms_rcnn_on(backbone), f"{label} MS R-CNN")
        baseline = None
        for model, group, paper_key, segm_key in (
            ("Mask R-CNN", mask_rcnn, "mask_rcnn", "segm"),
            ("MS R-CNN ranked by class score (segm_cls)", ms, None, "segm_cls"),
            ("MS R-CNN", ms, "ms_rcnn", "segm"),
        ):
            row: list[Cell] = [label, model]
            for _, key, metric in columns:
                ours_key = segm_key if key == "segm" else key
                published = paper_value(numbers, paper_key, key, metric) if paper_key else None
                row += [_ours(group, ours_key, metric), published]
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
                return float_eq(r.head_value(key), v)
        else:

            def matches(r: Run, v: Any = value) -> bool:
                return str(r.head_value(key)) == v

        label = labels.get(str(value), str(value))
        group = b.pick(
            lambda r, m=matches: r.is_mask_scoring and m(r) and at_defaults(r, key), label, ABLATION_BACKBONE
        )
        if float_eq(value, HEAD_DEFAULTS[key]) or str(value) == HEAD_DEFAULTS[key]:
            default_group, default_row = group, len(rows)
        rows.append(
            [
                label,
                *[c for _, k, m in columns for c in (_ours(group, k, m), paper_value(numbers, k, m))],
                _intervals(group),
            ]
        )
    baseline = paper.get("ablation_baseline", {}).get("mask_rcnn", {})
    mask_rcnn = b.pick(mask_rcnn_on(None), "Mask R-CNN", ABLATION_BACKBONE)
    default_label = labels.get(str(HEAD_DEFAULTS[key]), str(HEAD_DEFAULTS[key]))
    if mask_rcnn is not None:
        rows.append(
            [
                "Mask R-CNN (head=none run)",
                *[c for _, k, m in columns for c in (_ours(mask_rcnn, k, m), paper_value(baseline, k, m))],
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
                    for c in (_ours(default_group, "segm_cls", m), paper_value(baseline, k, m))
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
        ms = b.pick(ms_rcnn_on(backbone), f"{label} MS R-CNN")
        mask_rcnn = b.pick(mask_rcnn_on(backbone), f"{label} Mask R-CNN")
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
                paper_value(numbers, "mask_rcnn"),
                ms_ap,
                paper_value(numbers, "ms_rcnn"),
                _ours(ms, "segm_oracle", "AP"),
                paper_value(numbers, "oracle"),
                _ours(ms, "maskiou_pearson"),
                _ratio(paper_value(pearson, backbone)),
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
            *[paper_value(numbers, model, "segm", m) for m in metrics],
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
                for k, v in flatten(g.config).items()
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
    groups = group_by_configuration(matches, notes, "runs")
    groups.sort(
        key=lambda g: (str(g.runs[0].head_value("head.samples")) != HEAD_DEFAULTS["head.samples"], str(g))
    )
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
