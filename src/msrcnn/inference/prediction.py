"""``msrcnn.Prediction``: the detections of one image, as :class:`~msrcnn.inference.predictor.Predictor`
returns them, with their conversions: COCO results (:meth:`Prediction.to_coco`), plain JSON
(:meth:`Prediction.to_dict`, :meth:`Prediction.to_json`) and the evaluation's
:class:`~msrcnn.evaluation.DetectionRecord` (:meth:`Prediction.to_record`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from faster_coco_eval.core import mask as mask_utils

from msrcnn.data.images import ImageInput, to_image_tensor
from msrcnn.evaluation.plots import render_detections, save_image
from msrcnn.evaluation.records import DetectionRecord

__all__ = ["Prediction"]


@dataclass
class Prediction:
    """The detections of one image, best first (NumPy arrays, CPU).

    :class:`~msrcnn.inference.predictor.Predictor` sorts them by decreasing mask score (class score x predicted MaskIoU, the
    ranking of Mask Scoring R-CNN) unless it was asked for ``sort_by="class_score"``.

    Attributes:
        boxes: ``float32 [N, 4]`` boxes ``x0, y0, x1, y1`` in the image's pixels.
        class_names: ``N`` class names.
        category_ids: ``int64 [N]`` the training dataset's category ids.
        class_scores: ``float32 [N]`` classification scores.
        mask_ious: ``float32 [N]`` predicted MaskIoU in [0, 1]; None for a plain Mask R-CNN.
        mask_scores: ``float32 [N]`` class score x MaskIoU (the class score without a MaskIoU
            head): the score MS R-CNN ranks masks by.
        masks: ``bool [N, H, W]`` binary masks at image size, or None when RLEs were asked for.
        rles: ``N`` COCO run-length encodings ``{"size": [H, W], "counts": str}``, or None.
        image_size: ``(H, W)`` of the image.
        source: the image's path when it was given as one (what :meth:`draw` reads by default).

    :meth:`draw` and :meth:`save` are conveniences over :func:`msrcnn.evaluation.plots.render_detections`
    and :func:`msrcnn.evaluation.plots.save_image`.
    """

    boxes: np.ndarray
    class_names: list[str]
    category_ids: np.ndarray
    class_scores: np.ndarray
    mask_ious: np.ndarray | None
    mask_scores: np.ndarray
    masks: np.ndarray | None
    rles: list[dict] | None
    image_size: tuple[int, int]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.class_scores)

    def encoded_masks(self) -> list[dict]:
        """The masks as COCO RLEs ``{"size": [H, W], "counts": str}`` (``[]`` without masks)."""
        if self.rles is not None:
            return list(self.rles)
        if self.masks is None or len(self) == 0:
            return []
        fortran = np.asfortranarray(self.masks.transpose(1, 2, 0).astype(np.uint8))
        return [dict(r, counts=r["counts"].decode("ascii")) for r in mask_utils.encode(fortran)]

    def to_record(self, image_id: int = 0) -> DetectionRecord:
        """This prediction as the evaluation's :class:`~msrcnn.evaluation.DetectionRecord` (labels =
        category ids, RLE masks): what :func:`msrcnn.evaluation.plots.draw_detections` draws."""
        rles = self.encoded_masks() if (self.masks is not None or self.rles is not None) else None
        return DetectionRecord(
            image_id=image_id,
            boxes=self.boxes.reshape(-1, 4),
            scores=self.class_scores,
            labels=self.category_ids,
            mask_ious=self.mask_ious,
            rles=rles,
        )

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO results of this image (``loadRes`` format, plain Python): ``bbox`` ``[x, y, w, h]``, RLE
        ``segmentation`` and its ``area``, ``score`` = the mask score, plus ``class_score``,
        ``mask_iou``, ``mask_score``. The one conversion of detections to COCO (``src/predict.py``
        writes these, with ids)."""
        rles = self.encoded_masks()
        areas = mask_utils.area([dict(r, counts=r["counts"].encode("ascii")) for r in rles]) if rles else []
        out = []
        for k in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[k])
            ann = {
                "image_id": int(image_id),
                "category_id": int(self.category_ids[k]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(self.mask_scores[k]),
                "class_score": float(self.class_scores[k]),
                "mask_iou": None if self.mask_ious is None else float(self.mask_ious[k]),
                "mask_score": float(self.mask_scores[k]),
            }
            if rles:
                ann["segmentation"] = rles[k]
                ann["area"] = float(areas[k])
            out.append(ann)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python (lists, floats, str; masks as COCO RLEs), ``json.dumps``-able."""
        return {
            "image_size": [int(v) for v in self.image_size],
            "source": self.source,
            "boxes": self.boxes.reshape(-1, 4).astype(float).tolist(),
            "class_names": list(self.class_names),
            "category_ids": [int(v) for v in self.category_ids],
            "class_scores": self.class_scores.astype(float).tolist(),
            "mask_ious": None if self.mask_ious is None else self.mask_ious.astype(float).tolist(),
            "mask_scores": self.mask_scores.astype(float).tolist(),
            "rles": self.encoded_masks(),
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`, e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), **kwargs)

    def draw(
        self,
        image: ImageInput | None = None,
        *,
        max_instances: int = 30,
        min_mask_score: float = 0.3,
        min_instances: int = 3,
        title: str | None = None,
    ) -> np.ndarray:
        """The image with the masks, boxes and, per detection, its class, class score, MaskIoU and
        mask score drawn: ``uint8 [H', W', 3]`` (small images are enlarged so the labels stay legible).

        ``image``: the image predicted on (default: :attr:`source`). Draws at most ``max_instances``
        detections with a mask score >= ``min_mask_score``, but at least the best ``min_instances``
        (so a weak model's overlay is not blank).
        """
        if image is None:
            if self.source is None:
                raise ValueError("draw() needs the image: this prediction was not made from a file path")
            image = self.source
        pixels = to_image_tensor(image)
        if tuple(pixels.shape[1:]) != tuple(self.image_size):
            raise ValueError(
                f"the image is {tuple(pixels.shape[1:])} (H, W) but this prediction is of a {self.image_size} image"
            )
        return render_detections(
            pixels,
            self,
            max_instances=max_instances,
            min_score=min_mask_score,
            min_instances=min_instances,
            title=title,
        )

    def save(self, path: str | os.PathLike, image: ImageInput | None = None, **kwargs: Any) -> Path:
        """Writes :meth:`draw` (``kwargs`` are its own) as an image file, atomically, in the format of
        the suffix (e.g. ``.png``); returns its path."""
        return save_image(self.draw(image, **kwargs), path)
