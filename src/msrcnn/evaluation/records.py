"""Per-image detection records: model outputs converted once, on the CPU, for COCO evaluation.

A model (torchvision Mask R-CNN output format, plus the MS R-CNN keys) returns per image

* ``boxes`` ``[K, 4]`` xyxy in original-image pixels, ``labels`` ``[K]`` contiguous 1..C,
  ``scores`` ``[K]`` class scores, ``masks`` ``[K, 1, H, W]`` probabilities at image size,
* MS R-CNN only: ``mask_ious`` ``[K]`` predicted MaskIoU and ``mask_scores`` ``[K]``.

:func:`make_record` keeps the top ``max_dets`` by class score, maps the labels to the
dataset's category ids and RLE-encodes the masks (:mod:`msrcnn.evaluation.rle`), giving a small
picklable :class:`DetectionRecord` (cheap to gather across DDP ranks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from msrcnn.evaluation.rle import _encode_roi_masks, encode_masks
from msrcnn.models.maskiou import mask_scores

__all__ = ["DetectionRecord", "label_to_cat_id_from_coco", "make_record"]


@dataclass(eq=False)  # numpy fields: compare records field by field, not with ==
class DetectionRecord:
    """Detections of one image, ready for COCO evaluation (all arrays on the CPU).

    Attributes:
        image_id: the dataset's image id.
        boxes: ``float32 [K, 4]`` xyxy in original-image pixels.
        scores: ``float32 [K]`` class scores, sorted in decreasing order by :func:`make_record`.
        labels: ``int64 [K]`` the dataset's category ids (not the contiguous model labels).
        mask_ious: ``float32 [K]`` predicted MaskIoU in [0, 1], or None for a plain Mask R-CNN.
        rles: ``K`` compressed RLE masks, or None when the model predicts no masks.
        mask_areas: ``float64 [K]`` each RLE's area, as COCO's ``mask.area`` gives it, when it was
            computed while encoding (None: the evaluation computes it from the RLEs).
        mask_boxes: ``float64 [K, 4]`` each RLE's box ``[x, y, w, h]``, as COCO's ``mask.toBbox``
            gives it, or None (likewise).
    """

    image_id: int
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    mask_ious: np.ndarray | None = None
    rles: list[dict] | None = None
    mask_areas: np.ndarray | None = None
    mask_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Check that every per-detection field has the same length."""
        k = len(self.scores)
        sizes = {"boxes": len(self.boxes), "labels": len(self.labels)}
        if self.mask_ious is not None:
            sizes["mask_ious"] = len(self.mask_ious)
        if self.rles is not None:
            sizes["rles"] = len(self.rles)
        for name in ("mask_areas", "mask_boxes"):
            if getattr(self, name) is not None:
                if self.rles is None:
                    raise ValueError(f"image {self.image_id}: {name} without rles")
                sizes[name] = len(getattr(self, name))
        bad = {name: n for name, n in sizes.items() if n != k}
        if bad:
            raise ValueError(f"image {self.image_id}: {k} scores but {bad}")

    def __len__(self) -> int:
        """Number of detections."""
        return len(self.scores)

    @property
    def mask_scores(self) -> np.ndarray:
        """Mask Scoring ranking ``score * mask_iou`` (the class score for a plain Mask R-CNN):
        :func:`msrcnn.models.maskiou.mask_scores`, as the model computes its ``mask_scores``."""
        return mask_scores(self.scores, self.mask_ious)


def _label_lookup(label_to_cat_id: Sequence[int] | Tensor | np.ndarray) -> np.ndarray:
    """The label -> category id table as an int64 numpy array."""
    if isinstance(label_to_cat_id, Tensor):
        return label_to_cat_id.detach().cpu().numpy().astype(np.int64)
    return np.asarray(label_to_cat_id, dtype=np.int64)


