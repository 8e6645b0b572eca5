"""The paper's side of the report: its tables, their row labels and the published numbers.

The numbers live in ``experiments/paper_numbers.yaml`` (:data:`PAPER_FILE`); the labels here are for
display, keyed by the config values that produce each row (the code's choices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msrcnn.report.runs import ReportError, read_yaml

# The repository's experiments/paper_numbers.yaml (this package lives in its src/msrcnn/report).
PAPER_FILE = Path(__file__).resolve().parents[3] / "experiments" / "paper_numbers.yaml"
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
ABLATION_BACKBONE = "r18_fpn"  # the paper's ablations (Tables 4-6) use R18-FPN
TABLE1_BACKBONES = {"r18_fpn", "r50_fpn", "r101_fpn"}
TABLE2_BACKBONES = {"r101_c4", "r101_fpn", "r101_dcn_fpn", "r50_c4", "r50_dcn_fpn"}
STAND_IN = "†"  # Table 7: the class-score ranking stands in for a Mask R-CNN run


def load_paper(path: str | Path = PAPER_FILE) -> dict[str, Any]:
    """The published numbers, by table (``paper_numbers.yaml``)."""
    paper = read_yaml(Path(path))
    if not isinstance(paper, dict):
        raise ReportError(f"{path}: not a mapping of tables")
    return paper


def paper_value(node: Any, *path: str) -> float | None:
    """The published number at ``path`` in ``node`` (None: not published)."""
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else float(node)
