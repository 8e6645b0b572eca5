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
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from PIL import Image, ImageOps

from msrcnn.evaluation.records import DetectionRecord, make_record, top_detections
from msrcnn.models import load_model

__all__ = ["PRECISIONS", "SORT_KEYS", "ImageInput", "Prediction", "Predictor", "to_image_tensor"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

# Inference precisions: float32, or autocast to bfloat16 / float16 on the model's device.
PRECISIONS: dict[str, torch.dtype | None] = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
# Detection orders: the mask score (class score x MaskIoU, the paper's ranking) or the class score.
SORT_KEYS = ("mask_score", "class_score")


@dataclass
class Prediction:
    """The detections of one image, best first (NumPy arrays, CPU).

    :class:`Predictor` sorts them by decreasing mask score (class score x predicted MaskIoU, the
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
        from msrcnn.evaluation.plots import draw_detections, figure_to_array

        if image is None:
            if self.source is None:
                raise ValueError("draw() needs the image: this prediction was not made from a file path")
            image = self.source
        pixels = to_image_tensor(image)
        if tuple(pixels.shape[1:]) != tuple(self.image_size):
            raise ValueError(
                f"the image is {tuple(pixels.shape[1:])} (H, W) but this prediction is of a {self.image_size} image"
            )
        names = dict(zip((int(c) for c in self.category_ids), self.class_names))
        fig = draw_detections(
            pixels,
            self.to_record(),
            names,
            max_instances=max_instances,
            min_score=min_mask_score,
            min_instances=min_instances,
            title=title,
        )
        return figure_to_array(fig)[..., :3]

    def save(self, path: str | os.PathLike, image: ImageInput | None = None, **kwargs: Any) -> Path:
        """Writes :meth:`draw` as an image file (format from the suffix, e.g. ``.png``); returns its path."""
        from msrcnn.atomic import atomic_open

        path = Path(path)
        pixels = self.draw(image, **kwargs)
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: unknown image suffix {path.suffix!r} (use .png or .jpg)")
        with atomic_open(path, "wb") as f:
            Image.fromarray(pixels).save(f, format=fmt)
        return path


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
            mask_scores=scores if mask_ious is None else scores * mask_ious,
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
