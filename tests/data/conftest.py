"""Fixtures for the data-layer tests: tiny COCO files and images written into tmp_path, and one small
generated shapes dataset shared by the session."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from msrcnn.data import generate_shapes

# Non-contiguous ids, listed out of order, like real files.
CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]


def _square_rle(height: int, width: int, x0: int, y0: int, side: int) -> dict[str, Any]:
    """Compressed RLE (string counts) of a filled square."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + side, x0 : x0 + side] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(height: int, width: int, x0: int, y0: int, w: int, h: int) -> dict[str, Any]:
    """Uncompressed RLE (list counts, column-major) of a filled rectangle, as COCO writes crowds."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0 : y0 + h, x0 : x0 + w] = 1
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
    counts = np.diff(np.concatenate(([0], changes))).tolist()
    return {"size": [height, width], "counts": counts}


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Write a random image of the given size and PIL mode (format from the suffix)."""

    def write(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> Path:
        rng = np.random.default_rng(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
        elif mode == "P":
            img = rgb.quantize(16)
        else:
            img = rgb.convert(mode)
        img.save(path)
        return path

    return write


@pytest.fixture
def write_json() -> Callable[[Path, Any], Path]:
    """Write an object as JSON, creating parent folders."""

    def write(path: Path, obj: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        return path

    return write


@pytest.fixture
def tiny_coco(
    tmp_path: Path, write_image: Callable[..., Path], write_json: Callable[..., Path]
) -> SimpleNamespace:
    """A four-image COCO split covering every segmentation encoding, a crowd, degenerate annotations and
    images without annotations. Returns the paths, the json dict and a writer for variants of it."""
    img_dir = tmp_path / "images"
    sizes = {11: (40, 30), 22: (48, 32), 33: (24, 24), 44: (32, 20)}  # id: (width, height)
    images = [
        {"id": image_id, "file_name": f"img_{image_id}.png", "width": w, "height": h}
        for image_id, (w, h) in sizes.items()
    ]
    for image in images:
        write_image(img_dir / image["file_name"], image["width"], image["height"], seed=image["id"])
    annotations = [
        # image 11: a two-part polygon, a compressed RLE and a crowd region
        {
            "id": 1,
            "image_id": 11,
            "category_id": 90,
            "bbox": [2, 2, 20, 12],
            "iscrowd": 0,
            "area": 100.0,
            "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8], [10, 6, 22, 6, 22, 14, 10, 14]],
        },
        {
            "id": 2,
            "image_id": 11,
            "category_id": 1,
            "bbox": [25, 10, 8, 8],
            "iscrowd": 0,
            "area": 64.0,
            "segmentation": _square_rle(30, 40, 25, 10, 8),
        },
        {
            "id": 3,
            "image_id": 11,
            "category_id": 5,
            "bbox": [0, 20, 10, 5],
            "iscrowd": 1,
            "area": 50.0,
            "segmentation": _uncompressed_rle(30, 40, 0, 20, 10, 5),
        },
        # image 22: an uncompressed RLE, a degenerate box and a degenerate polygon
        {
            "id": 4,
            "image_id": 22,
            "category_id": 5,
            "bbox": [4, 3, 9, 7],
            "iscrowd": 0,
            "area": 63.0,
            "segmentation": _uncompressed_rle(32, 48, 4, 3, 9, 7),
        },
        {
            "id": 5,
            "image_id": 22,
            "category_id": 1,
            "bbox": [5, 5, 0.5, 10],
            "iscrowd": 0,
            "area": 5.0,
            "segmentation": [[5, 5, 5.5, 5, 5.5, 15, 5, 15]],
        },
        {
            "id": 6,
            "image_id": 22,
            "category_id": 1,
            "bbox": [5, 5, 10, 10],
            "iscrowd": 0,
            "area": 0.0,
            "segmentation": [[5, 5, 10, 10, 15, 15]],
        },
        # image 33: only a crowd region, so no training target; image 44: nothing at all
        {
            "id": 7,
            "image_id": 33,
            "category_id": 90,
            "bbox": [1, 1, 5, 5],
            "iscrowd": 1,
            "area": 25.0,
            "segmentation": _uncompressed_rle(24, 24, 1, 1, 5, 5),
        },
    ]
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    ann_file = write_json(tmp_path / "annotations" / "instances.json", data)

    def variant(name: str, **changes: Any) -> Path:
        """Write a modified copy of the json (top-level keys replaced) next to the original."""
        return write_json(tmp_path / "annotations" / name, {**data, **changes})

    return SimpleNamespace(ann_file=ann_file, img_dir=img_dir, data=data, root=tmp_path, variant=variant)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shapes dataset (24 train / 8 val images of 160 px), shared by the session."""
    return generate_shapes(tmp_path_factory.mktemp("shapes"), num_train=24, num_val=8, image_size=160, seed=0)
