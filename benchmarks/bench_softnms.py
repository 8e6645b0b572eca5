"""Soft-NMS: ``msrcnn.ops.batched_soft_nms`` (vectorised, the same code on CPU and GPU) vs per-box
Python loops and torchvision's hard NMS."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from common import compare, paired_ratio
from torchvision.ops import batched_nms

from msrcnn.ops import batched_soft_nms
from msrcnn.ops.soft_nms import IOU_THRESHOLD, SCORE_THRESHOLD


def plain_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    score_threshold: float = SCORE_THRESHOLD,
) -> tuple[list[int], list[float]]:
    """Linear Soft-NMS as a plain per-box Python loop: Detectron's ``cpu_soft_nms`` (Cython) written
    in Python, one class at a time, the IoU of the selected box with each remaining box in turn."""
    boxes_l, scores_l = boxes.tolist(), scores.tolist()
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels.tolist()):
        by_class.setdefault(c, []).append(i)
    kept: list[tuple[int, float]] = []
    for members in by_class.values():
        b = [boxes_l[i] for i in members]
        s = [scores_l[i] for i in members]
        ids = list(members)
        n, i = len(b), 0
        while i < n:
            top = max(range(i, n), key=s.__getitem__)
            b[i], b[top], s[i], s[top], ids[i], ids[top] = b[top], b[i], s[top], s[i], ids[top], ids[i]
            if s[i] < score_threshold:
                break
            tx1, ty1, tx2, ty2 = b[i]
            area = (tx2 - tx1) * (ty2 - ty1)
            pos = i + 1
            while pos < n:
                x1, y1, x2, y2 = b[pos]
                iw = min(tx2, x2) - max(tx1, x1)
                ih = min(ty2, y2) - max(ty1, y1)
                if iw > 0 and ih > 0:
                    inter = iw * ih
                    overlap = inter / ((x2 - x1) * (y2 - y1) + area - inter)
                    if overlap > iou_threshold:
                        s[pos] *= 1.0 - overlap
                if s[pos] < score_threshold:  # drop: swap with the last remaining box
                    n -= 1
                    b[pos], b[n], s[pos], s[n], ids[pos], ids[n] = (
                        b[n],
                        b[pos],
                        s[n],
                        s[pos],
                        ids[n],
                        ids[pos],
                    )
                    continue
                pos += 1
            kept.append((ids[i], s[i]))
            i += 1
    kept.sort(key=lambda t: -t[1])
    return [k for k, _ in kept], [v for _, v in kept]


def python_soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
    score_threshold: float = SCORE_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear Soft-NMS per class, one selected box at a time, with numpy over the remaining boxes
    (the usual Python port): take the highest remaining box, rescale every other remaining box by
    its IoU with it, drop those under ``score_threshold``; repeat."""
    keep, new_scores = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        b = boxes[members].astype(np.float64)
        s = scores[members].astype(np.float64)
        alive = s >= score_threshold
        b, s, members = b[alive], s[alive], members[alive]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        while s.size:
            m = int(np.argmax(s))
            keep.append(members[m])
            new_scores.append(s[m])
            rest = np.arange(s.size) != m
            b, s, members, area_rest = b[rest], s[rest], members[rest], area[rest]
            if not s.size:
                break
            bm = boxes[keep[-1]].astype(np.float64)
            w = np.clip(np.minimum(b[:, 2], bm[2]) - np.maximum(b[:, 0], bm[0]), 0, None)
            h = np.clip(np.minimum(b[:, 3], bm[3]) - np.maximum(b[:, 1], bm[1]), 0, None)
            inter = w * h
            iou = inter / (area_rest + (bm[2] - bm[0]) * (bm[3] - bm[1]) - inter)
            s = s * np.where(iou > iou_threshold, 1.0 - iou, 1.0)
            alive = s >= score_threshold
            b, s, members, area = b[alive], s[alive], members[alive], area_rest[alive]
    keep_arr = np.asarray(keep, dtype=np.int64)
    scores_arr = np.asarray(new_scores)
    order = np.argsort(-scores_arr, kind="stable")
    return keep_arr[order], scores_arr[order]


def detections(num: int, num_classes: int = 80, seed: int = 5, size: tuple[int, int] = (800, 1333)):
    """R-CNN-like candidates: boxes clustered around ~num/40 objects, mostly of the object's class,
    some of other classes; scores in [0.05, 1) (torchvision's default score threshold)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    objects = max(num // 40, 1)
    centre = torch.rand(objects, 2, generator=g) * torch.tensor([w, h])
    extent = 24 + torch.rand(objects, 2, generator=g) * 200
    obj_class = torch.randint(0, num_classes, (objects,), generator=g)
    pick = torch.randint(0, objects, (num,), generator=g)
    jitter = 1 + 0.25 * torch.randn(num, 2, generator=g)
    wh = (extent[pick] * jitter).clamp(min=4)
    xy = centre[pick] + torch.randn(num, 2, generator=g) * 0.15 * extent[pick]
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    other = torch.rand(num, generator=g) < 0.3
    labels = torch.where(other, torch.randint(0, num_classes, (num,), generator=g), obj_class[pick])
    scores = 0.05 + 0.95 * torch.rand(num, generator=g)
    return boxes, scores, labels


def bench_soft_nms(num: int, repeats: int, warmup: int) -> dict[str, Any]:
    boxes, scores, labels = detections(num)
    b_np, s_np, l_np = boxes.numpy(), scores.numpy(), labels.numpy()
    keep, new = batched_soft_nms(boxes, scores, labels)
    keep_np, new_np = python_soft_nms(b_np, s_np, l_np)
    keep_plain, _ = plain_soft_nms(boxes, scores, labels)
    same_keep = set(keep.tolist()) == set(keep_np.tolist()) == set(keep_plain)
    max_score_diff = (
        float(np.abs(np.sort(new.double().numpy()) - np.sort(new_np)).max()) if same_keep else None
    )
    timings = compare(
        {
            "batched_soft_nms": lambda: batched_soft_nms(boxes, scores, labels),
            "plain python loop": lambda: plain_soft_nms(boxes, scores, labels),
            "numpy loop": lambda: python_soft_nms(b_np, s_np, l_np),
            "torchvision batched_nms (hard)": lambda: batched_nms(boxes, scores, labels, 0.5),
        },
        repeats,
        warmup,
    )
    per_class = torch.bincount(labels)
    return {
        "boxes": num,
        "classes": int((per_class > 0).sum()),
        "max_boxes_per_class": int(per_class.max()),
        "kept": int(keep.numel()),
        "same_as_loops": same_keep,
        "max_score_diff_vs_loop": max_score_diff,
        "soft_nms_s": timings["batched_soft_nms"]["median_s"],
        "plain_loop_s": timings["plain python loop"]["median_s"],
        "numpy_loop_s": timings["numpy loop"]["median_s"],
        "hard_nms_s": timings["torchvision batched_nms (hard)"]["median_s"],
        "speedup_vs_plain_loop": paired_ratio(timings["plain python loop"], timings["batched_soft_nms"]),
        "speedup_vs_numpy_loop": paired_ratio(timings["numpy loop"], timings["batched_soft_nms"]),
        "vs_hard_nms": paired_ratio(timings["batched_soft_nms"], timings["torchvision batched_nms (hard)"]),
        "timings": timings,
    }
