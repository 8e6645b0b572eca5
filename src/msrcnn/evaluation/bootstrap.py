"""Paired bootstrap over images: how sure is a difference in mask AP between two rankings?

The evaluation ranks the same detections three ways (``segm``: mask score, ``segm_cls``: class score,
``segm_oracle``: GT MaskIoU). Whether ``AP(segm) - AP(segm_cls)`` (the mask scoring gain) is real or
the luck of the evaluated images is what this module answers: it resamples the images with
replacement ``resamples`` times, the same resampled images for both rankings of a pair (paired), and
gives the 2.5th and 97.5th percentiles of the resampled differences (a 95% percentile interval).

Fast: COCOeval is never re-run. Its per-image matching (``evaluateImg``: for every image and
category, the detections' scores, which ground truth each matches at every IoU threshold, and the
ignore flags; area ``all``, the largest ``maxDets``) is read once per ranking
(:func:`collect_matches`). A resample is a vector of integer multiplicities ``w_i`` (how many
times image ``i`` was drawn); its AP is COCO's (101-point interpolated precision averaged over the
IoU thresholds 0.5:0.95 and the categories with ground truth, as ``COCOeval.accumulate`` and
``summarize`` compute AP at area ``all``) with every detection of image ``i`` counted ``w_i``
times and ``sum_i w_i * npig_i`` ground truths per category (:func:`resampled_ap`). It is computed
for a chunk of resamples at once in numpy, at the true positives only: the interpolated precision
at a recall threshold is the best precision at a true positive whose recall reaches it, so the
detections in between enter only through counts (sums over blocks of detections). The running
sums and maxima along each (threshold, category) segment run position by position over all
segments side by side (:class:`_Layout`: wide slices, not numpy's one-element-at-a-time
accumulate), on ``[position, resample]`` arrays (a gather copies whole rows), and the recall
thresholds reached are looked up, not searched (:func:`_reached_table`). With every ``w_i = 1``
it is COCOeval's AP (to about 1e-12, in float64; checked on every call); the 1,000 resamples of
:func:`paired_differences` run in float32 (counts exact, precisions rounded: the resampled APs
move by about 1e-8, the intervals' printed digits not at all).

Output (:func:`paired_differences`): per pair the full-set difference ``AP`` (AP points x100, as
every AP of the evaluation), the interval ``low`` / ``high``, a ``verdict`` (:data:`VERDICTS`)
and how it was made (``level``, ``num_images``, ``resamples``, ``seed``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "VERDICTS",
    "BootstrapError",
    "RankingMatches",
    "collect_matches",
    "multiplicities",
    "paired_differences",
    "resampled_ap",
    "verdict",
]

RESAMPLES = 1000
LEVEL = 0.95
VERDICTS = ("helps", "hurts", "no clear difference")
CHUNK_BYTES = 2**20  # a chunk's [true positives x resamples] arrays: in cache, and not paged in anew
SCAN_ROWS = 4096  # a segment's first positions scanned row by row, all segments side by side
STEP_COST = 300  # a scan's loop step costs about as much as this many positions' work per resample
_STATE_FIELDS = 6  # faster_coco_eval's ImageEvaluation state (checked in collect_matches)


class BootstrapError(RuntimeError):
    """The COCOeval object does not hold what the bootstrap reads (or its AP disagrees with COCOeval's)."""


@dataclass(frozen=True)
class RankingMatches:
    """One ranking's COCO matches, reduced to what a resampled AP needs.

    ``P`` true-positive points over all (IoU threshold, category) segments, each segment in the
    ranking's order (descending score, COCO's stable tie order).

    Attributes:
        num_images: ``I``, the evaluated images (``params.imgIds`` order).
        num_thresholds: ``T``; ``num_categories``: ``K``; ``rec_thrs``: COCO's recall thresholds.
        npig: ``float64 [I, K]`` non-ignored ground truths per image and category.
        tp_img, tp_det: ``int64 [P]`` each true positive's image and index in ``det_img``.
        tp_starts: ``int64 [n]`` where each non-empty segment starts in the P axis; ``tp_seg_cat``
            ``int64 [n]`` its category.
        det_img: ``int64 [N]`` the image of every detection that counts for a precision (each
            category's, in its order, up to its last true positive); ``det_starts`` where each
            category starts in it.
        ign_row, ign_img: ``int64`` or None: ignored detections (matched to a crowd region at that
            threshold), each listed at the first true positive after it in its segment (sorted by
            it), with its image; None when there are none.
        ap: the AP with every multiplicity 1 (a fraction, as COCOeval's ``stats[0]``).
    """

    num_images: int
    num_thresholds: int
    num_categories: int
    rec_thrs: np.ndarray
    npig: np.ndarray
    tp_img: np.ndarray
    tp_det: np.ndarray
    tp_starts: np.ndarray
    tp_seg_cat: np.ndarray
    det_img: np.ndarray
    det_starts: np.ndarray
    ign_row: np.ndarray | None
    ign_img: np.ndarray | None
    ap: float | None = None


def _states(evaluator: Any) -> tuple[Any, list]:
    """The evaluation parameters and per-(category, area, image) match states of an evaluated COCOeval."""
    params = getattr(evaluator, "_paramsEval", None)
    states = getattr(evaluator, "_evalImgs_cpp", None)
    if params is None or states is None:
        raise BootstrapError(
            "the COCOeval object holds no per-image matches: build COCOeval_faster with separate_eval=True "
            "and call evaluate()"
        )
    return params, states


def collect_matches(evaluator: Any) -> RankingMatches:
    """Read a ranking's per-image COCO matches once (``COCOeval_faster(..., separate_eval=True)``,
    after ``evaluate()``) and reduce them to :class:`RankingMatches`.

    Raises:
        BootstrapError: no per-image matches, or a state layout this code does not know.
    """
    p, states = _states(evaluator)
    if not p.useCats:
        raise BootstrapError("the bootstrap needs a per-category evaluation (params.useCats=1)")
    labels = list(getattr(p, "areaRngLbl", ["all"]))
    area = labels.index("all") if "all" in labels else 0
    num_t, num_k, num_a, num_i = len(p.iouThrs), len(p.catIds), len(p.areaRng), len(p.imgIds)
    max_det = int(p.maxDets[-1])
    if len(states) != num_k * num_a * num_i:
        raise BootstrapError(f"{len(states)} per-image states for {num_k} x {num_a} x {num_i} evaluations")
    # one pass over the (category, image) states of area "all": their lists, concatenated
    dt_matches: list[int] = []
    dt_scores: list[float] = []
    dt_ignores: list[bool] = []
    gt_ignores: list[bool] = []
    num_dt = np.zeros(num_k * num_i, np.int64)
    num_gt = np.zeros(num_k * num_i, np.int64)
    index = 0
    for k in range(num_k):
        base = k * num_a * num_i + area * num_i
        for state in states[base : base + num_i]:
            fields = state.__getstate__()
            if len(fields) != _STATE_FIELDS:
                raise BootstrapError(f"unknown per-image state layout ({len(fields)} fields)")
            if fields[2]:
                num_dt[index] = len(fields[2])
                dt_scores.extend(fields[2])
                dt_matches.extend(fields[0])
                dt_ignores.extend(fields[4])
            if fields[3]:
                num_gt[index] = len(fields[3])
                gt_ignores.extend(fields[3])
            index += 1
    if len(dt_matches) != num_t * num_dt.sum() or len(dt_ignores) != len(dt_matches):
        raise BootstrapError("unknown per-image state layout (matches are not thresholds x detections)")
    gt_ignored = np.asarray(gt_ignores, bool)
    gt_state = np.repeat(np.arange(num_k * num_i), num_gt)
    npig = np.bincount(gt_state[~gt_ignored], minlength=num_k * num_i).reshape(num_k, num_i).T
    # every detection: its state (category-major, image), its rank d in the image, the image's count D
    state = np.repeat(np.arange(num_k * num_i), num_dt)
    first = np.cumsum(num_dt) - num_dt
    rank = np.arange(state.size) - first[state]
    keep = rank < max_det
    flat = (num_t * first)[state] + rank  # where threshold 0's entry is; threshold t's is D * t further
    at = flat[None, :] + np.outer(np.arange(num_t), num_dt[state])
    matched = np.asarray(dt_matches, np.int64)[at] > 0 if at.size else np.zeros((num_t, 0), bool)
    ignored = np.asarray(dt_ignores, bool)[at] if at.size else np.zeros((num_t, 0), bool)
    cat, img = np.divmod(state, num_i)
    scores = np.asarray(dt_scores, np.float64)
    # COCO's order per category: images in order, each image's detections in order, then a stable
    # sort by descending score
    order = np.flatnonzero(keep)
    order = order[np.lexsort((order, -scores[order], cat[order]))]
    cat, img = cat[order], img[order]
    ignored = ignored[:, order]
    tp = matched[:, order] & ~ignored
    # the detections that count for a precision: each category's, up to its last true positive
    last_tp = np.full(num_k, -1, np.int64)
    any_tp = np.flatnonzero(tp.any(axis=0))
    np.maximum.at(last_tp, cat[any_tp], any_tp)
    counted = np.flatnonzero(np.arange(cat.size) <= last_tp[cat])
    det_index = np.cumsum(np.isin(np.arange(cat.size), counted)) - 1  # position -> index in the list
    det_cats = cat[counted]
    det_starts = (
        np.flatnonzero(np.concatenate([[True], det_cats[1:] != det_cats[:-1]])) if counted.size else counted
    )
    # true positives, segment (threshold, category) by segment, t-major as COCO's precision [T, R, K]
    t_idx, pos = np.nonzero(tp)  # t-major, then position (categories contiguous inside)
    seg = t_idx * num_k + cat[pos]
    num_p = seg.size
    starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]])) if num_p else seg
    ign_row = ign_img = None
    t_ign, pos_ign = np.nonzero(ignored)
    if t_ign.size:
        # an ignored detection counts against every later true positive of its (threshold, category):
        # listed at the first true positive after it (none: it counts for nothing)
        key_tp = seg * (cat.size + 1) + pos
        key_ign = (t_ign * num_k + cat[pos_ign]) * (cat.size + 1) + pos_ign
        row = np.searchsorted(key_tp, key_ign)
        row_seg = np.where(row < num_p, seg[np.minimum(row, max(num_p - 1, 0))], -1) if num_p else row
        same = row_seg == t_ign * num_k + cat[pos_ign]
        if same.any():
            by_row = np.argsort(row[same], kind="stable")
            ign_row, ign_img = row[same][by_row], img[pos_ign[same]][by_row]
    matches = RankingMatches(
        num_images=num_i,
        num_thresholds=num_t,
        num_categories=num_k,
        rec_thrs=np.asarray(p.recThrs, np.float64),
        npig=npig.astype(np.float64),
        tp_img=img[pos],
        tp_det=det_index[pos],
        tp_starts=starts,
        tp_seg_cat=seg[starts] % num_k,
        det_img=img[counted],
        det_starts=det_starts,
        ign_row=ign_row,
        ign_img=ign_img,
    )
    ap = resampled_ap(matches, np.ones((1, num_i), np.int64))[0]
    return dataclasses.replace(matches, ap=None if np.isnan(ap) else float(ap))


