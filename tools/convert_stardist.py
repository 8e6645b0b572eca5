"""Convert the nuclei image that the ``stardist`` wheel ships into a small COCO-format dataset.

``stardist`` (a dev dependency, used for its data only; never imported) ships ``data/images/img2d.tif``,
a 512 x 512 fluorescence image from the 2018 Data Science Bowl (Caicedo et al., Nature Methods 2019)
with ``mask2d.tif``, its instance label image (125 nuclei, about 20 px across). This script tiles it
into a real-data instance segmentation set:

* ``train``: overlapping ``--tile`` x ``--tile`` crops of the left part (x < 384), step ``--stride``;
* ``val``: the right part (x >= 384) in two 256 x 128 crops, so validation pixels are never trained on
  (nuclei cut by the x = 384 line appear partly in both);

each nucleus as a compressed RLE (fragments under ``--min-area`` px at crop borders are left out), the
images as 8-bit grayscale PNGs. Run ``python tools/convert_stardist.py OUT_DIR``; it writes
``OUT_DIR/{train,val}.json`` and ``OUT_DIR/images/``, atomically per file, and exits 2 with one line
when the package or its files are missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

SPLIT_X = 384
CATEGORIES = [{"id": 1, "name": "nucleus"}]


class ConversionError(RuntimeError):
    """Missing package or unreadable files: reported as one line, exit status 2."""


def stardist_images_dir() -> Path:
    """``stardist/data/images`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            "the 'stardist' package is not installed (it is in the dev group: uv sync --group dev)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
    for name in ("img2d.tif", "mask2d.tif"):
        if not (folder / name).is_file():
            raise ConversionError(f"{folder / name}: not found in the installed stardist package")
    return folder


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img)
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc})") from exc


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The image as uint8 (1st-99.8th percentile stretched to 0-255) and the int32 label image."""
    folder = stardist_images_dir()
    image = _read(folder / "img2d.tif").astype(np.float64)
    labels = _read(folder / "mask2d.tif").astype(np.int32)
    if image.shape != labels.shape or image.ndim != 2:
        raise ConversionError(f"{folder}: image {image.shape} and mask {labels.shape} do not match")
    low, high = np.percentile(image, (1.0, 99.8))
    image8 = np.clip((image - low) / max(high - low, 1e-6) * 255.0, 0, 255).round().astype(np.uint8)
    return image8, labels


def _crops(
    height: int, width: int, x0: int, x1: int, tile_h: int, tile_w: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """``(y, x, h, w)`` crops covering ``x0 <= x < x1`` with the given step (the last one flush right/bottom)."""
    xs = list(range(x0, x1 - tile_w + 1, stride)) or [x0]
    ys = list(range(0, height - tile_h + 1, stride)) or [0]
    if xs[-1] != x1 - tile_w:
        xs.append(x1 - tile_w)
    if ys[-1] != height - tile_h:
        ys.append(height - tile_h)
    return [(y, x, tile_h, tile_w) for y in ys for x in xs]


def _write_atomic(path: Path, write) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert(out_dir: str | Path, *, tile: int = 256, stride: int = 64, min_area: int = 16) -> dict[str, Path]:
    """Write the train/val COCO files and images under ``out_dir``; returns the annotation files."""
    image, labels = load_nuclei()
    height, width = image.shape
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": _crops(height, width, 0, SPLIT_X, tile, tile, stride),
        "val": [(y, SPLIT_X, height // 2, width - SPLIT_X) for y in (0, height // 2)],
    }
    written = {}
    for split, crops in splits.items():
        images, annotations = [], []
        for index, (y, x, h, w) in enumerate(crops):
            image_id = index + 1
            file_name = f"{split}_{image_id:03d}.png"
            crop = np.ascontiguousarray(image[y : y + h, x : x + w])
            _write_atomic(
                img_dir / file_name,
                lambda tmp, crop=crop: Image.fromarray(crop, mode="L").save(tmp, format="PNG"),
            )
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
            tile_labels = labels[y : y + h, x : x + w]
            ids = np.unique(tile_labels)
            ids = ids[ids > 0]
            if ids.size == 0:
                continue
            masks = (tile_labels[:, :, None] == ids[None, None, :]).astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(masks))
            areas = mask_utils.area(rles)
            boxes = mask_utils.toBbox(rles)
            for k in np.flatnonzero(areas >= min_area):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": [float(v) for v in boxes[k]],
                        "area": float(areas[k]),
                        "iscrowd": 0,
                        "segmentation": {"size": [h, w], "counts": rles[k]["counts"].decode("ascii")},
                    }
                )
        ann_file = out / f"{split}.json"
        payload = {"images": images, "annotations": annotations, "categories": CATEGORIES}
        _write_atomic(ann_file, lambda tmp, payload=payload: Path(tmp).write_text(json.dumps(payload)))
        written[split] = ann_file
        print(f"{split}: {len(images)} images, {len(annotations)} nuclei -> {ann_file}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for train.json, val.json and images/")
    parser.add_argument("--tile", type=int, default=256, help="training crop side in px (default 256)")
    parser.add_argument(
        "--stride", type=int, default=64, help="step between training crops in px (default 64)"
    )
    parser.add_argument(
        "--min-area", type=int, default=16, help="smallest kept nucleus fragment in px (default 16)"
    )
    args = parser.parse_args(argv)
    if not 32 <= args.tile <= SPLIT_X or args.stride <= 0:
        parser.error(f"--tile must be in 32..{SPLIT_X} and --stride positive, got {args.tile}, {args.stride}")
    try:
        convert(args.out_dir, tile=args.tile, stride=args.stride, min_area=args.min_area)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
