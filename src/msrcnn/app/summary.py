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


def _interval(diff: dict[str, Any]) -> str:
    level = diff.get("bootstrap", {}).get("level", 0.95)
    images = diff.get("bootstrap", {}).get("num_images")
    return f"{diff['AP']:+.2f} AP, {level:.0%} interval {diff['low']:+.2f} to {diff['high']:+.2f} over {images} images"


GAIN_VERDICTS = {  # the verdict, and what it means
    "helps": "helps (the whole interval is above 0",
    "hurts": "hurts (the class score ranks better on these images",
    "no clear difference": "no clear difference (on these images it cannot be told apart from no gain",
}


def difference_lines(results: dict[str, Any]) -> list[str]:
    """The mask scoring gain and the oracle's headroom, each with its paired bootstrap interval
    (none without a MaskIoU head)."""
    lines = []
    gain = results.get("mask_scoring_gain")
    paper = "paper, R18-FPN on COCO: +1.6"
    if gain:
        verdict = GAIN_VERDICTS.get(gain["verdict"], f"{gain['verdict']} (")
        lines.append(f"mask scoring gain: {_interval(gain)}: {verdict}; {paper})")
    elif results.get("segm") and results.get("segm_cls") and results.get("segm_oracle"):  # no interval
        point = results["segm"]["AP"] - results["segm_cls"]["AP"]
        lines.append(f"mask scoring gain: {point:+.2f} AP ({paper})")
    headroom = results.get("oracle_headroom")
    if headroom:
        lines.append(f"  oracle headroom (GT MaskIoU instead of predicted): {_interval(headroom)}")
    return lines


def format_results_table(results: dict[str, Any]) -> str:
    """Box AP, mask AP under the three rankings, the MaskIoU correlation and the image count."""
    width = max(len(label) for _, label in ROWS)
    lines = [f"{'':{width}}  " + " ".join(f"{c:>6}" for c in COLUMNS)]
    for key, label in ROWS:
        row = results.get(key)
        if row:
            lines.append(f"{label:{width}}  " + " ".join(_cell(row.get(c)) for c in COLUMNS))
    lines += difference_lines(results)
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
