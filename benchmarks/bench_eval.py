"""COCO evaluation (bbox + segm): ``msrcnn.evaluation`` vs torchmetrics (both backends) and pycocotools.

Every contender starts from the model's outputs for the same detections (boxes, labels, scores,
MaskIoUs, and 28x28 mask probabilities per detection, as the mask head gives them) and ends with
the APs, so binarising and RLE-encoding the masks is timed for everyone:

* msrcnn, as the training and evaluation apps run it: the model returns box-local ``roi_masks``
  (``mask_output="roi"``), ``make_record`` RLE-encodes the pasted masks from them
  (``encode_roi_masks``), then ``evaluate_records``;
* msrcnn from torchvision's pasted ``masks`` ``[K, 1, H, W]`` (``make_record`` on a default model's
  output), for reference;
* torchmetrics ``MeanAveragePrecision`` (``update`` with the binarised pasted masks, ``compute``)
  and pycocotools (``mask.encode`` + ``COCOeval``), which need the pasted masks.

Pasting (torchvision's ``paste_masks_in_image``) happens inside the model's forward, so it is not
timed for anyone; its time is reported beside (``paste_s``): it is what a model spends on the
baselines' input that the roi output skips. The synthetic ground truth is a COCO json with RLE
masks in a temporary folder, read from disk by each contender.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as fmask
from torchvision.models.detection.roi_heads import paste_masks_in_image

from msrcnn.evaluation import DetectionRecord, evaluate_records, make_record

NUM_CATEGORIES = 80


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


RELEASE_EVERY = 25  # images between two release_memory calls


def release_memory(index: int | None = None) -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``) every ``RELEASE_EVERY`` images, untimed.

    Without it the per-image mask tensors (tens of MB, allocated and freed around small objects
    that stay alive, such as the RLE strings) fragment glibc's heap and the process grows by
    6-40 MB per image (measured: torchmetrics' update ~36 MB, ``make_record`` ~6 MB at 480x640),
    which at 500 images exhausts a 23 GB machine. Not after every image: the memory given back
    is page-faulted in again by the next image's tensors (a few ms per image), which would time
    the allocator rather than the contenders.
    """
    if index is not None and (index + 1) % RELEASE_EVERY:
        return
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _shape_polygon(box: np.ndarray, ellipse: bool) -> list[float]:
    x0, y0, x1, y1 = box.tolist()
    if not ellipse:
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).ravel().tolist()


def _rle(box: np.ndarray, ellipse: bool, h: int, w: int) -> dict:
    rle = fmask.frPyObjects([_shape_polygon(box, ellipse)], h, w)[0]
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle


def _random_boxes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    wh = np.maximum(rng.uniform(0.05, 0.5, (n, 2)) * [w, h], 4.0)
    xy = rng.uniform(0, 1, (n, 2)) * ([w, h] - wh)
    return np.concatenate([xy, xy + wh], 1)


def _roi_masks(ellipse: np.ndarray, rng: np.random.Generator, resolution: int = 28) -> np.ndarray:
    """Mask-head-like probabilities ``[K, M, M]``: an ellipse or a rectangle filling the box, soft edges."""
    grid = (np.arange(resolution) + 0.5) / resolution * 2 - 1
    radius = np.where(
        ellipse[:, None, None],
        grid[None, None, :] ** 2 + grid[None, :, None] ** 2,
        np.maximum(np.abs(grid)[None, None, :], np.abs(grid)[None, :, None]) ** 2,
    )
    edge = rng.uniform(0.8, 1.0, (len(ellipse), 1, 1))
    return (1 / (1 + np.exp((radius - edge) * 12))).astype(np.float32)