def top_detections(scores: Tensor, max_dets: int) -> Tensor:
    """Indices of the ``max_dets`` highest ``scores``, highest first (ties in input order): the
    detections, and their order, that :func:`make_record` keeps."""
    return torch.argsort(scores, descending=True, stable=True)[: min(int(scores.shape[0]), max_dets)]


def make_record(
    output: dict[str, Tensor],
    image_id: int,
    label_to_cat_id: Sequence[int] | Tensor | np.ndarray,
    max_dets: int = 100,
    mask_threshold: float = 0.5,
) -> DetectionRecord:
    """Convert one model output into a :class:`DetectionRecord`.

    Keeps the ``max_dets`` detections with the highest class score (sorted by decreasing
    class score), selects and binarises on the output's device, then moves to the CPU once
    per field. ``mask_scores`` is not read: the record keeps ``scores`` and ``mask_ious``, and its
    :attr:`DetectionRecord.mask_scores` applies the model's own function to them.
    The masks are either pasted ``masks`` ``[K, 1, H, W]`` or, from a model with
    ``mask_output="roi"``, ``roi_masks`` ``[K, 1, M, M]`` with ``image_size`` (the same RLEs,
    computed from the box regions only: :func:`encode_roi_masks`).

    Args:
        output: ``boxes``, ``labels``, ``scores``, optionally ``masks`` (or ``roi_masks`` and
            ``image_size``) and ``mask_ious``.
        image_id: the dataset's image id.
        label_to_cat_id: indexed BY THE CONTIGUOUS LABEL: ``label_to_cat_id[l]`` is the dataset
            category id of model label ``l``; entry 0 is the background (any value), so it has
            ``C + 1`` entries (see :func:`label_to_cat_id_from_coco`).
        max_dets: detections kept per image (COCO evaluates at most 100).
        mask_threshold: mask binarisation threshold (``probability > mask_threshold``).

    Returns:
        The record; ``mask_ious`` is clamped to [0, 1] (the mask score of paper Sec. 3.2, Inference) or None if absent.
    """
    scores = output["scores"]
    order = top_detections(scores, max_dets)
    labels = output["labels"][order].cpu().numpy().astype(np.int64)
    lookup = _label_lookup(label_to_cat_id)
    if labels.size and (labels.min() < 1 or labels.max() >= len(lookup)):
        raise ValueError(
            f"image {image_id}: labels must lie in 1..{len(lookup) - 1} for a label_to_cat_id table of "
            f"{len(lookup)} entries (entry 0 = background), got {labels.min()}..{labels.max()}"
        )
    mask_ious = output.get("mask_ious")
    masks = output.get("masks")
    mask_areas = mask_boxes = None
    if masks is not None:
        rles = encode_masks((masks.detach() > mask_threshold)[order])  # binarise, then gather
    elif output.get("roi_masks") is not None:
        if "image_size" not in output:
            raise ValueError(f"image {image_id}: an output with 'roi_masks' needs 'image_size' (H, W)")
        rles, mask_areas, mask_boxes = _encode_roi_masks(
            output["roi_masks"].detach()[order],
            output["boxes"].detach()[order],
            output["image_size"],
            mask_threshold,
        )
    else:
        rles = None
    return DetectionRecord(
        image_id=int(image_id),
        boxes=output["boxes"][order].detach().float().cpu().numpy().reshape(-1, 4),
        scores=scores[order].detach().float().cpu().numpy(),
        labels=lookup[labels],
        mask_ious=None
        if mask_ious is None
        else mask_ious[order].detach().float().clamp(0.0, 1.0).cpu().numpy(),
        rles=rles,
        mask_areas=mask_areas,
        mask_boxes=mask_boxes,
    )


def label_to_cat_id_from_coco(coco_gt) -> list[int]:
    """The ``label_to_cat_id`` table for the usual contiguous mapping of a COCO dataset.

    Model label ``l`` (1..C) is the ``l``-th category id in increasing order; entry 0 (the
    background) is 0.
    """
    return [0, *sorted(int(c) for c in coco_gt.getCatIds())]
