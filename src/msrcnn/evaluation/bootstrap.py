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
detections in between enter only through counts (a sparse product with the multiplicities).
With every ``w_i = 1`` it is COCOeval's AP (to about 1e-12; checked on every call).

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
CHUNK_BYTES = 2 * 2**20  # a chunk's [resamples x true positives] float64 arrays: cache-sized
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


def _segment_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 1 restarting at every index in ``starts`` (exact for integer values)."""
    if x.shape[1] == 0:
        return x
    if starts.size > 1:
        totals = np.add.reduceat(x, starts, axis=1)
        x[:, starts[1:]] -= totals[:, :-1]
    return np.cumsum(x, axis=1, out=x)


def _thresholds_reached(recall: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of COCO's recall thresholds (``0, 0.01, .., 1``, then ``inf`` appended) are <= each
    recall in [0, 1]: exactly ``searchsorted(thresholds, recall, side="right")`` (an estimate, then
    one comparison each side)."""
    count = np.multiply(recall, thresholds.size - 2).astype(np.int64)
    count -= thresholds[count] > recall  # now thresholds[count] <= recall
    count += thresholds[count + 1] <= recall  # the estimate is off by at most one
    count += 1
    return count


def _chunk_ap(m: RankingMatches, weights: np.ndarray, seg_len: np.ndarray, seg_cat: np.ndarray) -> np.ndarray:
    """:func:`resampled_ap` of one chunk of resamples ``[b, I]`` (float64)."""
    num_b = weights.shape[0]
    rec_thrs = np.append(m.rec_thrs, np.inf)
    gt = weights @ m.npig  # [b, K] ground truths per category
    valid = gt > 0
    sums = np.zeros((num_b, m.num_categories), np.float64)
    if m.tp_img.size:
        starts = m.tp_starts
        # detections counted up to each true positive (of its category, less those ignored at its threshold)
        dets = _segment_cumsum(np.take(weights, m.det_img, axis=1), m.det_starts)
        counted = np.take(dets, m.tp_det, axis=1)
        if m.ign_row is not None:
            rows, first = np.unique(m.ign_row, return_index=True)
            ignored = np.zeros_like(counted)
            ignored[:, rows] = np.add.reduceat(np.take(weights, m.ign_img, axis=1), first, axis=1)
            counted -= _segment_cumsum(ignored, starts)
        np.maximum(counted, 1.0, out=counted)  # nothing counted yet: tp is 0 there, so is precision
        tp = _segment_cumsum(np.take(weights, m.tp_img, axis=1), starts)
        precision = np.divide(tp, counted, out=counted)
        recall = np.divide(tp, np.take(np.where(valid, gt, 1.0), seg_cat, axis=1), out=tp)
        reached = _thresholds_reached(recall, rec_thrs)  # recall thresholds reached so far
        newly = reached.copy()
        newly[:, 1:] -= reached[:, :-1]
        newly[:, starts] = reached[:, starts]
        # interpolated precision: the best precision from here to the segment's end (an offset per
        # segment, larger for earlier segments, keeps the running maximum inside its segment)
        offset = 2.0 * np.repeat(np.arange(starts.size, 0, -1, dtype=np.float64), seg_len)
        precision += offset
        best = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        best *= newly
        per_segment = np.add.reduceat(best, starts, axis=1)  # [b, n]: sum of (best + offset) * newly
        ends = np.append(starts[1:], m.tp_img.size) - 1
        per_segment -= reached[:, ends] * offset[starts]  # the offset's share: offset * thresholds reached
        np.add.at(sums.T, m.tp_seg_cat, per_segment.T)
    ap_k = sums / (m.num_thresholds * m.rec_thrs.size)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (ap_k * valid).sum(axis=1) / count, np.nan)


def resampled_ap(matches: RankingMatches, weights: np.ndarray, workers: int | None = None) -> np.ndarray:
    """COCO mask AP (a fraction) of the ranking on each resample of the images.

    Args:
        matches: from :func:`collect_matches`.
        weights: ``[B, I]`` integer multiplicities per resample and image (all ones: the evaluated set).
        workers: threads over chunks of resamples (default: the CPU count, at most 8).

    Returns:
        ``float64 [B]``; NaN for a resample without any ground truth (COCO's -1).
    """
    m = matches
    weights = np.asarray(weights, np.float64)
    seg_len = np.diff(np.append(m.tp_starts, m.tp_img.size))
    seg_cat = np.repeat(m.tp_seg_cat, seg_len)
    width = max(m.tp_img.size + m.det_img.size, 1)
    chunk = int(max(1, min(weights.shape[0], CHUNK_BYTES // (8 * width))))
    blocks = [weights[s : s + chunk] for s in range(0, weights.shape[0], chunk)]
    workers = min(workers or min(os.cpu_count() or 1, 8), len(blocks))
    if workers <= 1:
        parts = [_chunk_ap(m, block, seg_len, seg_cat) for block in blocks]
    else:  # numpy releases the GIL in its loops: the chunks run side by side
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda block: _chunk_ap(m, block, seg_len, seg_cat), blocks))
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
    aps = {n: resampled_ap(matches[n], weights) for n in names}

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
