"""COCO-format instance segmentation: split specs, category mapping, validation and the dataset.

The annotation file is parsed and checked completely when a :class:`CocoInstanceDataset` is built, so
broken input fails at set-up with a :class:`DataError` naming the file and the offending id rather
than in the middle of an epoch. Only images and masks are decoded lazily, per item.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from msrcnn.data.errors import LOGGER, DataError
from msrcnn.data.images import read_image
from msrcnn.data.masks import EncodedMasks
from msrcnn.data.transforms import ResizeToInput

Target = dict[str, torch.Tensor]

DEFAULT_CACHE_BYTES = 512 * 2**20
"""Per process: the resized training split is cached when it fits (see :class:`CocoInstanceDataset`)."""
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_MISSING_LISTED = 5


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives: a COCO-format annotation (or image-info) file and its image folder."""

    ann_file: str
    img_dir: str


def coco2017_splits(root: str | os.PathLike[str]) -> dict[str, SplitSpec]:
    """The standard COCO 2017 layout under ``root``: train, val and test-dev (image info only)."""
    base = Path(root)
    return {
        "train": SplitSpec(str(base / "annotations" / "instances_train2017.json"), str(base / "train2017")),
        "val": SplitSpec(str(base / "annotations" / "instances_val2017.json"), str(base / "val2017")),
        "test": SplitSpec(str(base / "annotations" / "image_info_test-dev2017.json"), str(base / "test2017")),
    }


def _is_int(value: Any) -> bool:
    """JSON integers only: ``bool`` is an ``int`` subclass but never a valid id or size."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CategoryMap:
    """Bijection between a file's category ids (sorted, possibly non-contiguous) and labels ``1..K``.

    Label 0 is the background, as torchvision's detection models expect; everything handed to the
    evaluator is mapped back to the file's own ids with :meth:`label_to_cat_id`.
    """

    cat_ids: tuple[int, ...]
    names: tuple[str, ...]
    _label_of: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.cat_ids) != len(self.names):
            raise ValueError("cat_ids and names must have the same length")
        if list(self.cat_ids) != sorted(set(self.cat_ids)):
            raise ValueError(f"category ids must be sorted and unique, got {self.cat_ids}")
        object.__setattr__(self, "_label_of", {cat_id: i + 1 for i, cat_id in enumerate(self.cat_ids)})

    @classmethod
    def from_categories(
        cls, categories: Sequence[Mapping[str, Any]], source: str = "categories"
    ) -> CategoryMap:
        """Build the map from a COCO ``categories`` list; ``source`` (the file) is named in errors."""
        if not isinstance(categories, Sequence) or not categories:
            raise DataError(f"{source}: 'categories' must be a non-empty list")
        pairs: dict[int, str] = {}
        for index, category in enumerate(categories):
            if not isinstance(category, Mapping) or not _is_int(category.get("id")) or "name" not in category:
                raise DataError(
                    f"{source}: categories[{index}] needs an integer 'id' and a 'name', got {category!r}"
                )
            if category["id"] in pairs:
                raise DataError(f"{source}: duplicate category id {category['id']}")
            pairs[category["id"]] = str(category["name"])
        cat_ids = tuple(sorted(pairs))
        return cls(cat_ids=cat_ids, names=tuple(pairs[c] for c in cat_ids))

    def __len__(self) -> int:
        return len(self.cat_ids)

    @property
    def num_classes(self) -> int:
        """K + 1: the object classes plus background."""
        return len(self.cat_ids) + 1

    def cat_id_to_label(self, cat_id: int) -> int:
        """Contiguous label (1..K) of a file category id."""
        try:
            return self._label_of[cat_id]
        except KeyError:
            raise KeyError(f"unknown category id {cat_id}; known ids: {list(self.cat_ids)}") from None

    def label_to_cat_id(self, label: int) -> int:
        """File category id of a contiguous label (1..K)."""
        if not 1 <= label <= len(self.cat_ids):
            raise KeyError(f"label {label} is outside 1..{len(self.cat_ids)}")
        return self.cat_ids[label - 1]


@dataclass
class SplitStats:
    """What set-up kept and dropped from one annotation file; logged and kept for inspection."""

    images: int = 0
    kept_images: int = 0
    empty_images: int = 0
    instances: int = 0
    crowd: int = 0
    degenerate_boxes: int = 0
    degenerate_polygons: int = 0
    degenerate_polygon_parts: int = 0
    empty_rles: int = 0


def load_annotation_file(ann_file: str | os.PathLike[str], required_keys: Sequence[str]) -> dict[str, Any]:
    """Read a COCO json file, refusing missing files, invalid JSON and missing top-level keys."""
    path = Path(ann_file)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}, char {exc.pos})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text: {exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    missing = [key for key in required_keys if key not in data]
    if missing:
        raise DataError(f"{path}: missing required top-level key(s) {missing}; present: {sorted(data)}")
    for key in ("images", "annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise DataError(f"{path}: top-level '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _parse_images(images: list[Any], source: str) -> dict[int, dict[str, Any]]:
    """Validate the ``images`` list into records keyed by image id (annotations filled in later)."""
    records: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise DataError(f"{source}: images[{index}] is not an object")
        missing = [key for key in _IMAGE_KEYS if key not in image]
        if missing:
            raise DataError(f"{source}: images[{index}] (image id {image.get('id')}) lacks {missing}")
        image_id, width, height = image["id"], image["width"], image["height"]
        if not _is_int(image_id):
            raise DataError(f"{source}: images[{index}] has a non-integer id {image_id!r}")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            raise DataError(
                f"{source}: image id {image_id} has invalid size width={width!r} height={height!r}"
            )
        if image_id in records:
            raise DataError(f"{source}: duplicate image id {image_id}")
        records[image_id] = {
            "id": image_id,
            "file_name": str(image["file_name"]),
            "width": width,
            "height": height,
            "annotations": [],
        }
    return records


def _clip_box(bbox: Any, width: int, height: int, where: str) -> list[float] | None:
    """COCO ``[x, y, w, h]`` to xyxy clipped to the image; ``None`` when narrower or shorter than 1 px."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DataError(f"{where} has a malformed bbox {bbox!r} (expected [x, y, w, h])")
    x, y, w, h = (float(v) for v in bbox)
    x1, x2 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y1, y2 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    return [x1, y1, x2, y2]


