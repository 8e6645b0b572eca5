"""Per-class (batched) hard NMS with a fixed, small number of host syncs on a GPU.

torchvision's ``batched_nms`` runs one ``nms`` per class, each behind a ``torch.where`` that makes
the host wait, once the box set is large (above 100,000 coordinates on a GPU: every post-processing
of 1,000 proposals x 80 classes at a low score threshold). The GPU variant here offsets each group's
boxes so that groups cannot overlap (torchvision's "coordinate trick") in float64, where the offset
leaves every coordinate, and so every IoU, exact, and runs one ``nms`` per chunk of whole groups of at
most :data:`BOXES_PER_CALL` boxes: one host sync per call plus one for the group sizes when there is
more than one chunk. The CPU keeps torchvision's function (there a sync costs nothing and the
per-class kernel calls are fastest). See :mod:`msrcnn.ops.gpu_paths`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import boxes as box_ops

from msrcnn.ops.gpu_paths import use_gpu_paths

__all__ = ["BOXES_PER_CALL", "batched_nms"]

# Boxes per nms call on the GPU path: the CUDA kernel builds an n x n/64 suppression bitmask that the
# host then scans (25,000 boxes: 78 MB), so larger sets are split by group. torchvision switches to
# one call per class at the same size.
BOXES_PER_CALL = 25_000


def _offset_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """One ``nms`` over boxes moved apart by group (float64: the shifted coordinates stay exact)."""
    boxes64 = boxes.to(torch.float64)
    low = boxes64.min()
    span = boxes64.max() - low + 1.0
    shifted = boxes64 - low + (idxs.to(torch.float64) * span)[:, None]
    return box_ops.nms(shifted, scores.to(torch.float64), iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's ``batched_nms``: indices of the kept boxes, by decreasing score; groups never interact.

    Args:
        boxes: ``[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        scores: ``[N]`` scores.
        idxs: ``[N]`` integer group (class, level, image) of each box.
        iou_threshold: boxes of one group with IoU above it to a higher-scoring kept box are dropped.
    """
    if not use_gpu_paths(boxes.device) or boxes.device.type == "mps":  # MPS has no float64
        return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if n <= BOXES_PER_CALL:
        return _offset_nms(boxes, scores, idxs, iou_threshold)
    # Several calls, each over whole groups: group sizes reach the host once.
    order = torch.argsort(idxs, stable=True)
    _, sizes = torch.unique_consecutive(idxs.index_select(0, order), return_counts=True)
    kept, start, stop, filled = [], 0, 0, 0
    for size in sizes.tolist() + [None]:
        if size is not None and (filled == 0 or filled + size <= BOXES_PER_CALL):
            stop, filled = stop + size, filled + size
            continue
        chunk = order[start:stop]
        keep = _offset_nms(boxes[chunk], scores[chunk], idxs[chunk], iou_threshold)
        kept.append(chunk.index_select(0, keep))
        if size is not None:
            start, stop, filled = stop, stop + size, size
    keep = torch.cat(kept)
    return keep.index_select(0, torch.argsort(scores.index_select(0, keep), descending=True, stable=True))
