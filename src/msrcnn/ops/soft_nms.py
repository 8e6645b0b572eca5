"""Soft-NMS (Bodla et al., 2017) with Detectron semantics, per class, on CPU and GPU.

torchvision ships hard NMS only. The paper's test setting (paper Sec. 4.1, after Detectron) uses Soft-NMS:
per class, repeatedly take the highest-scoring remaining box ``M`` and rescale every other
remaining box ``b``

* linear:   ``s_b *= 1 - IoU(M, b)`` when ``IoU(M, b) > iou_threshold`` (else unchanged),
* gaussian: ``s_b *= exp(-IoU(M, b) ** 2 / sigma)`` for every ``b``,

and drop the boxes whose score falls below ``score_threshold``.

The implementation is vectorised, the same on CPU and GPU: selection in rounds. It gives the result
of the textbook sequential algorithm (the same kept boxes; scores equal up to float32 rounding).
A box that beats every remaining box it overlaps (higher score, or equal score and lower index)
is selected by the sequential algorithm before any of them, with the score it has now: its score
only changes when an overlapping box is selected first, and each of those stays below it.
Boxes selected in the same round never overlap each other, so their rescalings commute. Each
round therefore selects all such boxes at once and applies their rescalings together, over the
list of overlapping same-class pairs (the only pairs with a rescaling factor other than 1). The
number of rounds is the longest chain of overlapping boxes, about 11 for 1,000 clustered boxes,
against 71 iterations for one box per class at a time. A round after the last selection changes
nothing, so on a GPU (:mod:`msrcnn.ops.gpu_paths`) the host checks whether any box is left only
after rounds 4, 8, 16, 32, ... (at most twice the rounds needed, a logarithmic number of host syncs,
none per round); on the CPU, where a check costs nothing, after every round.
At 1,000-2,000 boxes over 80 classes it takes a few milliseconds on one CPU core, well under 1%
of an inference.

Neither is differentiable: the new scores carry no gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from msrcnn.ops.gpu_paths import use_gpu_paths

__all__ = [
    "IOU_THRESHOLD",
    "SCORE_THRESHOLD",
    "SIGMA",
    "SOFT_NMS_METHODS",
    "batched_soft_nms",
    "soft_nms",
]

SOFT_NMS_METHODS = ("linear", "gaussian")
# Detectron's test path (the paper's Soft-NMS): linear, Nt = TEST.NMS = 0.5, sigma 0.5, score threshold 1e-4.
IOU_THRESHOLD = 0.5
SIGMA = 0.5
SCORE_THRESHOLD = 1e-4
METHOD = "linear"  # the paper's (linear decay; gaussian is the other of SOFT_NMS_METHODS)

# Upper bound on the number of same-class box pairs whose IoU is materialised at once (about 10
# temporaries of this many float32 / int64 entries, one host sync per chunk): 80 MB on the CPU, 1.3 GB
# on the GPU path (80,000 candidate boxes of 80 classes, a score threshold of 0, make 40M pairs).
_PAIR_BUDGET = {False: 1 << 20, True: 1 << 24}


def check_method(method: str) -> None:
    """Raise ``ValueError`` when ``method`` is not a supported Soft-NMS rescaling (the one check, also
    :class:`msrcnn.models.roi_heads.SoftNMSConfig`'s)."""
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"Unknown Soft-NMS method {method!r}; valid choices: {', '.join(SOFT_NMS_METHODS)}")


def _row_chunks(pair_ends: list[int], budget: int) -> list[tuple[int, int]]:
    """Split rows into ``[start, stop)`` ranges holding at most ``budget`` pairs each.

    ``pair_ends[r]`` is the cumulative number of pairs of rows ``0..r``. A single row always
    forms a range, however many pairs it has.
    """
    chunks = []
    start, done = 0, 0
    for row, end in enumerate(pair_ends):
        if end - done > budget and row > start:
            chunks.append((start, row))
            start, done = row, pair_ends[row - 1]
    if start < len(pair_ends):
        chunks.append((start, len(pair_ends)))
    return chunks