def make_dataset(folder: Path, num_images: int, size: tuple[int, int], detections: int, seed: int = 0):
    """Ground truth (``folder/gt.json``) and per-image detections with 28x28 mask probabilities.

    Each image has 3-12 objects (rectangles or ellipses, 80 categories); its ``detections``
    detections are jittered copies of the objects (mostly the right class and shape) plus random
    boxes.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    images, annotations, dets = [], [], []
    ann_id = 1
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:06d}.png"})
        n_gt = int(rng.integers(3, 13))
        gt_boxes = _random_boxes(rng, n_gt, h, w)
        gt_cats = rng.integers(1, NUM_CATEGORIES + 1, n_gt)
        gt_ellipse = rng.random(n_gt) < 0.5
        for box, cat, ell in zip(gt_boxes, gt_cats, gt_ellipse):
            rle = _rle(box, bool(ell), h, w)
            x, y, bw, bh = fmask.toBbox(rle).tolist()
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": int(cat),
                    "segmentation": rle,
                    "area": float(fmask.area(rle)),
                    "bbox": [x, y, bw, bh],
                    "iscrowd": 0,
                }
            )
            ann_id += 1
        # detections: ~60% near an object, the rest anywhere
        near = int(detections * 0.6)
        src = rng.integers(0, n_gt, near)
        size_wh = gt_boxes[src, 2:] - gt_boxes[src, :2]
        jitter = rng.normal(0, 0.08, (near, 4)) * np.concatenate([size_wh, size_wh], 1)
        boxes = np.concatenate([gt_boxes[src] + jitter, _random_boxes(rng, detections - near, h, w)])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        cats = np.concatenate(
            [
                np.where(rng.random(near) < 0.8, gt_cats[src], rng.integers(1, NUM_CATEGORIES + 1, near)),
                rng.integers(1, NUM_CATEGORIES + 1, detections - near),
            ]
        )
        ellipse = np.concatenate([gt_ellipse[src], rng.random(detections - near) < 0.5])
        scores = rng.random(detections).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        dets.append(
            {
                "image_id": image_id,
                "boxes": boxes[order].astype(np.float32),
                "labels": cats[order].astype(np.int64),  # category ids 1..80 = the model's labels
                "scores": scores[order],
                "mask_ious": rng.random(detections).astype(np.float32),
                "roi_masks": _roi_masks(ellipse[order], rng),
            }
        )
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)],
    }
    ann_file = folder / "gt.json"
    ann_file.write_text(json.dumps(gt))
    return ann_file, gt, dets


def _decode(rles: list[dict]) -> torch.Tensor:
    """RLEs -> bool tensor ``[K, H, W]`` (not timed: it stands in for the model's output)."""
    if not rles:
        return torch.zeros((0, 0, 0), dtype=torch.bool)
    return torch.from_numpy(np.ascontiguousarray(fmask.decode(rles).transpose(2, 0, 1))).bool()


def _roi_output(det: dict, image_size: tuple[int, int]) -> dict[str, Any]:
    """A model output with ``mask_output="roi"``: box-local ``roi_masks`` ``[K, 1, 28, 28]``."""
    return {
        "boxes": torch.from_numpy(det["boxes"]),
        "labels": torch.from_numpy(det["labels"]),
        "scores": torch.from_numpy(det["scores"]),
        "mask_ious": torch.from_numpy(det["mask_ious"]),
        "roi_masks": torch.from_numpy(det["roi_masks"])[:, None],
        "image_size": image_size,
    }


def _model_output(det: dict, image_size: tuple[int, int]) -> tuple[dict[str, torch.Tensor], float]:
    """torchvision's output format (masks pasted into the image: ``[K, 1, H, W]`` probabilities) and
    the seconds the paste took (not counted for anyone)."""
    output = _roi_output(det, image_size)
    start = time.perf_counter()
    output["masks"] = paste_masks_in_image(output.pop("roi_masks"), output["boxes"], image_size)
    paste_s = time.perf_counter() - start
    del output["image_size"]
    return output, paste_s


def _gt_target(gt_by_image: dict[int, list[dict]], image_id: int) -> dict[str, torch.Tensor]:
    anns = gt_by_image.get(image_id, [])
    boxes = torch.tensor(
        [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in anns
        ],
        dtype=torch.float32,
    ).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
        "masks": _decode([a["segmentation"] for a in anns]),
    }


