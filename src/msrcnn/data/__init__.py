"""Data layer: COCO-format loading and validation, the synthetic ``shapes`` set, transforms, samplers
and the LightningDataModule. Independent of the model code."""

from msrcnn.data.coco import (
    CategoryMap,
    CocoInstanceDataset,
    SplitSpec,
    SplitStats,
    coco2017_splits,
    decode_masks,
    load_annotation_file,
)
from msrcnn.data.datamodule import DetectionDataModule, collate
from msrcnn.data.errors import DataError
from msrcnn.data.images import read_image
from msrcnn.data.samplers import GroupedBatchSampler, InferenceSampler, create_aspect_ratio_groups
from msrcnn.data.shapes import CATEGORIES as SHAPES_CATEGORIES
from msrcnn.data.shapes import generate_shapes, shapes_splits
from msrcnn.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomShortSideResize,
    build_train_transforms,
    hflip,
    resize,
)

__all__ = [
    "SHAPES_CATEGORIES",
    "CategoryMap",
    "CocoInstanceDataset",
    "Compose",
    "DataError",
    "DetectionDataModule",
    "GroupedBatchSampler",
    "InferenceSampler",
    "RandomHorizontalFlip",
    "RandomShortSideResize",
    "SplitSpec",
    "SplitStats",
    "build_train_transforms",
    "coco2017_splits",
    "collate",
    "create_aspect_ratio_groups",
    "decode_masks",
    "generate_shapes",
    "hflip",
    "load_annotation_file",
    "read_image",
    "resize",
    "shapes_splits",
]