def _polygon_area(coords: Sequence[float]) -> float:
    """Shoelace area of a flat ``[x0, y0, x1, y1, ...]`` polygon."""
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _valid_polygon(part: Any, where: str) -> bool:
    """Whether one polygon part has at least 3 points and a non-zero area (malformed parts raise)."""
    if not (isinstance(part, list) and all(_is_number(v) for v in part)):
        raise DataError(f"{where} has a malformed polygon (expected a flat list of numbers)")
    return len(part) >= 6 and len(part) % 2 == 0 and _polygon_area(part) > 0.0


def rle_string_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths (a port of pycocotools' ``rleFrString``).

    Used to validate compressed masks at set-up: pycocotools' decoder does not bounds-check, so a
    corrupt string would otherwise overrun its buffer instead of raising.
    """
    values: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("RLE string ends in the middle of a value")
            char = ord(counts[pos]) - 48
            if not 0 <= char < 64:
                raise ValueError(f"invalid character {counts[pos]!r} in RLE string")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def _rle_area(rle: Any, width: int, height: int, where: str) -> int:
    """Validate an RLE segmentation against its image and return its foreground pixel count."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise DataError(f"{where} has an RLE segmentation without 'counts' and 'size'")
    if rle["size"] != [height, width]:
        raise DataError(
            f"{where}: RLE size {rle['size']} does not match the image's [height, width] {[height, width]}"
        )
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            runs = rle_string_counts(counts)
        except ValueError as exc:
            raise DataError(f"{where} has a corrupt compressed RLE: {exc}") from exc
    elif isinstance(counts, list) and all(_is_int(v) for v in counts):
        runs = counts
    else:
        raise DataError(f"{where}: RLE counts must be a string or a list of integers")
    if any(v < 0 for v in runs) or sum(runs) != height * width:
        raise DataError(
            f"{where} has a corrupt RLE: run lengths do not cover the {height}x{width} image exactly"
        )
    return sum(runs[1::2])


def _check_segmentation(segmentation: Any, width: int, height: int, where: str) -> tuple[Any, int]:
    """Validate a segmentation; return it without its degenerate polygon parts (``None`` when nothing
    usable remains: no valid polygon or an empty RLE) and the number of parts removed."""
    if isinstance(segmentation, dict):
        return (segmentation if _rle_area(segmentation, width, height, where) > 0 else None), 0
    if segmentation is None or isinstance(segmentation, list):
        parts = [part for part in segmentation or [] if _valid_polygon(part, where)]
        return (parts or None), len(segmentation or []) - len(parts)
    raise DataError(f"{where} has a segmentation that is neither polygons nor RLE")


def _parse_annotations(
    annotations: list[Any],
    records: dict[int, dict[str, Any]],
    category_map: CategoryMap,
    source: str,
    stats: SplitStats,
) -> None:
    """Validate every annotation and attach the usable non-crowd ones to their image records.

    Crowd regions are validated but left out of the targets (the json keeps them for evaluation);
    degenerate boxes, polygons and empty masks are dropped and counted in ``stats``.
    """
    seen: set[int] = set()
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(f"{source}: annotations[{index}] is not an object")
        missing = [key for key in _ANNOTATION_KEYS if key not in ann]
        if missing:
            raise DataError(f"{source}: annotations[{index}] (annotation id {ann.get('id')}) lacks {missing}")
        ann_id, image_id, cat_id = ann["id"], ann["image_id"], ann["category_id"]
        where = f"{source}: annotation id {ann_id}"
        if ann_id in seen:
            raise DataError(f"{where} is duplicated")
        seen.add(ann_id)
        record = records.get(image_id)
        if record is None:
            raise DataError(f"{where} refers to image id {image_id!r}, which is not in 'images'")
        if cat_id not in category_map.cat_ids:
            raise DataError(f"{where} (image id {image_id}) has unknown category id {cat_id!r}")
        width, height = record["width"], record["height"]
        box = _clip_box(ann["bbox"], width, height, where)
        segmentation, dropped_parts = _check_segmentation(ann.get("segmentation"), width, height, where)
        if ann.get("iscrowd", 0):
            stats.crowd += 1
        elif box is None:
            stats.degenerate_boxes += 1
        elif segmentation is None:
            if isinstance(ann.get("segmentation"), dict):
                stats.empty_rles += 1
            else:
                stats.degenerate_polygons += 1
        else:
            stats.degenerate_polygon_parts += dropped_parts
            label = category_map.cat_id_to_label(cat_id)
            record["annotations"].append({"bbox": box, "label": label, "segmentation": segmentation})
            stats.instances += 1


def _check_image_files(img_dir: Path, file_names: Sequence[str], source: str) -> None:
    """Refuse a split whose image files are not all present (one directory listing, no per-file stat)."""
    present = set(os.listdir(img_dir)) if img_dir.is_dir() else set()
    missing = [
        img_dir / name
        for name in file_names
        if (name not in present if os.sep not in name and "/" not in name else not (img_dir / name).is_file())
    ]
    if missing:
        listed = ", ".join(str(path) for path in missing[:_MISSING_LISTED])
        raise DataError(
            f"{source}: {len(missing)} of {len(file_names)} image files are missing under {img_dir}; first: {listed}"
        )


class _PackedRecords:
    """Per-image records pickled into a single numpy byte buffer.

    DataLoader workers fork the dataset; a list of Python dicts would be copied page by page as reference
    counts change (copy-on-read), multiplying host memory by the number of workers on COCO-sized splits.
    """

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        blobs = [pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL) for record in records]
        self._ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._ends):
            raise IndexError(f"record index {index} out of range 0..{len(self._ends) - 1}")
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._buffer[start : int(self._ends[index])].tobytes())