def run_msrcnn(ann_file: Path, dets: list[dict], image_size: tuple[int, int]) -> dict[str, Any]:
    """make_record (RLEs from the roi masks) per image, then evaluate_records: all rankings, and one.

    Also: make_record from the pasted masks (the same RLEs, checked) and the paste's time.
    """
    table = list(range(NUM_CATEGORIES + 1))
    encode_s = encode_pasted_s = paste_s = 0.0
    records: list[DetectionRecord] = []
    for index, det in enumerate(dets):  # what the apps do: the model returns roi masks
        output = _roi_output(det, image_size)
        start = time.perf_counter()
        records.append(make_record(output, det["image_id"], table, max_dets=len(det["scores"])))
        encode_s += time.perf_counter() - start
        del output
        release_memory(index)
    same_rles = True
    for index, (det, ours) in enumerate(zip(dets, records)):  # from torchvision's pasted masks
        pasted, seconds = _model_output(det, image_size)
        paste_s += seconds
        start = time.perf_counter()
        record = make_record(pasted, det["image_id"], table, max_dets=len(det["scores"]))
        encode_pasted_s += time.perf_counter() - start
        same_rles &= record.rles == ours.rles
        del pasted, record
        release_memory(index)
    release_memory()
    start = time.perf_counter()
    full = evaluate_records(str(ann_file), records)
    full_s = time.perf_counter() - start
    single_records = [dataclasses.replace(r, mask_ious=None) for r in records]
    start = time.perf_counter()
    single = evaluate_records(str(ann_file), single_records)
    single_s = time.perf_counter() - start
    bootstrap = run_bootstrap(ann_file, records)
    return {
        "bootstrap": bootstrap,
        "encode_s": encode_s,
        "encode_from_pasted_masks_s": encode_pasted_s,
        "paste_s": paste_s,
        "same_rles_from_pasted_masks": bool(same_rles),
        "evaluate_all_rankings_s": full_s,
        "evaluate_one_ranking_s": single_s,
        "total_all_rankings_s": encode_s + full_s,
        "total_one_ranking_s": encode_s + single_s,
        "bbox_AP": full["bbox"]["AP"],
        "segm_cls_AP": full["segm_cls"]["AP"],
        "segm_AP": full["segm"]["AP"],
        "one_ranking_segm_AP": single["segm"]["AP"],
    }


def run_bootstrap(ann_file: Path, records: list[DetectionRecord], repeats: int = 3) -> dict[str, Any]:
    """The paired bootstrap of the AP differences (1,000 resamples) against the evaluation's own time.

    ``evaluate_records`` now includes the bootstrap, so the evaluation's own time is taken twice: the
    whole ``evaluate_records`` with ``resamples=0``, and COCOeval (evaluate + accumulate + summarize)
    of the three segm rankings alone. The bootstrap is ``collect_matches`` (reading COCO's per-image
    matches once per ranking) plus ``paired_differences``. Interleaved repeats, medians.
    """
    from msrcnn.evaluation import load_coco_gt, run_coco_eval
    from msrcnn.evaluation.bootstrap import RESAMPLES, collect_matches, paired_differences
    from msrcnn.evaluation.coco_eval import (
        DIFFERENCES,
        _concat,
        _segm_dt,
        _set_scores,
        gt_mask_ious,
        oracle_scores,
    )

    coco_gt = load_coco_gt(str(ann_file))
    img_ids = sorted(r.image_id for r in records)
    segm_dt = _segm_dt(coco_gt, records)
    rankings = {
        "segm_cls": _concat(r.scores for r in records),
        "segm": _concat(r.mask_scores for r in records),
        "segm_oracle": _concat(oracle_scores(records, gt_mask_ious(coco_gt, records))),
    }
    times: dict[str, list[float]] = {"evaluate_records": [], "cocoeval": [], "collect": [], "resample": []}
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_records(coco_gt, records, resamples=0)
        times["evaluate_records"].append(time.perf_counter() - start)
        start = time.perf_counter()
        evaluators = {}
        for key, scores in rankings.items():
            _set_scores(segm_dt, scores)
            evaluators[key] = run_coco_eval(coco_gt, segm_dt, "segm", img_ids)
        times["cocoeval"].append(time.perf_counter() - start)
        start = time.perf_counter()
        matches = {key: collect_matches(e) for key, e in evaluators.items()}
        times["collect"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = paired_differences(
            matches, DIFFERENCES, stats_ap={k: float(e.stats[0]) for k, e in evaluators.items()}
        )
        times["resample"].append(time.perf_counter() - start)
    median = {k: float(np.median(v)) for k, v in times.items()}
    bootstrap_s = median["collect"] + median["resample"]
    return {
        "resamples": RESAMPLES,
        "evaluate_records_without_bootstrap_s": median["evaluate_records"],
        "cocoeval_3_segm_rankings_s": median["cocoeval"],
        "collect_matches_s": median["collect"],
        "resampling_s": median["resample"],
        "bootstrap_s": bootstrap_s,
        "fraction_of_evaluate_records": bootstrap_s / median["evaluate_records"],
        "fraction_of_cocoeval_3_rankings": bootstrap_s / median["cocoeval"],
        "gain": out["mask_scoring_gain"],
        "raw_s": times,
    }


def run_torchmetrics(gt: dict, dets: list[dict], backend: str, image_size: tuple[int, int]) -> dict[str, Any]:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_type=("bbox", "segm"), backend=backend)
    gt_by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        gt_by_image.setdefault(a["image_id"], []).append(a)
    update_s = 0.0
    for index, det in enumerate(dets):
        output, _ = _model_output(det, image_size)
        target = _gt_target(gt_by_image, det["image_id"])
        start = time.perf_counter()
        pred = {
            "boxes": output["boxes"],
            "scores": output["scores"],
            "labels": output["labels"],
            "masks": output["masks"][:, 0] > 0.5,
        }
        metric.update([pred], [target])
        update_s += time.perf_counter() - start
        del output, pred, target
        release_memory(index)
    release_memory()
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = metric.compute()
    compute_s = time.perf_counter() - start
    return {
        "update_s": update_s,
        "compute_s": compute_s,
        "total_s": update_s + compute_s,
        "bbox_AP": round(float(result["bbox_map"]) * 100, 3),
        "segm_AP": round(float(result["segm_map"]) * 100, 3),
    }


