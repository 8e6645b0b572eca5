"""Soft-NMS (Bodla et al., 2017) with Detectron semantics, vectorised across classes.

torchvision ships hard NMS only. The paper's test setting (SPEC section 5) uses Soft-NMS:
per class, repeatedly take the highest-scoring remaining box ``M`` and rescale every other
remaining box ``b``

* linear:   ``s_b *= 1 - IoU(M, b)`` when ``IoU(M, b) > iou_threshold`` (else unchanged),
* gaussian: ``s_b *= exp(-IoU(M, b) ** 2 / sigma)`` for every ``b``,

and drop the boxes whose score falls below ``score_threshold``.

Implementation: the boxes are grouped by class into a padded ``[C, Nmax]`` layout (classes
sorted by size and processed in chunks of classes of similar size, so that the per-class IoU
matrices ``[C, Nmax, Nmax]`` stay within a memory budget and waste little on padding). Each iteration selects the arg-max of every class at once and
rescales all classes with one tensor operation, so the number of Python iterations is the
largest number of boxes any class keeps, not the number of boxes. The only host sync inside
the loop is the early-stop check.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SOFT_NMS_METHODS", "batched_soft_nms", "soft_nms"]

SOFT_NMS_METHODS = ("linear", "gaussian")

# Upper bound on the number of IoU entries materialised at once (C_chunk * Nmax * Nmax).
_IOU_BUDGET = 1 << 22  # 4M entries = 16 MiB per float32 temporary


def _check_method(method: str) -> None:
    """Raise ``ValueError`` when ``method`` is not a supported Soft-NMS rescaling."""
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"Unknown Soft-NMS method {method!r}; valid choices: {', '.join(SOFT_NMS_METHODS)}")


def _batched_box_iou(boxes: Tensor) -> Tensor:
    """Pairwise IoU inside each group, the same arithmetic as ``torchvision.ops.box_iou``.

    Args:
        boxes: ``[G, N, 4]`` boxes in ``(x1, y1, x2, y2)``.

    Returns:
        ``[G, N, N]`` IoU matrices.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = torch.minimum(x2[:, :, None], x2[:, None, :]).sub_(torch.maximum(x1[:, :, None], x1[:, None, :]))
    h = torch.minimum(y2[:, :, None], y2[:, None, :]).sub_(torch.maximum(y1[:, :, None], y1[:, None, :]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    union = (area[:, :, None] + area[:, None, :]).sub_(inter)
    return inter.div_(union)


def _rescale_factors(iou: Tensor, iou_threshold: float, sigma: float, method: str) -> Tensor:
    """Score multiplier of box ``b`` when ``M`` is selected, for every pair ``(M, b)``."""
    if method == "linear":
        return torch.where(iou > iou_threshold, 1.0 - iou, torch.ones((), dtype=iou.dtype, device=iou.device))
    return iou.square_().neg_().div_(sigma).exp_()


def _soft_nms_padded(
    factors: Tensor,
    scores: Tensor,
    valid: Tensor,
    score_threshold: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run Soft-NMS on every row (class) of a padded block simultaneously.

    Args:
        factors: ``[G, N, N]``; ``factors[g, m, b]`` multiplies the score of box ``b`` when
            box ``m`` of group ``g`` is selected (see :func:`_rescale_factors`).
        scores: ``[G, N]`` scores (float32 or float64); padding entries are ignored.
        valid: ``[G, N]`` bool, False for padding.
        score_threshold: boxes whose score falls below it are dropped.

    Returns:
        ``best`` ``[T, G]`` (slot selected in every group at each of the ``T`` iterations),
        ``has`` ``[T, G]`` (whether that group selected anything) and ``value`` ``[T, G]``
        (the selected box's final score).
    """
    groups, n = scores.shape
    rows = torch.arange(groups, device=scores.device)
    neg_inf = torch.full((), -math.inf, dtype=scores.dtype, device=scores.device)
    # Remaining boxes hold their current score; selected, dropped and padding entries hold -inf.
    s = torch.where(valid & (scores >= score_threshold), scores, neg_inf)
    bests, hases, values = [], [], []
    for _ in range(n):
        value, best = s.max(dim=1)
        has = value > neg_inf
        if not bool(has.any()):  # the one host sync per iteration: early stop
            break
        bests.append(best)
        hases.append(has)
        values.append(value)
        s[rows, best] = neg_inf  # rows without a box are all -inf already
        rescaled = s * factors[rows, best]  # -inf * 0 gives NaN; the comparison drops it
        s = torch.where(rescaled >= score_threshold, rescaled, neg_inf)
    if not bests:
        empty = torch.empty((0, groups), dtype=torch.int64, device=scores.device)
        return empty, empty.bool(), scores.new_empty((0, groups))
    return torch.stack(bests), torch.stack(hases), torch.stack(values)


def _class_chunks(counts: list[int], budget: int, size_ratio: int = 3) -> list[tuple[int, int]]:
    """Split classes (sorted by decreasing box count) into ``[start, stop)`` chunks.

    A chunk's IoU block has ``(stop - start) * counts[start] ** 2`` entries. A chunk grows while
    that stays within ``budget`` and its classes hold more than ``1 / size_ratio`` of the boxes of
    its largest class, so that little of the padded block is wasted on small classes (with one
    chunk for all classes, 1,000 clustered boxes over 80 classes computed 10x the IoU entries
    they need). A single class always forms a chunk, however large.
    """
    chunks = []
    start = 0
    while start < len(counts):
        largest = max(counts[start], 1)
        size = max(1, budget // largest**2)
        stop = start + 1
        while stop < min(len(counts), start + size) and counts[stop] * size_ratio > largest:
            stop += 1
        chunks.append((start, stop))
        start = stop
    return chunks


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: str = "linear",
) -> tuple[Tensor, Tensor]:
    """Per-class Soft-NMS: boxes with different ``idxs`` never affect each other.

    Args:
        boxes: ``[N, 4]`` boxes in ``(x1, y1, x2, y2)`` format.
        scores: ``[N]`` scores (any float dtype; computed in at least float32).
        idxs: ``[N]`` integer class (or group) index of every box.
        iou_threshold: linear method only: boxes with IoU above it are rescaled by ``1 - IoU``.
        sigma: gaussian method only: rescale by ``exp(-IoU^2 / sigma)``.
        score_threshold: boxes whose (initial or rescaled) score is below it are dropped.
        method: ``"linear"`` or ``"gaussian"``.

    Returns:
        ``keep`` (int64 indices into the input) ordered by decreasing new score over all
        classes, and ``new_scores`` aligned with ``keep`` (in the dtype of ``scores``).
    """
    _check_method(method)
    device = boxes.device
    if boxes.numel() == 0 or scores.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=device), scores.new_empty(0)
    box_dtype = torch.promote_types(boxes.dtype, torch.float32)
    score_dtype = torch.promote_types(scores.dtype, torch.float32)
    boxes_f = boxes.to(box_dtype)
    scores_f = scores.to(score_dtype)

    # Group by class: order boxes by (class size desc, class, position) -> padded [C, Nmax].
    _, inverse, counts = torch.unique(idxs, return_inverse=True, return_counts=True)
    class_order = torch.argsort(counts, descending=True, stable=True)
    class_rank = torch.empty_like(class_order)
    class_rank[class_order] = torch.arange(class_order.numel(), device=device)
    box_rank = class_rank[inverse]
    order = torch.argsort(box_rank, stable=True)
    sorted_counts = counts[class_order]
    starts = torch.cumsum(sorted_counts, 0) - sorted_counts
    rank_sorted = box_rank[order]
    slot = torch.arange(order.numel(), device=device) - starts[rank_sorted]
    counts_host = sorted_counts.tolist()  # one sync to size the padded blocks

    keep_parts, score_parts = [], []
    for start, stop in _class_chunks(counts_host, _IOU_BUDGET):
        nmax = counts_host[start]
        in_chunk = (rank_sorted >= start) & (rank_sorted < stop)
        members = order[in_chunk]
        rows = rank_sorted[in_chunk] - start
        cols = slot[in_chunk]
        groups = stop - start
        index = torch.full((groups, nmax), -1, dtype=torch.int64, device=device)
        index[rows, cols] = members
        valid = index >= 0
        safe = index.clamp(min=0)
        block_boxes = boxes_f[safe]
        block_scores = scores_f[safe]
        factors = _rescale_factors(_batched_box_iou(block_boxes), iou_threshold, sigma, method)
        best, has, value = _soft_nms_padded(factors, block_scores, valid, score_threshold)
        group = torch.arange(groups, device=device).expand_as(best)
        keep_parts.append(index[group[has], best[has]])
        score_parts.append(value[has])

    keep = torch.cat(keep_parts)
    new_scores = torch.cat(score_parts)
    ranking = torch.argsort(new_scores, descending=True, stable=True)
    return keep[ranking], new_scores[ranking].to(scores.dtype)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    score_threshold: float = 1e-3,
    method: str = "linear",
) -> tuple[Tensor, Tensor]:
    """Single-class Soft-NMS (Detectron semantics); see :func:`batched_soft_nms`.

    Returns:
        ``keep`` (int64 indices into the input, ordered by decreasing new score) and the
        aligned ``new_scores``.
    """
    idxs = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    return batched_soft_nms(
        boxes,
        scores,
        idxs,
        iou_threshold=iou_threshold,
        sigma=sigma,
        score_threshold=score_threshold,
        method=method,
    )