def _segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One RLE for a validated segmentation: polygons are merged, uncompressed RLE is compressed."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def encode_masks(segmentations: Sequence[Any], height: int, width: int) -> EncodedMasks:
    """Validated COCO segmentations as RLEs, decoded later at the size they are needed."""
    return EncodedMasks([_segmentation_to_rle(seg, height, width) for seg in segmentations], height, width)


def build_target(record: Mapping[str, Any], *, masks: bool = True) -> dict[str, Any]:
    """The target of one image record (crowds and degenerate instances already removed), in
    ``tv_tensors``: ``boxes`` a ``BoundingBoxes`` (XYXY), ``masks`` the still encoded
    :class:`EncodedMasks` (absent with ``masks=False``). ``area`` is the mask area in the
    original image's pixels, as in the annotation file."""
    height, width = record["height"], record["width"]
    annotations = record["annotations"]
    encoded = encode_masks([ann["segmentation"] for ann in annotations], height, width)
    boxes = torch.tensor([ann["bbox"] for ann in annotations], dtype=torch.float32).reshape(-1, 4)
    target: dict[str, Any] = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        "labels": torch.tensor([ann["label"] for ann in annotations], dtype=torch.int64),
        "image_id": torch.tensor(record["id"], dtype=torch.int64),
        "area": encoded.area(),
        "iscrowd": torch.zeros(len(annotations), dtype=torch.int64),
        "orig_size": torch.tensor([height, width], dtype=torch.int64),
    }
    if masks:
        target["masks"] = encoded
    return target


def _plain(value: Any) -> Any:
    """A tv_tensor as the plain tensor it wraps (what the model and collate expect)."""
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def _storages(image: Any, target: Mapping[str, Any]) -> frozenset[int]:
    """Addresses of the memory the tensors of a sample live in."""
    values = [image, *target.values()]
    return frozenset(v.untyped_storage().data_ptr() for v in values if isinstance(v, torch.Tensor))


