"""COCO-format instance segmentation: split specs and the dataset.

The annotation file is parsed and checked completely when a :class:`CocoInstanceDataset` is built
(:mod:`msrcnn.data.annotations`), so broken input fails at set-up with a :class:`DataError` naming the
file and the offending id rather than in the middle of an epoch. Only images and masks are decoded
lazily, per item (their RLEs: :mod:`msrcnn.data.rle`).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from msrcnn.data.annotations import (
    CategoryMap,
    SplitStats,
    check_image_files,
    load_annotation_file,
    parse_annotations,
    parse_images,
)
from msrcnn.data.errors import LOGGER, DataError
from msrcnn.data.images import read_image
from msrcnn.data.masks import EncodedMasks
from msrcnn.data.rle import encode_segmentations
from msrcnn.data.transforms import ResizeToInput
from msrcnn.ops.mask_crops import MaskCrops

Target = dict[str, torch.Tensor]

DEFAULT_CACHE_BYTES = 512 * 2**20
"""Per process: the resized training split is cached when it fits (see :class:`CocoInstanceDataset`)."""
Transform = Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]


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


def build_target(record: Mapping[str, Any], *, masks: bool = True) -> dict[str, Any]:
    """The target of one image record (crowds and degenerate instances already removed), in
    ``tv_tensors``: ``boxes`` a ``BoundingBoxes`` (XYXY), ``masks`` the still encoded
    :class:`EncodedMasks` (absent with ``masks=False``). ``area`` is the mask area in the
    original image's pixels, as in the annotation file."""
    height, width = record["height"], record["width"]
    annotations = record["annotations"]
    encoded = encode_segmentations([ann["segmentation"] for ann in annotations], height, width)
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


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, MaskCrops):
        return [value.values, value.windows]
    return [value] if isinstance(value, torch.Tensor) else []


def _storages(image: Any, target: Mapping[str, Any]) -> frozenset[int]:
    """Addresses of the memory the tensors of a sample live in."""
    values = [t for v in (image, *target.values()) for t in _tensors(v)]
    return frozenset(v.untyped_storage().data_ptr() for v in values)


def _own(value: Any, cached: frozenset[int]) -> Any:
    """:func:`_plain`, copied when its memory is in ``cached``: the caller may modify a returned tensor,
    and a DataLoader worker moves it into shared memory, but the cached one must stay as it is."""
    value = _plain(value)
    if any(t.untyped_storage().data_ptr() in cached for t in _tensors(value)):
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
        records = parse_images(data["images"], source)
        self.stats = SplitStats(images=len(records))
        parse_annotations(data.get("annotations", []), records, self.category_map, source, self.stats)
        kept = list(records.values())
        check_image_files(self.img_dir, [record["file_name"] for record in kept], source)
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
            target["at_input_size"] = True  # a Python bool: reading it on a GPU run costs no host sync
            return image, target, frozenset()
        assert isinstance(resize, ResizeToInput)
        height, width = (int(side) for side in self._sizes[index])
        size = resize.draw_size(height, width)
        key = (index, *size)
        cached = self._cache.get(key)
        if cached is None:
            image, target = resize.at_size(self._load(index), size)
            target["at_input_size"] = True  # a Python bool: reading it on a GPU run costs no host sync
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
