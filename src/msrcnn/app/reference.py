"""Where a run falls in a preset's measured spread: the last lines of ``make train``.

A preset may carry ``reference`` (:class:`msrcnn.config.schema.ReferenceConfig`): the mean and
standard deviation over seeds of its mask AP, mask scoring gain and MaskIoU Pearson r, measured at
one or more run lengths (steps). A host trains as many steps as its time budget allows, so the
expectation is taken at the run's own step count: the nearest measured length, or linearly
between two measured lengths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# (key in a reference point, label, format of a value)
METRICS = (
    ("mask_ap", "mask AP (class x MaskIoU)", "{:.1f}"),
    ("gain", "mask scoring gain (AP)", "{:+.2f}"),
    ("pearson", "MaskIoU Pearson r", "{:.3f}"),
)
WITHIN_SDS = 2.0  # a value within mean +- 2 sd is "within the spread"


def run_metrics(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The compared figures of one run's results (``results.json``): mask AP under the mask score,
    its gain over the class score, and the MaskIoU Pearson r."""
    segm, segm_cls = results.get("segm") or {}, results.get("segm_cls") or {}
    mask_ap, cls_ap = segm.get("AP"), segm_cls.get("AP")
    return {
        "mask_ap": mask_ap,
        "gain": None if mask_ap is None or cls_ap is None else mask_ap - cls_ap,
        "pearson": results.get("maskiou_pearson"),
    }


def expected_at(
    points: Sequence[Mapping[str, Any]], steps: int
) -> tuple[dict[str, tuple[float, float]], str]:
    """``{metric: (mean, sd)}`` expected after ``steps`` training steps, and how it was obtained:
    the reference point of that length, the nearest one outside the measured lengths, or a linear
    interpolation of mean and sd between the two measured lengths around ``steps``."""
    if not points:
        raise ValueError("reference.points is empty: nothing to compare with")
    points = sorted(points, key=lambda p: p["steps"])

    def at(point: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        return {key: (float(point[key][0]), float(point[key][1])) for key, _, _ in METRICS}

    def seeds(point: Mapping[str, Any]) -> str:
        return f"{point['seeds']} seeds at {point['steps']:,} steps"

    if steps <= points[0]["steps"] or len(points) == 1:
        nearest = min(points, key=lambda p: abs(p["steps"] - steps))
        how = "" if nearest["steps"] == steps else ", the nearest measured length"
        return at(nearest), seeds(nearest) + how
    if steps >= points[-1]["steps"]:
        how = "" if points[-1]["steps"] == steps else ", the nearest measured length"
        return at(points[-1]), seeds(points[-1]) + how
    upper = next(i for i, p in enumerate(points) if p["steps"] >= steps)
    lo, hi = points[upper - 1], points[upper]
    t = (steps - lo["steps"]) / (hi["steps"] - lo["steps"])
    a, b = at(lo), at(hi)
    mixed = {k: (a[k][0] + t * (b[k][0] - a[k][0]), a[k][1] + t * (b[k][1] - a[k][1])) for k in a}
    return mixed, f"interpolated between {seeds(lo)} and {seeds(hi)}"


def place(value: float, mean: float, sd: float) -> str:
    """``within``, ``below`` or ``above`` the spread ``mean +- 2 sd``."""
    if value < mean - WITHIN_SDS * sd:
        return "below"
    if value > mean + WITHIN_SDS * sd:
        return "above"
    return "within"


def format_reference(reference: Mapping[str, Any], results: Mapping[str, Any], steps: int) -> str:
    """The lines that place a run's results in the preset's measured spread (one per figure, and a
    verdict), for a run of ``steps`` training steps."""
    expected, how = expected_at(reference["points"], steps)
    figures = run_metrics(results)
    lines = [f"compared with this preset's measured spread ({how}; {reference['source']}):"]
    width = max(len(label) for _, label, _ in METRICS)
    outside = []
    for key, label, fmt in METRICS:
        mean, sd = expected[key]
        value = figures[key]
        spread = f"{fmt.format(mean - WITHIN_SDS * sd)} to {fmt.format(mean + WITHIN_SDS * sd)}"
        if value is None:
            lines.append(f"  {label:{width}}  {'-':>6}  expected {spread}: not computed by this run")
            outside.append(label)
            continue
        where = place(value, mean, sd)
        if where != "within":
            outside.append(label)
        lines.append(
            f"  {label:{width}}  {fmt.format(value):>6}  expected {spread} (mean {fmt.format(mean)}, "
            f"sd {sd:.2f}): {where}"
        )
    if not outside:
        lines.append(f"this run ({steps:,} steps) is within the measured spread on every figure.")
    else:
        lines.append(
            f"this run ({steps:,} steps) is outside the measured spread on: {', '.join(outside)}. "
            f"Each spread comes from {reference['points'][0]['seeds']} seeds, so one figure just outside is not "
            "alarming; several far below suggest a broken set-up (run make test, and check that no other "
            "job shared the CPU)."
        )
    return "\n".join(lines)
