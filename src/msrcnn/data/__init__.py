"""Data layer: COCO-format loading and validation, the synthetic ``shapes`` set, transforms, samplers
and the LightningDataModule. Independent of the model code.

``DetectionDataModule`` and ``collate`` are imported on first use: decoding an image
(:func:`read_image`, e.g. for ``msrcnn.Predictor``) does not load Lightning."""

from msrcnn.data.annotations import CategoryMap, SplitStats, load_annotation_file
from msrcnn.data.coco import CocoInstanceDataset, SplitSpec, coco2017_splits
from msrcnn.data.errors import DataError
from msrcnn.data.images import read_image
from msrcnn.data.masks import EncodedMasks
from msrcnn.data.rle import encode_segmentations
from msrcnn.data.samplers import GroupedBatchSampler, InferenceSampler, create_aspect_ratio_groups
from msrcnn.data.shapes import CATEGORIES as SHAPES_CATEGORIES
from msrcnn.data.shapes import generate_shapes, shapes_splits
from msrcnn.data.transforms import ResizeToInput, build_train_transforms, input_size

__all__ = [
    "SHAPES_CATEGORIES",
    "CategoryMap",
    "CocoInstanceDataset",
    "DataError",
    "DetectionDataModule",
    "EncodedMasks",
    "GroupedBatchSampler",
    "InferenceSampler",
    "ResizeToInput",
    "SplitSpec",
    "SplitStats",
    "build_train_transforms",
    "coco2017_splits",
    "collate",
    "create_aspect_ratio_groups",
    "encode_segmentations",
    "generate_shapes",
    "input_size",
    "load_annotation_file",
    "read_image",
    "shapes_splits",
]


def __getattr__(name: str):
    """``DetectionDataModule`` and ``collate`` (Lightning) are imported on first use."""
    if name in ("DetectionDataModule", "collate"):
        from msrcnn.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'msrcnn.data' has no attribute {name!r}")
