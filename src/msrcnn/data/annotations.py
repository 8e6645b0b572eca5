"""COCO annotation files: reading them and checking every entry at set-up.

:func:`load_annotation_file` refuses missing files, invalid JSON and missing top-level keys;
:func:`parse_images` and :func:`parse_annotations` check every image and annotation entry (ids, sizes,
boxes, polygons, RLEs) and keep the usable instances, counting what they drop in :class:`SplitStats`;
:class:`CategoryMap` maps a file's category ids to the contiguous labels 1..K. Every problem is a
:class:`~msrcnn.data.errors.DataError` naming the file and the offending id.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msrcnn.data.errors import DataError
from msrcnn.data.rle import rle_string_counts

_IMAGE_KEYS = ("id", "file_name", "width", "height")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox")
_MISSING_LISTED = 5


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


def _check_entry(entry: Any, list_name: str, index: int, keys: Any, source: str) -> None:
    """An entry of the file's ``images`` or ``annotations`` list is an object with every key in ``keys``."""
    if not isinstance(entry, dict):
        raise DataError(f"{source}: {list_name}[{index}] is not an object")
    missing = [key for key in keys if key not in entry]
    if missing:
        what = "image" if list_name == "images" else "annotation"
        raise DataError(f"{source}: {list_name}[{index}] ({what} id {entry.get('id')}) lacks {missing}")


def parse_images(images: list[Any], source: str) -> dict[int, dict[str, Any]]:
    """Validate the ``images`` list into records keyed by image id (annotations filled in later)."""
    records: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(images):
        _check_entry(image, "images", index, _IMAGE_KEYS, source)
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


def parse_annotations(
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
        _check_entry(ann, "annotations", index, _ANNOTATION_KEYS, source)
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


def check_image_files(img_dir: Path, file_names: Sequence[str], source: str) -> None:
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