def _overlapping_pairs(
    boxes: Tensor, counts: Tensor, iou_threshold: float, sigma: float, method: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Same-class pairs ``i < j`` whose rescaling factor is not 1, and that factor.

    Args:
        boxes: ``[n, 4]`` boxes grouped by class (class ``c`` holds ``counts[c]`` consecutive rows).
        counts: ``[C]`` boxes per class.

    Returns:
        ``first``, ``second`` (int64 positions, ``first < second``) and ``factor`` (the score
        multiplier of either box when the other is selected; the IoU is computed with the
        arithmetic of ``torchvision.ops.box_iou``).
    """
    n = boxes.shape[0]
    device = boxes.device
    position = torch.arange(n, device=device)
    class_end = torch.repeat_interleave(torch.cumsum(counts, 0), counts, output_size=n)
    row_len = class_end - position - 1  # row i pairs with the boxes after it in its class
    pair_end = torch.cumsum(row_len, 0)
    x1, y1, x2, y2 = boxes.t().contiguous()
    area = (x2 - x1) * (y2 - y1)
    firsts, seconds, factors = [], [], []
    pair_end_host = pair_end.tolist()  # one host sync
    for start, stop in _row_chunks(pair_end_host, _PAIR_BUDGET[use_gpu_paths(device)]):
        done = pair_end_host[start - 1] if start else 0
        total = pair_end_host[stop - 1] - done
        if total == 0:
            continue
        rows = position[start:stop]
        lens = row_len[start:stop]
        # pair k of the chunk belongs to row i and is (i, i + 1 + k - first pair of row i)
        shift = (rows + 1).sub_(pair_end[start:stop] - lens).add_(done)
        first = torch.repeat_interleave(rows, lens, output_size=total)
        second = torch.arange(total, device=device).add_(
            torch.repeat_interleave(shift, lens, output_size=total)
        )

        def pick(values: Tensor, which: Tensor) -> Tensor:
            return values.index_select(0, which)

        w = torch.minimum(pick(x2, first), pick(x2, second)).sub_(
            torch.maximum(pick(x1, first), pick(x1, second))
        )
        h = torch.minimum(pick(y2, first), pick(y2, second)).sub_(
            torch.maximum(pick(y1, first), pick(y1, second))
        )
        inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
        iou = inter.div((pick(area, first) + pick(area, second)).sub_(inter))
        if method == "linear":
            edge = torch.nonzero(iou > iou_threshold).squeeze(1)
            factor = (1.0 - iou).index_select(0, edge)
        else:
            factor = iou.square_().neg_().div_(sigma).exp_()
            edge = torch.nonzero(factor != 1.0).squeeze(1)  # NaN (0/0 of two empty boxes) included
            factor = factor.index_select(0, edge)
        firsts.append(first.index_select(0, edge))
        seconds.append(second.index_select(0, edge))
        factors.append(factor)
    if not firsts:
        empty = torch.empty(0, dtype=torch.int64, device=device)
        return empty, empty, boxes.new_empty(0)
    return torch.cat(firsts), torch.cat(seconds), torch.cat(factors)


def _soft_nms_rounds(
    boxes: Tensor,
    scores: Tensor,
    counts: Tensor,
    iou_threshold: float,
    sigma: float,
    score_threshold: float,
    method: str,
) -> tuple[Tensor, Tensor]:
    """Vectorised Soft-NMS over class-grouped boxes (see the module docstring).

    Returns:
        ``positions`` of the kept boxes (int64, into the grouped order) and their new scores.
    """
    first, second, factor = _overlapping_pairs(boxes, counts, iou_threshold, sigma, method)
    factor = factor.to(scores.dtype)
    s = torch.where(scores >= score_threshold, scores, -math.inf)  # -inf: selected or dropped
    final = torch.full_like(s, -math.inf)
    blocked = torch.empty(s.shape, dtype=torch.bool, device=s.device)
    rescale = torch.empty_like(s)
    every_round = not use_gpu_paths(s.device)
    for done in range(1, s.numel() + 1):  # ends much earlier: every round selects at least one box
        # In each overlapping pair the lower box loses (the higher index on a tie; dead boxes,
        # at -inf, lose to live ones). A box that loses no pair is selected.
        first_wins = s.index_select(0, first) >= s.index_select(0, second)
        loser = torch.where(first_wins, second, first)
        winner = torch.where(first_wins, first, second)
        selected = (s > -math.inf) & ~blocked.fill_(False).index_fill_(0, loser, True)
        final = torch.where(selected, s, final)
        # A selected box wins all its pairs; its losers are rescaled (several selected boxes may
        # rescale the same loser in one round: their factors multiply).
        pair_factor = torch.where(selected.index_select(0, winner), factor, 1.0)
        s = s * rescale.fill_(1.0).scatter_reduce_(0, loser, pair_factor, "prod")
        s = torch.where((s >= score_threshold) & ~selected, s, -math.inf)  # NaN is dropped too
        if (every_round or (done >= 4 and done & (done - 1) == 0)) and not bool((s > -math.inf).any()):
            break  # a host sync: every round, or after rounds 4, 8, 16, ... on the GPU path
    positions = torch.nonzero(final > -math.inf).squeeze(1)
    return positions, final.index_select(0, positions)


@torch.no_grad()
def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    sigma: float = SIGMA,
    score_threshold: float = SCORE_THRESHOLD,
    method: str = METHOD,
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
        classes (equal scores by increasing index), and ``new_scores`` aligned with ``keep`` (in
        the dtype of ``scores``).
    """
    check_method(method)
    device = boxes.device
    if boxes.numel() == 0 or scores.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=device), scores.new_empty(0)
    box_dtype = torch.promote_types(boxes.dtype, torch.float32)
    score_dtype = torch.promote_types(scores.dtype, torch.float32)
    # Group by class, keeping input order inside a class (a tie goes to the lower index).
    order = torch.argsort(idxs, stable=True)
    _, counts = torch.unique_consecutive(idxs.index_select(0, order), return_counts=True)
    positions, new_scores = _soft_nms_rounds(
        boxes.index_select(0, order).to(box_dtype),
        scores.index_select(0, order).to(score_dtype),
        counts,
        iou_threshold,
        sigma,
        score_threshold,
        method,
    )
    keep = order.index_select(0, positions)
    by_index = torch.argsort(keep)
    keep, new_scores = keep[by_index], new_scores[by_index]
    ranking = torch.argsort(new_scores, descending=True, stable=True)
    return keep[ranking], new_scores[ranking].to(scores.dtype)


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = IOU_THRESHOLD,
    sigma: float = SIGMA,
    score_threshold: float = SCORE_THRESHOLD,
    method: str = METHOD,
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