def _own(value: Any, cached: frozenset[int]) -> Any:
    """:func:`_plain`, copied when its memory is in ``cached``: the caller may modify a returned tensor,
    and a DataLoader worker moves it into shared memory, but the cached one must stay as it is."""
    value = _plain(value)
    if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() in cached:
        return value.clone()
    return value


def _log_stats(name: str, source: str, stats: SplitStats, drop_empty: bool) -> None:
    """Report what set-up kept and dropped; a warning when annotations had to be dropped."""
    dropped = (
        stats.degenerate_boxes + stats.degenerate_polygons + stats.empty_rles + stats.degenerate_polygon_parts
    )
    empty = f"{stats.empty_images} without annotations {'dropped' if drop_empty else 'kept'}"
    LOGGER.log(
        logging.WARNING if dropped else logging.INFO,
        "%s (%s): %d of %d images used (%s), %d instances; %d crowd regions excluded from targets; "
        "dropped %d degenerate boxes, %d degenerate polygons, %d empty RLE masks, %d degenerate polygon parts",
        name,
        source,
        stats.kept_images,
        stats.images,
        empty,
        stats.instances,
        stats.crowd,
        stats.degenerate_boxes,
        stats.degenerate_polygons,
        stats.empty_rles,
        stats.degenerate_polygon_parts,
    )