def run_pycocotools(ann_file: Path, dets: list[dict], image_size: tuple[int, int]) -> dict[str, Any]:
    from pycocotools import mask as pmask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    encode_s = 0.0
    bbox_results, segm_results = [], []
    for index, det in enumerate(dets):
        output, _ = _model_output(det, image_size)
        start = time.perf_counter()
        masks = (output["masks"][:, 0] > 0.5).numpy()
        rles = pmask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        boxes = output["boxes"].numpy().astype(np.float64)
        boxes[:, 2:] -= boxes[:, :2]
        for box, label, score, rle in zip(
            boxes.tolist(), output["labels"].tolist(), output["scores"].tolist(), rles
        ):
            rle["counts"] = rle["counts"].decode("ascii")
            bbox_results.append(
                {"image_id": det["image_id"], "category_id": label, "bbox": box, "score": score}
            )
            segm_results.append(
                {"image_id": det["image_id"], "category_id": label, "segmentation": rle, "score": score}
            )
        encode_s += time.perf_counter() - start
        del output, masks
        release_memory(index)
    release_memory()
    start = time.perf_counter()
    aps = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_file))
        for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
            evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            aps[iou_type] = round(float(evaluator.stats[0]) * 100, 3)
    evaluate_s = time.perf_counter() - start
    return {
        "encode_s": encode_s,
        "evaluate_s": evaluate_s,
        "total_s": encode_s + evaluate_s,
        "bbox_AP": aps["bbox"],
        "segm_AP": aps["segm"],
    }


def bench_evaluation(folder: Path, num_images: int, size: tuple[int, int], detections: int) -> dict[str, Any]:
    start = time.perf_counter()
    ann_file, gt, dets = make_dataset(folder, num_images, size, detections)
    generate_s = time.perf_counter() - start
    ours = run_msrcnn(ann_file, dets, size)
    tm_pycoco = run_torchmetrics(gt, dets, "pycocotools", size)
    tm_faster = run_torchmetrics(gt, dets, "faster_coco_eval", size)
    pycoco = run_pycocotools(ann_file, dets, size)
    ours_full, ours_one = ours["total_all_rankings_s"], ours["total_one_ranking_s"]
    return {
        "images": num_images,
        "image_size": list(size),
        "detections_per_image": detections,
        "gt_instances": len(gt["annotations"]),
        "generate_s": generate_s,
        "msrcnn": ours,
        "torchmetrics_pycocotools": tm_pycoco,
        "torchmetrics_faster_coco_eval": tm_faster,
        "pycocotools": pycoco,
        "speedup_vs_torchmetrics_pycocotools": tm_pycoco["total_s"] / ours_full,
        "speedup_vs_torchmetrics_faster_coco_eval": tm_faster["total_s"] / ours_full,
        "speedup_vs_pycocotools": pycoco["total_s"] / ours_full,
        "one_ranking_speedup_vs_torchmetrics_pycocotools": tm_pycoco["total_s"] / ours_one,
        "one_ranking_speedup_vs_torchmetrics_faster_coco_eval": tm_faster["total_s"] / ours_one,
        "one_ranking_speedup_vs_pycocotools": pycoco["total_s"] / ours_one,
        "ap_agree": ours["bbox_AP"] == pycoco["bbox_AP"] and ours["segm_cls_AP"] == pycoco["segm_AP"],
    }
