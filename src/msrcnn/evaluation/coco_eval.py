"""COCO box / mask evaluation of Mask (Scoring) R-CNN detections, with the paper's analyses.

Engine: ``faster_coco_eval`` (numerically identical to pycocotools, much faster). One
evaluation of a list of :class:`~msrcnn.evaluation.records.DetectionRecord` gives

* ``bbox``: box AP ranked by the class score (as the reference code does),
* ``segm``: mask AP ranked by the mask score ``cls * predicted MaskIoU`` (MS R-CNN),
* ``segm_cls``: mask AP ranked by the class score (what Mask R-CNN reports),
* ``segm_oracle``: mask AP ranked by ``cls * GT MaskIoU`` where the detection overlaps a GT
  mask of its class (IoU > 0), ``cls * predicted MaskIoU`` elsewhere (paper Table 7),
* ``maskiou_pearson``: Pearson correlation of predicted vs GT MaskIoU (paper Section 4.4).

Every AP is in percent (x100, as the paper prints them) and rounded to ``ndigits``; an AP
that COCOeval reports as -1 (no ground truth in that area range) is returned as None.
The masks are RLE-encoded once (in the records) and the segm detections are loaded once;
the three mask rankings only swap the scores.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils

from msrcnn.evaluation.bootstrap import RESAMPLES, BootstrapError, collect_matches, paired_differences
from msrcnn.evaluation.records import DetectionRecord

log = logging.getLogger("msrcnn.evaluation")

__all__ = [
    "AP_KEYS",
    "DIFFERENCES",
    "coco_summary",
    "evaluate_records",
    "gt_mask_ious",
    "load_coco_gt",
    "maskiou_pearson",
    "oracle_scores",
    "per_class_ap",
    "run_coco_eval",
    "to_bbox_results",
    "to_coco_results",
    "to_segm_results",
    "validate_records",
]

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The AP differences with a paired bootstrap interval: key -> (ranking, ranking it is compared with)
DIFFERENCES = {"mask_scoring_gain": ("segm", "segm_cls"), "oracle_headroom": ("segm_oracle", "segm")}

ScoreChoice = Literal["mask", "cls"] | Sequence[np.ndarray]


def _silent(*args: Any, **kwargs: Any) -> None:
    """A print function that prints nothing."""


def load_coco_gt(source: COCO | str | os.PathLike | dict | Any, verbose: bool = False) -> COCO:
    """Load COCO ground truth once as a ``faster_coco_eval.COCO``.

    Args:
        source: a ``faster_coco_eval.COCO`` (returned as is), an annotation file path, an
            annotation dict, or any object with a COCO ``dataset`` dict (e.g. pycocotools' COCO).
        verbose: let the loader print its progress.
    """
    if isinstance(source, COCO):
        return source
    print_function = print if verbose else _silent
    if isinstance(source, (str, os.PathLike, dict)):
        return COCO(source, print_function=print_function)
    dataset = getattr(source, "dataset", None)
    if not isinstance(dataset, dict):
        raise TypeError(f"cannot load COCO ground truth from {type(source).__name__}")
    return COCO(dataset, print_function=print_function)


def validate_records(coco_gt: COCO, records: Sequence[DetectionRecord]) -> list[int]:
    """Check that every record's image is in the GT and appears once; return the sorted ids.

    Raises:
        ValueError: no records, a duplicated image id (e.g. double counting across DDP
            ranks), or an image id that the ground truth does not contain.
    """
    if len(records) == 0:
        raise ValueError("no detection records to evaluate")
    ids = np.fromiter((r.image_id for r in records), dtype=np.int64, count=len(records))
    unique, counts = np.unique(ids, return_counts=True)
    duplicated = unique[counts > 1]
    if duplicated.size:
        raise ValueError(
            f"{duplicated.size} image id(s) appear in more than one record (first: {duplicated[:10].tolist()}); "
            "each image must be evaluated exactly once"
        )
    unknown = np.setdiff1d(unique, np.asarray(sorted(coco_gt.imgs), dtype=np.int64))
    if unknown.size:
        raise ValueError(
            f"{unknown.size} image id(s) are not in the ground truth (first: {unknown[:10].tolist()})"
        )
    return unique.tolist()


def _concat(arrays: Iterable[np.ndarray], dtype: type = np.float64) -> np.ndarray:
    """Concatenate per-record arrays (an empty float array when there are none)."""
    arrays = list(arrays)
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)


def _has_mask_ious(records: Sequence[DetectionRecord]) -> bool:
    """Whether the records come from MS R-CNN (all with mask_ious) or a plain Mask R-CNN (none)."""
    flags = {r.mask_ious is not None for r in records}
    if len(flags) > 1:
        raise ValueError("some records carry mask_ious and others do not; evaluate one model at a time")
    return flags == {True}


def _segm_scores(records: Sequence[DetectionRecord], score: ScoreChoice) -> list[np.ndarray]:
    """Per-record ranking scores for the segm results."""
    if isinstance(score, str):
        if score == "mask":
            return [r.mask_scores for r in records]
        if score == "cls":
            return [r.scores for r in records]
        raise ValueError(f"unknown score {score!r}; valid choices: 'mask', 'cls' or per-record arrays")
    if len(score) != len(records) or any(len(s) != len(r) for s, r in zip(score, records)):
        raise ValueError("explicit scores must give one array per record, one score per detection")
    return [np.asarray(s) for s in score]


def to_bbox_results(records: Sequence[DetectionRecord]) -> list[dict]:
    """COCO bbox results ``{image_id, category_id, bbox: [x, y, w, h], score: class score}``."""
    results = []
    for r in records:
        xywh = r.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        results.extend(
            {"image_id": r.image_id, "category_id": c, "bbox": b, "score": s}
            for c, b, s in zip(r.labels.tolist(), xywh.tolist(), r.scores.tolist())
        )
    return results


def to_segm_results(records: Sequence[DetectionRecord], score: ScoreChoice = "mask") -> list[dict]:
    """COCO segm results with ``score`` = the chosen ranking, plus ``class_score`` and ``mask_iou``.

    Args:
        records: detections with RLE masks.
        score: ``"mask"`` (``cls * mask_iou``; the class score for records without
            mask_ious), ``"cls"`` (class score) or one explicit score array per record.

    Returns:
        One dict per detection: ``image_id, category_id, segmentation (RLE), score,
        class_score, mask_iou`` (None without mask_ious). No ``bbox`` key: with one, COCO's
        ``loadRes`` would take the box area as the mask area.
    """
    missing = [r.image_id for r in records if r.rles is None]
    if missing:
        raise ValueError(f"records without masks cannot give segm results (images {missing[:10]})")
    results = []
    for r, ranking in zip(records, _segm_scores(records, score)):
        ious = r.mask_ious.tolist() if r.mask_ious is not None else [None] * len(r)
        results.extend(
            {
                "image_id": r.image_id,
                "category_id": c,
                "segmentation": rle,
                "score": s,
                "class_score": cs,
                "mask_iou": iou,
            }
            for c, rle, s, cs, iou in zip(
                r.labels.tolist(), r.rles, ranking.tolist(), r.scores.tolist(), ious
            )
        )
    return results


def to_coco_results(
    records: Sequence[DetectionRecord], score: ScoreChoice = "mask"
) -> tuple[list[dict], list[dict]]:
    """``(bbox_results, segm_results)`` in the COCO results format (JSON-serialisable).

    The segm results are empty when no record has masks; see :func:`to_segm_results`.
    """
    has_masks = any(r.rles is not None for r in records)
    return to_bbox_results(records), (to_segm_results(records, score) if has_masks else [])


def _gt_rles_by_image(coco_gt: COCO, image_id: int) -> tuple[list[dict], np.ndarray]:
    """The non-crowd GT masks of one image as RLEs, with their category ids."""
    anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    return [coco_gt.annToRLE(a) for a in anns], np.asarray([a["category_id"] for a in anns], dtype=np.int64)


def gt_mask_ious(coco_gt: COCO, records: Sequence[DetectionRecord]) -> list[np.ndarray]:
    """GT MaskIoU of every detection: its mask IoU with the best-matching non-crowd GT instance
    of the same category in the same image (0 when there is none).

    Returns:
        One ``float64 [K]`` array per record.
    """
    out = []
    for r in records:
        gt_rles, gt_cats = _gt_rles_by_image(coco_gt, r.image_id)
        if len(r) == 0 or not gt_rles:
            out.append(np.zeros(len(r), dtype=np.float64))
            continue
        if r.rles is None:
            raise ValueError(f"image {r.image_id}: a record without masks has no mask IoU")
        iou = np.asarray(mask_utils.iou(r.rles, gt_rles, [0] * len(gt_rles)), dtype=np.float64)
        same_class = r.labels[:, None] == gt_cats[None, :]
        out.append(np.where(same_class, iou, 0.0).max(axis=1))
    return out


def oracle_scores(records: Sequence[DetectionRecord], gt_ious: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Paper Table 7 ranking: ``cls * GT MaskIoU`` where the GT MaskIoU is > 0, else
    ``cls * predicted MaskIoU`` (records must carry mask_ious)."""
    return [r.scores * np.where(g > 0, g, r.mask_ious) for r, g in zip(records, gt_ious)]


def maskiou_pearson(predicted: np.ndarray, target: np.ndarray) -> float | None:
    """Pearson correlation of predicted and GT MaskIoU; None when undefined (fewer than two
    detections, a constant input, or non-finite values)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if predicted.size < 2 or not (np.isfinite(predicted).all() and np.isfinite(target).all()):
        return None
    if np.ptp(predicted) == 0 or np.ptp(target) == 0:
        return None
    return float(np.corrcoef(predicted, target)[0, 1])


def score_correlations(
    records: Sequence[DetectionRecord], gt_ious: Sequence[np.ndarray], matched_iou: float = 0.5
) -> dict[str, float | None]:
    """How well each score tracks mask quality (the GT MaskIoU), as Pearson r:

    * ``maskiou_pearson`` / ``class_score_pearson``: the predicted MaskIoU / the class score, over
      all detections (top-100 per image; the paper's Section 4.4 figure is for the MaskIoU);
    * ``*_matched``: the same over the detections whose GT MaskIoU exceeds ``matched_iou``, i.e.
      masks of found objects, where the paper's Figure 2 shows that the class score says little
      about mask quality.
    """
    predicted = _concat(r.mask_ious for r in records)
    cls = _concat(r.scores for r in records)
    target = _concat(gt_ious)
    matched = target > matched_iou
    return {
        "maskiou_pearson": maskiou_pearson(predicted, target),
        "class_score_pearson": maskiou_pearson(cls, target),
        "maskiou_pearson_matched": maskiou_pearson(predicted[matched], target[matched]),
        "class_score_pearson_matched": maskiou_pearson(cls[matched], target[matched]),
    }


def run_coco_eval(
    coco_gt: COCO, coco_dt: COCO, iou_type: str, img_ids: Sequence[int], verbose: bool = False
) -> COCOeval_faster:
    """Evaluate, accumulate and summarise on ``img_ids`` only; returns the COCOeval object (which keeps
    its per-image matches for :func:`msrcnn.evaluation.bootstrap.collect_matches`)."""
    evaluator = COCOeval_faster(
        coco_gt, coco_dt, iou_type, print_function=print if verbose else _silent, separate_eval=True
    )
    evaluator.params.imgIds = list(img_ids)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def _percent(value: float, ndigits: int | None) -> float | None:
    """COCOeval statistic -> percent; -1 (undefined: no GT in the bucket) -> None."""
    if value < 0:
        return None
    value = float(value) * 100.0
    return round(value, ndigits) if ndigits is not None else value


def coco_summary(evaluator: COCOeval_faster, ndigits: int | None = 3) -> dict[str, float | None]:
    """``{AP, AP50, AP75, APs, APm, APl}`` in percent from a summarised COCOeval."""
    return {key: _percent(value, ndigits) for key, value in zip(AP_KEYS, evaluator.stats[:6])}


def per_class_ap(evaluator: COCOeval_faster, ndigits: int | None = 3) -> dict[str, float | None]:
    """AP@[.5:.95] per category name (area "all", the largest maxDets), in percent.

    Computed from ``evaluator.eval["precision"]`` ``[T, R, K, A, M]`` like COCO's summary;
    None for a category without ground truth in the evaluated images.
    """
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]  # [T, R, K]
    valid = precision > -1
    count = valid.sum(axis=(0, 1))
    total = np.where(valid, precision, 0.0).sum(axis=(0, 1))
    ap = np.divide(total, count, out=np.full(count.shape, -1.0), where=count > 0)
    names = [c["name"] for c in evaluator.cocoGt.loadCats(list(evaluator.params.catIds))]
    return {name: _percent(value, ndigits) for name, value in zip(names, ap.tolist())}


def _results_coco(coco_gt: COCO, anns: list[dict]) -> COCO:
    """The results object ``coco_gt.loadRes(anns)`` builds, from annotations that already carry
    every key it would add except ``id`` and ``iscrowd`` (set here).

    ``loadRes`` computes each detection's area and box one call at a time (for 50,000 masks,
    about a second of RLE decoding); the callers compute them in bulk or take them from the
    records, with the same values. The image ids were checked by :func:`validate_records`.
    """
    for index, ann in enumerate(anns):
        ann["id"] = index + 1
        ann["iscrowd"] = 0
    dataset = {
        "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": anns,
    }
    return COCO(dataset, print_function=_silent)  # a dataset dict: indexed as a loaded file is


def _bbox_dt(coco_gt: COCO, records: Sequence[DetectionRecord]) -> COCO:
    """The loaded bbox results: :func:`to_bbox_results` with the keys ``loadRes`` adds (``area``
    ``w * h``, the box as a polygon ``segmentation``)."""
    results = to_bbox_results(records)
    if results:
        xywh = np.concatenate([r.boxes for r in records]).astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        x1, y1 = xywh[:, 0], xywh[:, 1]
        x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
        polygons = np.stack([x1, y1, x1, y2, x2, y2, x2, y1], axis=1).tolist()
        for ann, area, polygon in zip(results, (xywh[:, 2] * xywh[:, 3]).tolist(), polygons):
            ann["area"] = area
            ann["segmentation"] = [polygon]
    return _results_coco(coco_gt, results)


def _segm_dt(coco_gt: COCO, records: Sequence[DetectionRecord]) -> COCO:
    """The loaded segm results (ranked by class score): :func:`to_segm_results` with each mask's
    ``area`` and ``bbox`` (COCO's ``mask.area`` / ``mask.toBbox``, from the records when they carry
    them, else computed in one call per record)."""
    results = to_segm_results(records, "cls")
    areas, boxes = [], []
    for r in records:
        if not len(r):
            continue
        areas.append(r.mask_areas if r.mask_areas is not None else mask_utils.area(r.rles))
        boxes.append(r.mask_boxes if r.mask_boxes is not None else mask_utils.toBbox(r.rles))
    if results:
        for ann, area, box in zip(results, _concat(areas).tolist(), np.concatenate(boxes).tolist()):
            ann["area"] = area
            ann["bbox"] = box
    return _results_coco(coco_gt, results)


def _set_scores(coco_dt: COCO, scores: np.ndarray) -> None:
    """Swap the ranking scores of loaded detections (in results order) in place."""
    for ann, score in zip(coco_dt.dataset["annotations"], scores.tolist()):
        ann["score"] = score


def _differences(
    evaluators: dict[str, COCOeval_faster], resamples: int, seed: int, ndigits: int | None
) -> dict[str, dict[str, Any] | None]:
    """:data:`DIFFERENCES` with their paired bootstrap intervals; None each (and a warning) when the
    evaluation's per-image matches cannot be read (an unknown faster_coco_eval layout)."""
    try:
        matches = {key: collect_matches(evaluator) for key, evaluator in evaluators.items()}
        stats_ap = {key: float(evaluator.stats[0]) for key, evaluator in evaluators.items()}
        return paired_differences(
            matches, DIFFERENCES, stats_ap=stats_ap, resamples=resamples, seed=seed, ndigits=ndigits
        )
    except BootstrapError as err:
        log.warning("no interval for the AP differences: %s", err)
        return dict.fromkeys(DIFFERENCES)


def evaluate_records(
    coco_gt: COCO | str | os.PathLike | dict,
    records: Sequence[DetectionRecord],
    *,
    iou_types: Sequence[str] = ("bbox", "segm"),
    verbose: bool = False,
    ndigits: int | None = 3,
    per_class: bool = False,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """COCO evaluation of per-image records on exactly the images they cover.

    Args:
        coco_gt: the ground truth (load it once with :func:`load_coco_gt` and reuse it).
        records: one record per evaluated image (a partial split is fine; duplicates and
            images unknown to the GT raise ``ValueError``).
        iou_types: any of ``"bbox"``, ``"segm"``.
        verbose: print COCOeval's summaries.
        ndigits: rounding of the AP values (None: unrounded).
        per_class: also return ``segm_per_class`` (AP per category name, mask-score ranking).
        resamples, seed: the paired bootstrap over images of the AP differences (0: none).

    Returns:
        ``{"bbox", "segm", "segm_cls", "segm_oracle"}``: ``{AP, AP50, AP75, APs, APm, APl}``
        dicts (percent; None for an undefined AP) or None when not evaluated;
        ``"maskiou_pearson"`` and the other correlations of :func:`score_correlations`: float or
        None; ``"mask_scoring_gain"`` (``segm`` minus ``segm_cls``) and ``"oracle_headroom"``
        (``segm_oracle`` minus ``segm``): the AP difference with its 95% paired bootstrap interval
        (:func:`msrcnn.evaluation.bootstrap.paired_differences`) or None; ``"num_images"``,
        ``"num_detections"``; and ``"segm_per_class"`` when asked. For a plain Mask R-CNN (no
        mask_ious), ``segm`` is ``segm_cls`` and ``segm_oracle`` / ``maskiou_pearson`` / the
        differences are None.
    """
    unknown_types = set(iou_types) - {"bbox", "segm"}
    if unknown_types:
        raise ValueError(f"unknown iou_types {sorted(unknown_types)}; valid choices: 'bbox', 'segm'")
    coco_gt = load_coco_gt(coco_gt, verbose=verbose)
    img_ids = validate_records(coco_gt, records)
    out: dict[str, Any] = {
        "bbox": None,
        "segm": None,
        "segm_cls": None,
        "segm_oracle": None,
        "maskiou_pearson": None,
        "class_score_pearson": None,
        "maskiou_pearson_matched": None,
        "class_score_pearson_matched": None,
        **{key: None for key in DIFFERENCES},
        "num_images": len(img_ids),
        "num_detections": int(sum(len(r) for r in records)),
    }
    if "bbox" in iou_types:
        bbox_dt = _bbox_dt(coco_gt, records)
        out["bbox"] = coco_summary(run_coco_eval(coco_gt, bbox_dt, "bbox", img_ids, verbose), ndigits)
    if "segm" not in iou_types:
        return out

    scoring = _has_mask_ious(records)
    segm_dt = _segm_dt(coco_gt, records)
    rankings = {"segm_cls": _concat(r.scores for r in records)}
    if scoring:
        gt_ious = gt_mask_ious(coco_gt, records)
        rankings["segm"] = _concat(r.mask_scores for r in records)
        rankings["segm_oracle"] = _concat(oracle_scores(records, gt_ious))
        out.update(score_correlations(records, gt_ious))
    evaluators = {}
    for key, scores in rankings.items():
        _set_scores(segm_dt, scores)
        evaluators[key] = run_coco_eval(coco_gt, segm_dt, "segm", img_ids, verbose)
        out[key] = coco_summary(evaluators[key], ndigits)
    if scoring and resamples:
        out.update(_differences(evaluators, resamples, seed, ndigits))
    if not scoring:
        evaluators["segm"] = evaluators["segm_cls"]
        out["segm"] = dict(out["segm_cls"])
    if per_class:
        out["segm_per_class"] = per_class_ap(evaluators["segm"], ndigits)
    return out