class CocoInstanceDataset(Dataset[tuple[torch.Tensor, Target]]):
    """One COCO-format split yielding ``(image, target)`` pairs.

    Construction loads and validates the whole annotation file and checks that every image file
    exists; images and masks are decoded per item. ``category_map`` pins the label mapping to another
    split's (the files must then declare identical categories); without it the file's own categories
    define it. ``drop_empty`` removes images without usable annotations (training only), and
    ``require_annotations=False`` accepts image-info files such as COCO test-dev (empty targets).

    Items are produced with ``torchvision.transforms.v2``: ``resize`` (a
    :class:`~msrcnn.data.transforms.ResizeToInput`, training) brings image, boxes and masks to the
    detector's input size, decoding the masks directly at that size, and marks the target
    ``at_input_size`` so the model does not resize again; ``transforms`` (v2, e.g. a flip) follow.
    ``with_masks=False`` leaves the masks out of the targets (evaluation reads the json instead).
    Images and targets come out as plain tensors.

    With a :class:`~msrcnn.data.transforms.ResizeToInput` ``resize``, the resized image and target
    of each (image, input size) are kept in memory and reused by later epochs (only the random
    ``transforms`` run again) when the whole split at every input size fits in ``cache_bytes``
    (an upper bound is computed from the image sizes and instance counts); each DataLoader worker
    keeps its own cache, which lasts with ``persistent_workers``. ``cache_bytes=0`` turns it off.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike[str],
        img_dir: str | os.PathLike[str],
        *,
        category_map: CategoryMap | None = None,
        transforms: Transform | None = None,
        resize: Transform | None = None,
        with_masks: bool = True,
        drop_empty: bool = False,
        require_annotations: bool = True,
        name: str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        self.transforms = transforms
        self.resize = resize
        self.with_masks = with_masks
        self.name = name or self.ann_file.stem
        source = str(self.ann_file)
        required = ("images", "annotations", "categories") if require_annotations else ("images",)
        data = load_annotation_file(self.ann_file, required)
        self.category_map = self._resolve_categories(data, category_map, source)
        self.has_annotations = "annotations" in data
        records = _parse_images(data["images"], source)
        self.stats = SplitStats(images=len(records))
        _parse_annotations(data.get("annotations", []), records, self.category_map, source, self.stats)
        kept = list(records.values())
        _check_image_files(self.img_dir, [record["file_name"] for record in kept], source)
        self.stats.empty_images = sum(not record["annotations"] for record in kept)
        if drop_empty:
            kept = [record for record in kept if record["annotations"]]
        self.stats.kept_images = len(kept)
        self.image_ids = np.array([record["id"] for record in kept], dtype=np.int64)
        self._sizes = np.array(
            [(record["height"], record["width"]) for record in kept], dtype=np.int64
        ).reshape(-1, 2)
        boxes = np.array([ann["bbox"] for record in kept for ann in record["annotations"]], dtype=np.float64)
        boxes = boxes.reshape(-1, 4)
        self._object_sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(
            np.float32
        )
        self._instance_counts = np.array([len(record["annotations"]) for record in kept], dtype=np.int64)
        self._records = _PackedRecords(kept)
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[tuple[int, int, int], tuple[Any, dict[str, Any], frozenset[int]]] = {}
        self._cache_key: tuple[Any, ...] | None = None
        self._cache_fits = False
        self.cache_hits = 0
        _log_stats(self.name, source, self.stats, drop_empty)

    @staticmethod
    def _resolve_categories(
        data: Mapping[str, Any], category_map: CategoryMap | None, source: str
    ) -> CategoryMap:
        """The file's own category map, or the given one after checking the file agrees with it."""
        if "categories" not in data:
            if category_map is None:
                raise DataError(
                    f"{source}: missing required top-level key ['categories'] and no reference split"
                )
            return category_map
        own = CategoryMap.from_categories(data["categories"], source)
        if category_map is not None and own != category_map:
            raise DataError(
                f"{source}: categories differ from the reference split's "
                f"(ids {list(own.cat_ids)} vs {list(category_map.cat_ids)}, names {list(own.names)} vs "
                f"{list(category_map.names)})"
            )
        return own

    def __len__(self) -> int:
        return len(self._records)

    def __getstate__(self) -> dict[str, Any]:
        # Workers started by pickling (spawn) build their own cache; a forked worker starts with a copy.
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_cache_key"] = None
        return state

    def image_sizes(self) -> np.ndarray:
        """``[N, 2]`` heights and widths of the images, from the annotation file."""
        return self._sizes.copy()

    def object_sizes(self) -> np.ndarray:
        """``sqrt(box area)`` of every instance in the targets (original pixels)."""
        return self._object_sizes.copy()

    def aspect_ratios(self) -> np.ndarray:
        """Width / height of every image, from the annotation file (no image is opened)."""
        return self._sizes[:, 1] / self._sizes[:, 0]

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        """Image (a ``tv_tensors.Image``) and target of one item as stored: nothing resized or decoded."""
        record = self._records[index]
        image = tv_tensors.Image(
            read_image(self.img_dir / record["file_name"], record["id"], (record["height"], record["width"]))
        )
        return image, build_target(record, masks=self.with_masks)

    def cache_fits(self) -> bool:
        """Whether the resized split, at every input size ``resize`` can draw, fits in ``cache_bytes``
        (upper bound: float32 RGB image and one uint8 plane per instance, at each size)."""
        resize = self.resize
        if not isinstance(resize, ResizeToInput) or self.cache_bytes <= 0:
            return False
        key = (tuple(resize.min_sizes), resize.max_size, self.cache_bytes, self.with_masks)
        if key != self._cache_key:  # the input size changed (set_input_size): start again
            self._cache.clear()
            self._cache_key = key
            per_pixel = 12 + (self._instance_counts if self.with_masks else 0)
            total = 0
            for min_size in set(resize.min_sizes):
                scale = np.minimum(
                    min_size / self._sizes.min(axis=1), resize.max_size / self._sizes.max(axis=1)
                )
                heights = (self._sizes[:, 0] * scale).astype(np.int64)
                widths = (self._sizes[:, 1] * scale).astype(np.int64)
                total += int((per_pixel * (heights + 1) * (widths + 1) + 4096).sum())
            self._cache_fits = total <= self.cache_bytes
        return self._cache_fits

    def _resized(self, index: int) -> tuple[Any, dict[str, Any], frozenset[int]]:
        """Image and target at the input size drawn for this item (from the cache when possible), and
        the memory of the cached tensors among them (see :func:`_own`)."""
        resize = self.resize
        if not self.cache_fits():
            image, target = resize(*self._load(index))
            target["at_input_size"] = torch.tensor(True)
            return image, target, frozenset()
        assert isinstance(resize, ResizeToInput)
        height, width = (int(side) for side in self._sizes[index])
        size = resize.draw_size(height, width)
        key = (index, *size)
        cached = self._cache.get(key)
        if cached is None:
            image, target = resize.at_size(self._load(index), size)
            target["at_input_size"] = torch.tensor(True)
            if isinstance(target.get("masks"), EncodedMasks):
                target["masks"] = tv_tensors.Mask(target["masks"].decode())
            self._cache[key] = cached = (image, target, _storages(image, target))
        else:
            self.cache_hits += 1
        return cached[0], dict(cached[1]), cached[2]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        cached: frozenset[int] = frozenset()
        if self.resize is not None:
            image, target, cached = self._resized(index)
        else:
            image, target = self._load(index)
        if isinstance(target.get("masks"), EncodedMasks):
            target["masks"] = tv_tensors.Mask(target["masks"].decode())
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return _own(image, cached), {key: _own(value, cached) for key, value in target.items()}
