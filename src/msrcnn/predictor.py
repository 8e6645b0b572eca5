"""``msrcnn.Predictor``: a trained checkpoint applied to images, one result per image.

.. code-block:: python

    from msrcnn import Predictor

    predictor = Predictor("RUN/checkpoints/last.ckpt", device="cpu")
    for result in predictor(["a.jpg", pil_image, numpy_hwc_uint8, tensor_chw_float]):
        for name, score, box in zip(result.class_names, result.mask_scores, result.boxes):
            print(name, score, box)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from PIL import Image, ImageOps

from msrcnn.evaluation.records import DetectionRecord, make_record
from msrcnn.models import MaskScoringRCNN

__all__ = ["ImageInput", "Prediction", "Predictor", "to_image_tensor"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class Prediction:
    """The detections of one image, sorted by decreasing class score (NumPy arrays, CPU).

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

    def __len__(self) -> int:
        return len(self.class_scores)


def to_image_tensor(image: ImageInput) -> torch.Tensor:
    """``float32 [3, H, W]`` in [0, 1] of a file path, a PIL image, an ``HxWxC`` (or ``HxW``) uint8
    array or a ``CxHxW`` tensor (float in [0, 1], or uint8); 1 or 4 channels become RGB."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_image_tensor(img)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise ValueError(f"{path}: cannot read image: {err}") from None
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"a NumPy image must be uint8 HxWxC (or HxW), got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"a NumPy image must be HxWxC with C in 1, 3, 4, got shape {image.shape}")
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        return _three_channels(tensor.float().div_(255.0))
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"a tensor image must be CxHxW with C in 1, 3, 4, got shape {tuple(image.shape)}"
            )
        if image.dtype == torch.uint8:
            image = image.float().div(255.0)
        elif not image.is_floating_point():
            raise TypeError(f"a tensor image must be float in [0, 1] or uint8, got {image.dtype}")
        return _three_channels(image.float())
    raise TypeError(
        f"cannot use a {type(image).__name__} as an image: give a file path, a PIL image, an HxWxC uint8 "
        "array or a CxHxW float tensor"
    )


def _three_channels(image: torch.Tensor) -> torch.Tensor:
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return image[:3]


class Predictor:
    """A trained Mask Scoring R-CNN checkpoint, ready to run on images.

    Args:
        ckpt_path: a checkpoint of ``src/train.py`` (loaded by
            :meth:`msrcnn.models.MaskScoringRCNN.from_checkpoint`; no pretrained-weight files needed).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        max_dets: detections kept per image (highest class scores first).
        score_threshold: detections with a lower class score are dropped.
        soft_nms: ``True``/``False`` switches Soft-NMS on/off; ``None`` keeps the trained setting.
        mask_threshold: a mask pixel is on where its probability is above this.
        batch_size: images per forward pass.

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
        soft_nms: bool | None = None,
        mask_threshold: float = 0.5,
        batch_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.ckpt_path = Path(ckpt_path)
        self.model = MaskScoringRCNN.from_checkpoint(ckpt_path, map_location="cpu", soft_nms=soft_nms)
        self.model.to(self.device)
        self.model.mask_output = "roi"  # box-local masks: RLEs straight from the boxes, no paste
        self.class_names: list[str] = list(self.model.class_names or [])
        self.category_ids: list[int] = list(self.model.category_ids or [])
        self._names = dict(zip(self.category_ids, self.class_names))
        self.max_dets = max_dets
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.batch_size = batch_size

    @property
    def categories(self) -> list[tuple[int, str]]:
        """``(dataset category id, class name)`` of labels 1..K."""
        return list(zip(self.category_ids, self.class_names))

    def __call__(self, images: ImageInput | Iterable[ImageInput], *, rle: bool = False) -> list[Prediction]:
        """One :class:`Prediction` per image (a single image gives a list of one; a 4-D tensor
        is a batch of ``CxHxW`` images). ``rle=True``: masks as COCO RLEs instead of arrays."""
        return [self._prediction(record, size, rle) for record, size in self.records(images)]

    def records(
        self, images: ImageInput | Iterable[ImageInput], first_image_id: int = 1
    ) -> list[tuple[DetectionRecord, tuple[int, int]]]:
        """The detections of each image as a :class:`~msrcnn.evaluation.DetectionRecord` (labels =
        dataset category ids, RLE masks; image ids counted from ``first_image_id``) with the
        image's ``(H, W)``."""
        items = _as_list(images)
        lookup = [0, *self.category_ids]
        out: list[tuple[DetectionRecord, tuple[int, int]]] = []
        for start in range(0, len(items), self.batch_size):
            batch = [
                to_image_tensor(image).to(self.device) for image in items[start : start + self.batch_size]
            ]
            with torch.inference_mode():
                outputs = self.model(batch)
            for k, (image, output) in enumerate(zip(batch, outputs)):
                record = make_record(
                    output, first_image_id + start + k, lookup, self.max_dets, self.mask_threshold
                )
                out.append((_keep(record, self.score_threshold), (int(image.shape[1]), int(image.shape[2]))))
        return out

    def _prediction(self, record: DetectionRecord, size: tuple[int, int], rle: bool) -> Prediction:
        n = len(record)
        rles = record.rles if record.rles is not None else []
        masks = None
        if not rle:
            masks = np.zeros((n, *size), dtype=bool)
            if rles:
                decoded = mask_utils.decode([dict(r, counts=r["counts"].encode("ascii")) for r in rles])
                masks = decoded.reshape(*size, n).transpose(2, 0, 1).astype(bool)
        mask_ious = None if record.mask_ious is None else record.mask_ious.astype(np.float32)
        scores = record.scores.astype(np.float32)
        return Prediction(
            boxes=record.boxes.astype(np.float32).reshape(-1, 4),
            class_names=[self._names.get(int(c), str(int(c))) for c in record.labels],
            category_ids=record.labels.astype(np.int64),
            class_scores=scores,
            mask_ious=mask_ious,
            mask_scores=scores if mask_ious is None else scores * mask_ious,
            masks=masks,
            rles=list(rles) if rle else None,
            image_size=size,
        )


def _as_list(images: Any) -> list[ImageInput]:
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    if isinstance(images, Sequence) or isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"expected an image or a list of images, got a {type(images).__name__}")


def _keep(record: DetectionRecord, score_threshold: float) -> DetectionRecord:
    """The record without the detections whose class score is below ``score_threshold``."""
    if score_threshold <= 0 or len(record) == 0:
        return record
    keep = np.flatnonzero(record.scores >= score_threshold)
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
