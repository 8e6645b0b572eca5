"""The compact results table printed at the end of training and evaluation."""

from __future__ import annotations

from typing import Any

ROWS = (
    ("bbox", "box (class score)"),
    ("segm_cls", "mask, Mask R-CNN (class score)"),
    ("segm", "mask, MS R-CNN (class x MaskIoU)"),
    ("segm_oracle", "mask, oracle (class x GT MaskIoU)"),
)
COLUMNS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _cell(value: Any) -> str:
    return f"{value:6.2f}" if isinstance(value, (int, float)) else f"{'-':>6}"


def format_results_table(results: dict[str, Any]) -> str:
    """Box AP, mask AP under the three rankings, the MaskIoU correlation and the image count."""
    width = max(len(label) for _, label in ROWS)
    lines = [f"{'':{width}}  " + " ".join(f"{c:>6}" for c in COLUMNS)]
    for key, label in ROWS:
        row = results.get(key)
        if row:
            lines.append(f"{label:{width}}  " + " ".join(_cell(row.get(c)) for c in COLUMNS))
    if results.get("segm") and results.get("segm_cls") and results.get("segm_oracle"):
        gain = results["segm"]["AP"] - results["segm_cls"]["AP"]
        lines.append(f"mask scoring gain: {gain:+.2f} AP (paper, R18-FPN on COCO: +1.6)")
    pearson = results.get("maskiou_pearson")
    if pearson is not None:
        lines.append(f"MaskIoU Pearson r (predicted vs GT, top-100 per image): {pearson:.3f} (paper: 0.74)")
        r = {
            k: results.get(k)
            for k in ("class_score_pearson", "maskiou_pearson_matched", "class_score_pearson_matched")
        }
        if all(v is not None for v in r.values()):
            lines.append(
                f"  tracking GT MaskIoU, Pearson r: all detections: MaskIoU {pearson:.3f}, class score "
                f"{r['class_score_pearson']:.3f}; found objects (GT MaskIoU > 0.5): MaskIoU "
                f"{r['maskiou_pearson_matched']:.3f}, class score {r['class_score_pearson_matched']:.3f}"
            )
    lines.append(f"images: {results.get('num_images')}  detections: {results.get('num_detections')}")
    return "\n".join(lines)