class _Layout:
    """Segments of a flat axis (``starts``, in order) stored position-major so that a scan along every
    segment at once is a loop over positions of wide, contiguous slices (numpy's own accumulate runs
    one element at a time, at a few ns each; a slice op runs at SIMD speed).

    The segments, longest first, form rows: row ``l`` holds position ``l`` of the ``n_l`` segments at
    least ``l + 1`` long (a prefix of them, as they are sorted). Positions past ``SCAN_ROWS`` (long
    segments of skewed data) follow, segment by segment, and are scanned per segment.
    """

    def __init__(self, starts: np.ndarray, size: int) -> None:
        rows = SCAN_ROWS
        lengths = np.diff(np.append(starts, size)).astype(np.int64)
        self.order = np.argsort(-lengths, kind="stable")  # sorted segment -> segment
        rank = np.empty_like(self.order)
        rank[self.order] = np.arange(self.order.size)
        sorted_len = lengths[self.order]
        head = int(min(sorted_len[0] if sorted_len.size else 0, rows))
        counts = np.searchsorted(-sorted_len, -np.arange(1, head + 1), side="right")  # n_l: segments > l long
        self.rows = [(int(o), int(n)) for o, n in zip(np.cumsum(counts) - counts, counts)]
        head_size = int(counts.sum())
        self.num_long = int(np.count_nonzero(sorted_len > head))
        tail_len = sorted_len[: self.num_long] - head
        self.tail = [
            (head_size + int(a), head_size + int(a + n))
            for a, n in zip(np.cumsum(tail_len) - tail_len, tail_len)
        ]
        self.tail_starts = np.array([a for a, _ in self.tail], np.int64)
        seg = np.repeat(np.arange(lengths.size), lengths)
        at = np.arange(size) - starts[seg] if size else np.zeros(0, np.int64)
        s = rank[seg]
        offsets = np.append(np.cumsum(counts) - counts, 0)
        tail_base = np.append(self.tail_starts, 0)
        self.position = np.where(  # each element's index in the layout
            at < head, offsets[np.minimum(at, head)] + s, tail_base[np.minimum(s, self.num_long)] + at - head
        )
        self.last = self.rows[-1][0] if self.rows else 0  # where the last row starts

    def cumsum(self, x: np.ndarray) -> None:
        """In place, ``x [layout, b]``: the running sum along each segment."""
        for (prev, _), (at, n) in zip(self.rows, self.rows[1:]):
            np.add(x[at : at + n], x[prev : prev + n], out=x[at : at + n])
        for s, (a, b) in enumerate(self.tail):
            x[a] += x[self.last + s]
            np.cumsum(x[a:b], axis=0, out=x[a:b])

    def suffix_max(self, x: np.ndarray) -> None:
        """In place, ``x [layout, b]``: the largest value from here to the segment's end."""
        for s, (a, b) in enumerate(self.tail):
            x[a:b] = np.maximum.accumulate(x[a:b][::-1], axis=0)[::-1]
            np.maximum(x[self.last + s], x[a], out=x[self.last + s])
        for (at, _), (nxt, n) in zip(self.rows[-2::-1], self.rows[:0:-1]):
            np.maximum(x[at : at + n], x[nxt : nxt + n], out=x[at : at + n])

    def increments(self, x: np.ndarray) -> np.ndarray:
        """``x [layout, b]``, each value less the previous one of its segment (itself at a segment's start)."""
        d = x.copy()
        for (prev, _), (at, n) in zip(self.rows, self.rows[1:]):
            np.subtract(d[at : at + n], x[prev : prev + n], out=d[at : at + n])
        if self.tail:
            lo = self.tail[0][0]
            d[lo + 1 :] -= x[lo:-1]
            d[self.tail_starts] = x[self.tail_starts] - x[self.last : self.last + self.num_long]
        return d

    def sums(self, x: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """``[segments (sorted), b]``: the sum over each segment of ``x [layout, b]``."""
        if not self.rows:
            return np.zeros((0, x.shape[1]), dtype)
        acc = x[: self.rows[0][1]].astype(dtype)
        for at, n in self.rows[1:]:
            acc[:n] += x[at : at + n]
        if self.tail:
            lo = self.tail[0][0]
            acc[: self.num_long] += np.add.reduceat(x[lo:], self.tail_starts - lo, axis=0)
        return acc


def _thresholds_reached(recall: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of COCO's recall thresholds (``0, 0.01, .., 1``, then ``inf`` appended) are <= each
    recall in [0, 1]: exactly ``searchsorted(thresholds, recall, side="right")`` (an estimate, then
    one comparison each side)."""
    count = np.multiply(recall, thresholds.size - 2).astype(np.int64)
    count -= thresholds[count] > recall  # now thresholds[count] <= recall
    count += thresholds[count + 1] <= recall  # the estimate is off by at most one
    count += 1
    return count


def _reached_table(rec_thrs: np.ndarray) -> np.ndarray | None:
    """COCO's recall thresholds reached, looked up by ``2 * floor(q) + (q > floor(q))`` where
    ``q = m * tp / gt`` (``m + 1`` thresholds), or None when the thresholds are not ``0, 1/m, .., 1``.

    A recall ``tp / gt`` of integers lies either exactly on ``j / m`` (``q`` is the integer ``j``) or
    at least ``1 / (m * gt)`` away from every threshold, so the count is exact; on ``j / m`` it is
    what COCO's float64 comparison gives (``0.7`` is below COCO's ``np.linspace`` value, for one).
    """
    m = rec_thrs.size - 1
    if m < 1 or not np.allclose(rec_thrs, np.linspace(0.0, 1.0, m + 1), rtol=0.0, atol=1e-12):
        return None
    j = np.arange(m + 1)
    table = np.zeros(2 * m + 1, np.float64)
    table[0::2] = np.searchsorted(rec_thrs, j / m, side="right")  # exactly on j / m, as COCO compares
    table[1::2] = np.searchsorted(rec_thrs, (j[:-1] + 0.5) / m, side="right")  # strictly between
    return table


def _table_reached(tp: np.ndarray, gt: np.ndarray, table: np.ndarray) -> np.ndarray:
    """COCO's recall thresholds reached at recall ``tp / gt`` (integer counts, ``gt >= 1``), by
    :func:`_reached_table`; in ``tp``'s dtype, exact in float32 while ``m * gt < 2**24``. Overwrites ``tp``."""
    q = np.multiply(tp, table.size // 2, out=tp)
    q /= gt  # rounded, but an integer exactly where m * tp / gt is one, and floor(q) exact
    floor = q.astype(np.intp)
    key = floor + floor
    key += q > floor
    return np.take(table.astype(tp.dtype), key)


@dataclass(frozen=True)
class _Plan:
    """What every chunk of resamples of a ranking shares (:func:`_plan`)."""

    tps: _Layout  # the true positives' (threshold, category) segments
    blocks: _Layout  # the counted detections in blocks, each up to a true positive's detection
    cats: _Layout  # the blocks' categories
    block_at: np.ndarray  # per block (in the categories' layout): where its sum is (blocks' order)
    tp_img: np.ndarray  # per true positive (in the layout): its image
    tp_det: np.ndarray  # where its detection's block is in the categories' layout
    tp_cat: np.ndarray  # its category
    seg_cat: np.ndarray  # [segments, K] one-hot category of each segment (the layout's order)
    det_img: np.ndarray  # per counted detection (in the blocks' layout): its image
    ign_at: np.ndarray | None  # ignored detections: the true positives they count against (unique)
    ign_first: np.ndarray | None
    ign_img: np.ndarray | None
    table: np.ndarray | None  # _reached_table


def _plan(m: RankingMatches) -> _Plan:
    tps = _Layout(m.tp_starts, m.tp_img.size)
    tp_order = np.empty_like(tps.position)
    tp_order[tps.position] = np.arange(tps.position.size)  # layout -> matches' order
    # the detections in blocks that end at a true positive's detection (every category's last
    # counted detection is one): the counts up to a true positive are a running sum over blocks
    ends = np.unique(m.tp_det)
    blocks = _Layout(np.append(0, ends[:-1] + 1) if ends.size else ends, m.det_img.size)
    det_order = np.empty_like(blocks.position)
    det_order[blocks.position] = np.arange(blocks.position.size)
    block_cat = np.searchsorted(m.det_starts, ends, side="right")
    cats = _Layout(np.flatnonzero(np.diff(block_cat, prepend=-1)), ends.size)
    block_rank = np.empty_like(blocks.order)
    block_rank[blocks.order] = np.arange(blocks.order.size)
    block_at = np.empty_like(cats.position)
    block_at[cats.position] = block_rank
    seg_len = np.diff(np.append(m.tp_starts, m.tp_img.size))
    seg_cat = np.zeros((m.tp_starts.size, m.num_categories), np.float64)
    seg_cat[np.arange(m.tp_starts.size), m.tp_seg_cat[tps.order]] = 1.0
    ign_at = ign_first = ign_img = None
    if m.ign_row is not None:
        rows, ign_first = np.unique(m.ign_row, return_index=True)
        ign_at, ign_img = tps.position[rows], m.ign_img
    return _Plan(
        tps=tps,
        blocks=blocks,
        cats=cats,
        block_at=block_at,
        tp_img=m.tp_img[tp_order],
        tp_det=cats.position[np.searchsorted(ends, m.tp_det[tp_order])],
        tp_cat=np.repeat(m.tp_seg_cat, seg_len)[tp_order],
        seg_cat=seg_cat,
        det_img=m.det_img[det_order],
        ign_at=ign_at,
        ign_first=ign_first,
        ign_img=ign_img,
        table=_reached_table(m.rec_thrs),
    )


def _chunk_ap(m: RankingMatches, plan: _Plan, weights: np.ndarray) -> np.ndarray:
    """:func:`resampled_ap` of one chunk of resamples ``[b, I]`` (in the dtype to compute in).

    Every array is ``[position, b]``: a gather copies rows of ``b`` values, a scan adds whole slices.
    """
    weights = np.ascontiguousarray(weights.T)  # [I, b]
    gt = m.npig.T.astype(weights.dtype) @ weights  # [K, b] ground truths per category
    valid = gt > 0
    sums = np.zeros((m.num_categories, weights.shape[1]), np.float64)
    if m.tp_img.size:
        # detections counted up to each true positive (of its category, less those ignored at its threshold)
        dets = np.take(
            plan.blocks.sums(np.take(weights, plan.det_img, axis=0), weights.dtype), plan.block_at, axis=0
        )
        plan.cats.cumsum(dets)
        counted = np.take(dets, plan.tp_det, axis=0)
        if plan.ign_at is not None:
            ignored = np.zeros_like(counted)
            ignored[plan.ign_at] = np.add.reduceat(
                np.take(weights, plan.ign_img, axis=0), plan.ign_first, axis=0
            )
            plan.tps.cumsum(ignored)
            counted -= ignored
        np.maximum(counted, 1.0, out=counted)  # nothing counted yet: tp is 0 there, so is precision
        tp = np.take(weights, plan.tp_img, axis=0)
        plan.tps.cumsum(tp)
        precision = np.divide(tp, counted, out=counted)
        gt_at = np.take(np.where(valid, gt, 1.0), plan.tp_cat, axis=0)
        if plan.table is not None:  # recall thresholds reached so far
            reached = _table_reached(tp, gt_at, plan.table)
        else:
            recall = np.divide(tp, gt_at, out=tp)
            reached = _thresholds_reached(recall, np.append(m.rec_thrs, np.inf)).astype(weights.dtype)
        newly = plan.tps.increments(reached)
        # interpolated precision: the best precision from here to the segment's end, at each recall
        # threshold newly reached here
        plan.tps.suffix_max(precision)
        precision *= newly
        sums = plan.seg_cat.T @ plan.tps.sums(precision)
    ap_k = sums / (m.num_thresholds * m.rec_thrs.size)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (ap_k * valid).sum(axis=0) / count, np.nan)


def resampled_ap(
    matches: RankingMatches, weights: np.ndarray, workers: int | None = None, dtype: Any = np.float64
) -> np.ndarray:
    """COCO mask AP (a fraction) of the ranking on each resample of the images.

    Args:
        matches: from :func:`collect_matches`.
        weights: ``[B, I]`` integer multiplicities per resample and image (all ones: the evaluated set).
        workers: threads over chunks of resamples (default: the CPU count, at most 8).
        dtype: what to compute in: ``float64`` (COCOeval's AP to about 1e-12) or ``float32`` (counts
            stay exact, the precisions are rounded: about 1e-7 off, and faster; float64 is used
            anyway where a count could pass float32's exact integers or the recall thresholds are
            not COCO's evenly spaced ones).

    Returns:
        ``float64 [B]``; NaN for a resample without any ground truth (COCO's -1).
    """
    m = matches
    plan = _plan(m)
    weights = np.asarray(weights)
    if np.dtype(dtype) == np.float32:  # exact integers below 2**24: every count, and m * tp
        per_image = np.stack(
            [m.npig.max(axis=1, initial=0) * m.rec_thrs.size, np.bincount(m.det_img, minlength=m.num_images)],
            1,
        )
        if plan.table is None or (weights.astype(np.float64) @ per_image).max(initial=0) >= 2**24:
            dtype = np.float64
    weights = weights.astype(dtype)
    width = max(m.tp_img.size, 1)
    # cache-sized chunks, unless the scans' Python loop (one step per row) would cost more than the work
    steps = 4 * len(plan.tps.rows) + len(plan.blocks.rows) + len(plan.cats.rows)
    chunk = max(CHUNK_BYTES // (weights.itemsize * width), -(-STEP_COST * steps // (4 * width)))
    chunk = int(max(1, min(weights.shape[0], chunk)))
    blocks = [weights[s : s + chunk] for s in range(0, weights.shape[0], chunk)]
    workers = min(workers or min(os.cpu_count() or 1, 8), len(blocks))
    if workers <= 1:
        parts = [_chunk_ap(m, plan, block) for block in blocks]
    else:  # numpy releases the GIL in its loops: the chunks run side by side
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda block: _chunk_ap(m, plan, block), blocks))
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def multiplicities(num_images: int, resamples: int, seed: int) -> np.ndarray:
    """``int64 [resamples, num_images]``: how many times each image is drawn in each resample (the
    images drawn uniformly with replacement, ``num_images`` draws per resample)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(resamples, num_images))
    flat = draws + (np.arange(resamples) * num_images)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * num_images).reshape(resamples, num_images)


def verdict(low: float, high: float) -> str:
    """``helps`` (the interval lies above 0), ``hurts`` (below 0) or ``no clear difference``."""
    if low > 0:
        return VERDICTS[0]
    if high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def paired_differences(
    matches: Mapping[str, RankingMatches],
    pairs: Mapping[str, tuple[str, str]],
    *,
    stats_ap: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    ndigits: int | None = 3,
) -> dict[str, dict[str, Any] | None]:
    """The paired bootstrap interval of ``AP(a) - AP(b)`` for each ``name: (a, b)`` of ``pairs``.

    Args:
        matches: per ranking, from :func:`collect_matches` (all on the same images).
        pairs: e.g. ``{"mask_scoring_gain": ("segm", "segm_cls")}``.
        stats_ap: per ranking, COCOeval's AP (``stats[0]``, a fraction); the full-set difference is
            taken from it, and the bootstrap's AP with every multiplicity 1 must agree with it.
        resamples, seed: the resamples (the same multiplicities for every ranking) and their seed.
        level: the interval's coverage (percentiles ``(1 - level) / 2`` and ``(1 + level) / 2``).
        ndigits: rounding of the AP points (None: unrounded).

    Returns:
        Per pair ``{"AP", "low", "high", "verdict", "bootstrap": {"level", "num_images",
        "resamples", "seed"}}`` in AP points (x100), or None when the AP difference is undefined
        (no ground truth).

    Raises:
        BootstrapError: the rankings cover different images, or the bootstrap's AP on the evaluated
            set disagrees with COCOeval's.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    names = sorted({n for pair in pairs.values() for n in pair})
    sizes = {matches[n].num_images for n in names}
    if len(sizes) != 1:
        raise BootstrapError(f"the rankings cover different numbers of images: {sorted(sizes)}")
    for name in names:
        reference = (stats_ap or {}).get(name)
        ours = matches[name].ap
        if reference is not None and reference >= 0 and (ours is None or abs(ours - reference) > 1e-9):
            raise BootstrapError(
                f"the bootstrap's AP of {name} on the evaluated images ({ours}) is not COCOeval's ({reference})"
            )
    num_i = sizes.pop()
    weights = multiplicities(num_i, resamples, seed)
    aps = {n: resampled_ap(matches[n], weights, dtype=np.float32) for n in names}

    def points(value: float) -> float:
        value = float(value) * 100.0
        return round(value, ndigits) if ndigits is not None else value

    out: dict[str, dict[str, Any] | None] = {}
    tail = (1.0 - level) / 2.0 * 100.0
    for pair_name, (a, b) in pairs.items():
        full = [
            (stats_ap or {}).get(n) if (stats_ap or {}).get(n) is not None else matches[n].ap for n in (a, b)
        ]
        diffs = aps[a] - aps[b]
        diffs = diffs[~np.isnan(diffs)]
        if any(v is None or v < 0 for v in full) or not diffs.size:
            out[pair_name] = None
            continue
        low, high = np.percentile(diffs, [tail, 100.0 - tail])
        out[pair_name] = {
            "AP": points(full[0] - full[1]),
            "low": points(low),
            "high": points(high),
            "verdict": verdict(float(low), float(high)),
            "bootstrap": {"level": level, "num_images": num_i, "resamples": resamples, "seed": seed},
        }
    return out
