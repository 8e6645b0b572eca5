"""``msrcnn.Predictor``: a trained checkpoint applied to images, one result per image.

.. code-block:: python

    from msrcnn import Predictor

    predictor = Predictor("RUN/checkpoints/last.ckpt", device="cpu", min_mask_score=0.2)
    for result in predictor(["a.jpg", pil_image, numpy_hwc_uint8, tensor_chw_float]):
        # best mask score (class score x predicted MaskIoU) first, the ranking of the paper
        for name, score, box in zip(result.class_names, result.mask_scores, result.boxes):
            print(name, score, box)
    result.to_coco(image_id=1)       # COCO results (json.dumps-able)
    result.to_json()                 # plain JSON of every field (masks as COCO RLEs)
    result.save("a_overlay.png", "a.jpg")  # masks, boxes, class, class score, MaskIoU, mask score
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from msrcnn.data.images import ImageInput, to_image_tensor
from msrcnn.evaluation.records import DetectionRecord, make_record, top_detections
from msrcnn.inference.prediction import Prediction
from msrcnn.models import load_model
from msrcnn.models.maskiou import mask_scores

__all__ = ["PRECISIONS", "SORT_KEYS", "Predictor"]

# Inference precisions: float32, or autocast to bfloat16 / float16 on the model's device.
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
# Detection orders: the mask score (class score x MaskIoU, the paper's ranking) or the class score.
SORT_KEYS = ("mask_score", "class_score")


class Predictor:
    """A trained Mask Scoring R-CNN checkpoint, ready to run on images.

    Args:
        ckpt_path: a checkpoint of ``src/train.py`` (loaded by
            :func:`msrcnn.models.load_model`; no pretrained-weight files needed).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        max_dets: detections kept per image (the highest class scores, as COCO evaluation keeps them).
        score_threshold: detections with a lower class score are dropped.
        min_mask_score: detections with a lower mask score (class score x MaskIoU) are dropped.
        sort_by: ``"mask_score"`` (default: the paper's ranking) or ``"class_score"``.
        soft_nms: ``True``/``False`` switches Soft-NMS on/off; ``None`` keeps the trained setting.
        mask_threshold: a mask pixel is on where its probability is above this.
        batch_size: images per forward pass.
        precision: ``"32"`` (float32), ``"bf16"`` or ``"16"`` (autocast to bfloat16 / float16 on
            the model's device; the weights stay float32).

    Attributes:
        model: the :class:`~msrcnn.models.MaskScoringRCNN` (eval mode, on ``device``).
        class_names, category_ids: of labels 1..K (the training dataset's).
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike,
        device: str | torch.device = "auto",
        *,
        max_dets: int = 100,
        score_threshold: float = 0.0,
        min_mask_score: float = 0.0,
        sort_by: str = "mask_score",
        soft_nms: bool | None = None,
        mask_threshold: float = 0.5,
        batch_size: int = 1,
        precision: str | int = "32",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        precision = str(precision)
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not valid; expected one of {', '.join(PRECISIONS)}")
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by={sort_by!r} is not valid; expected one of {', '.join(SORT_KEYS)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.ckpt_path = Path(ckpt_path)
        self.model = load_model(ckpt_path, map_location="cpu", soft_nms=soft_nms)
        self.model.to(self.device)
        self.class_names: list[str] = list(self.model.class_names or [])
        self.category_ids: list[int] = list(self.model.category_ids or [])
        self._names = dict(zip(self.category_ids, self.class_names))
        self.max_dets = max_dets
        self.score_threshold = score_threshold
        self.min_mask_score = min_mask_score
        self.sort_by = sort_by
        self.mask_threshold = mask_threshold
        self.batch_size = batch_size
        self.precision = precision

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision's autocast on the model's device (a no-op for ``"32"``)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @property
    def categories(self) -> list[tuple[int, str]]:
        """``(dataset category id, class name)`` of labels 1..K."""
        return list(zip(self.category_ids, self.class_names))

    def __call__(self, images: ImageInput | Iterable[ImageInput], *, rle: bool = False) -> list[Prediction]:
        """One :class:`Prediction` per image (a single image gives a list of one; a 4-D tensor
        is a batch of ``CxHxW`` images). ``rle=True``: masks as COCO RLEs instead of arrays."""
        items = _as_list(images)
        sources = [str(i) if isinstance(i, (str, os.PathLike)) else None for i in items]
        if rle:
            return [
                self.prediction(record, size, source)
                for (record, size), source in zip(self.records(items), sources)
            ]
        # masks as arrays: pasted at image size and binarised on the model's device (no RLE round trip)
        lookup = [0, *self.category_ids]
        out = []
        for output, size, index in self._outputs(items, mask_output="image"):
            masks = output.pop("masks")[:, 0]
            record = make_record(output, index + 1, lookup, self.max_dets)  # no masks: boxes and scores
            keep = self._kept(record)
            order = top_detections(output["scores"], self.max_dets)[torch.from_numpy(keep).to(masks.device)]
            dense = (masks[order] > self.mask_threshold).cpu().numpy()
            out.append(self._prediction(_select(record, keep), size, masks=dense, source=sources[index]))
        return out

    def records(
        self, images: ImageInput | Iterable[ImageInput], first_image_id: int = 1
    ) -> list[tuple[DetectionRecord, tuple[int, int]]]:
        """The detections of each image as a :class:`~msrcnn.evaluation.DetectionRecord` (labels =
        dataset category ids, RLE masks encoded from the box regions; image ids counted from
        ``first_image_id``; filtered and sorted as :class:`Predictor` was asked) with the image's ``(H, W)``."""
        lookup = [0, *self.category_ids]
        out: list[tuple[DetectionRecord, tuple[int, int]]] = []
        for output, size, index in self._outputs(_as_list(images), mask_output="roi"):
            record = make_record(output, first_image_id + index, lookup, self.max_dets, self.mask_threshold)
            out.append((_select(record, self._kept(record)), size))
        return out

    def _outputs(
        self, items: list[ImageInput], mask_output: str
    ) -> Iterator[tuple[dict[str, Any], tuple[int, int], int]]:
        """The model's output of each image (``batch_size`` images per forward pass, floating-point
        fields as float32), with the image's ``(H, W)`` and its index in ``items``. ``mask_output``:
        ``"roi"`` (box-local masks, for RLEs) or ``"image"`` (pasted at image size)."""
        previous = self.model.mask_output
        self.model.mask_output = mask_output
        try:
            for start in range(0, len(items), self.batch_size):
                batch = [
                    to_image_tensor(image).to(self.device) for image in items[start : start + self.batch_size]
                ]
                with torch.inference_mode(), self.autocast():
                    outputs = self.model(batch)
                for k, (image, output) in enumerate(zip(batch, outputs)):
                    output = {
                        key: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                        for key, v in output.items()
                    }
                    yield output, (int(image.shape[1]), int(image.shape[2])), start + k
        finally:
            self.model.mask_output = previous

    def _kept(self, record: DetectionRecord) -> np.ndarray:
        """Indices into ``record`` of the detections to report, in reporting order: class score >=
        ``score_threshold`` and mask score >= ``min_mask_score``, best ``sort_by`` first (ties keep
        the class-score order)."""
        scores = record.mask_scores if self.sort_by == "mask_score" else record.scores
        order = np.argsort(-scores, kind="stable")
        ok = record.scores[order] >= self.score_threshold
        ok &= record.mask_scores[order] >= self.min_mask_score
        return order[ok]

    def prediction(
        self, record: DetectionRecord, size: tuple[int, int], source: str | None = None
    ) -> Prediction:
        """The :class:`Prediction` of one of :meth:`records`'s ``(record, size)`` (masks as its RLEs)."""
        return self._prediction(record, size, rles=record.rles or [], source=source)

    def _prediction(
        self,
        record: DetectionRecord,
        size: tuple[int, int],
        *,
        masks: np.ndarray | None = None,
        rles: list[dict] | None = None,
        source: str | None = None,
    ) -> Prediction:
        """A :class:`Prediction` of ``record`` with its masks as ``bool [N, H, W]`` arrays or as RLEs."""
        mask_ious = None if record.mask_ious is None else record.mask_ious.astype(np.float32)
        scores = record.scores.astype(np.float32)
        return Prediction(
            boxes=record.boxes.astype(np.float32).reshape(-1, 4),
            class_names=[self._names.get(int(c), str(int(c))) for c in record.labels],
            category_ids=record.labels.astype(np.int64),
            class_scores=scores,
            mask_ious=mask_ious,
            mask_scores=mask_scores(scores, mask_ious),
            masks=masks,
            rles=None if rles is None else list(rles),
            image_size=size,
            source=source,
        )


def _as_list(images: Any) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    if isinstance(images, Sequence) or isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"expected an image or a list of images, got a {type(images).__name__}")


def _select(record: DetectionRecord, keep: np.ndarray) -> DetectionRecord:
    """The detections ``keep`` (indices, in that order) of ``record``."""
    return DetectionRecord(
        image_id=record.image_id,
        boxes=record.boxes[keep],
        scores=record.scores[keep],
        labels=record.labels[keep],
        mask_ious=None if record.mask_ious is None else record.mask_ious[keep],
        rles=None if record.rles is None else [record.rles[i] for i in keep],
        mask_areas=None if record.mask_areas is None else record.mask_areas[keep],
        mask_boxes=None if record.mask_boxes is None else record.mask_boxes[keep],
    )
