"""A COCO-format stand-in for microscopy data: large grayscale images, many small instances.

Tests and ``benchmarks/bench_data.py`` use it to reproduce the cost profile of real cell/nuclei sets
(e.g. 700 x 1100 px with 80-190 nuclei of about 20 px) without shipping one: blob-like instances of
two classes, half stored as polygons and half as compressed RLE, drawn into 8-bit grayscale PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from msrcnn.data.masks import EncodedMasks

__all__ = ["CROWDED_CATEGORIES", "generate_crowded"]

CROWDED_CATEGORIES = ({"id": 1, "name": "nucleus"}, {"id": 2, "name": "mitosis"})


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> list[float]:
    """A wobbly closed outline of 18 points around ``(cx, cy)``."""
    angles = np.linspace(0, 2 * np.pi, 18, endpoint=False)
    radii = radius * rng.uniform(0.75, 1.15, size=angles.size)
    ratio = rng.uniform(0.7, 1.0)
    tilt = rng.uniform(0, np.pi)
    x = radii * np.cos(angles)
    y = radii * ratio * np.sin(angles)
    xs = cx + x * np.cos(tilt) - y * np.sin(tilt)
    ys = cy + x * np.sin(tilt) + y * np.cos(tilt)
    return np.round(np.stack([xs, ys], axis=1).ravel(), 2).tolist()


def generate_crowded(
    root: str | Path,
    *,
    num_images: int = 4,
    height: int = 700,
    width: int = 1100,
    min_instances: int = 80,
    max_instances: int = 190,
    radius: tuple[float, float] = (7.0, 13.0),
    seed: int = 0,
    name: str = "train",
) -> tuple[Path, Path]:
    """Write ``<root>/<name>.json`` and ``<root>/<name>/*.png``; returns ``(ann_file, img_dir)``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    img_dir = root / name
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_index in range(num_images):
        image_id = image_index + 1
        count = int(rng.integers(min_instances, max_instances + 1))
        centres = rng.uniform(
            (radius[1], radius[1]), (width - radius[1], height - radius[1]), size=(count, 2)
        )
        polygons = [
            _blob_polygon(rng, float(cx), float(cy), float(rng.uniform(*radius))) for cx, cy in centres
        ]
        rles = mask_utils.frPyObjects(polygons, height, width)
        masks = EncodedMasks(rles, height, width).decode().numpy()
        classes = rng.integers(1, 3, size=count)
        canvas = rng.normal(40.0, 6.0, size=(height, width))
        brightness = np.where(classes == 1, 150.0, 210.0)
        canvas = np.maximum(canvas, (masks * brightness[:, None, None]).max(axis=0))
        file_name = f"{image_id:04d}.png"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), mode="L").save(img_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        boxes = mask_utils.toBbox(rles)
        areas = mask_utils.area(rles)
        for k in range(count):
            if k % 2:
                segmentation = {"size": [height, width], "counts": rles[k]["counts"].decode("ascii")}
            else:
                segmentation = [polygons[k]]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(classes[k]),
                    "bbox": [round(float(v), 2) for v in boxes[k]],
                    "area": float(areas[k]),
                    "iscrowd": 0,
                    "segmentation": segmentation,
                }
            )
    ann_file = root / f"{name}.json"
    payload = {"images": images, "annotations": annotations, "categories": list(CROWDED_CATEGORIES)}
    ann_file.write_text(json.dumps(payload))
    return ann_file, img_dir
