"""Convert the microscopy label images that three PyPI wheels ship into a small COCO-format dataset.

Three dev dependencies are used for their data files only (read with Pillow, never imported):

* ``stardist``: ``data/images/img2d.tif`` + ``mask2d.tif``, a 512 x 512 fluorescence image from the
  2018 Data Science Bowl (Caicedo et al., Nature Methods 2019) with 125 labelled nuclei;
* ``ngio``: ``resources/20200812-CardiomyocyteDifferentiation14-Cycle1_B03/raw.jpg`` + ``nuclei.png``,
  a 512 x 512 nuclei fluorescence image with 168 labelled nuclei;
* ``ndev-sampledata``: ``samples/scratch-assay-labeled-10T-2Ch.tiff``, a scratch assay, 10 time points
  of 576 x 210 px in 4 channels (page = t + 10 c): nuclei fluorescence with its nucleus label image
  (channels 0 and 2) and phase contrast with its cell label image (channels 1 and 3).

Categories: 1 ``nucleus`` (stardist, ngio, scratch channel 0), 2 ``cell`` (scratch channel 1); each
image holds one category. Every source image is stretched from its 1st to 99.5th percentile to an 8-bit
grayscale PNG. The split keeps validation pixels out of training: ``val`` is the right band of each
image (x >= 384 for stardist and ngio, x >= 432 for the scratch frames, all 10 time points), ``train``
the rest (instances cut by the line appear partly in both):

* ``train``: overlapping ``--tile`` x ``--tile`` crops of the train band, step ``--stride`` (the last
  crop flush with the band's right and the image's bottom edge; a side longer than the band is cut to
  it), tiles without an instance included;
* ``val``: the val band cut into ``ceil(height / --val-height)`` equal, non-overlapping full-width
  strips (512 px: 4 of 128 x 128; the 210 px scratch frames: 2 of 105 x 144).

Each instance is a compressed RLE; fragments under ``--min-area`` px at crop borders are left out.
Run ``python tools/convert_microscopy.py OUT_DIR [--sources stardist,ngio,scratch_nuclei,scratch_cells]``; it writes
``OUT_DIR/{train,val}.json`` and ``OUT_DIR/images/``, atomically per file, prints a one-line summary,
and exits 2 with one line when a package or its files are missing or the output cannot be written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = {1: "nucleus", 2: "cell"}
PERCENTILES = (1.0, 99.5)


class ConversionError(RuntimeError):
    """Missing package, unreadable files or unwritable output: one line, exit status 2."""


@dataclass(frozen=True)
class Frame:
    """One source image with its label image; ``x >= split_x`` is validation."""

    name: str
    image: np.ndarray  # uint8, H x W
    labels: np.ndarray  # int32, H x W, 0 = background
    category_id: int
    split_x: int


def package_dir(module: str, dist: str, note: str = "") -> Path:
    """The installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(
            f"the '{dist}' package is not installed (it is in the dev group: uv sync --group dev{note})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _file(folder: Path, name: str, dist: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise ConversionError(f"{path}: not found in the installed {dist} package")
    return path


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img)
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc})") from exc


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The 1st-99.5th percentile range stretched to 0-255."""
    image = image.astype(np.float64)
    low, high = np.percentile(image, PERCENTILES)
    return np.clip((image - low) / max(high - low, 1e-6) * 255.0, 0, 255).round().astype(np.uint8)


def _pair(name: str, image_path: Path, label_path: Path, split_x: int) -> Frame:
    image, labels = _read(image_path), _read(label_path)
    if image.ndim != 2 or image.shape != labels.shape:
        raise ConversionError(
            f"{image_path}: a 2-D grayscale image the shape of its labels {labels.shape} expected, got {image.shape}"
        )
    return Frame(name, to_uint8(image), labels.astype(np.int32), 1, split_x)


def load_stardist() -> list[Frame]:
    folder = package_dir("stardist", "stardist") / "data" / "images"
    img, mask = (_file(folder, n, "stardist") for n in ("img2d.tif", "mask2d.tif"))
    return [_pair("stardist", img, mask, 384)]


NGIO_FOLDER = "resources/20200812-CardiomyocyteDifferentiation14-Cycle1_B03"


def load_ngio() -> list[Frame]:
    folder = package_dir("ngio", "ngio", "; ngio needs Python >= 3.11") / NGIO_FOLDER
    img, mask = (_file(folder, n, "ngio") for n in ("raw.jpg", "nuclei.png"))
    return [_pair("ngio", img, mask, 384)]


SCRATCH_FILE = "samples/scratch-assay-labeled-10T-2Ch.tiff"
SCRATCH_T, SCRATCH_SHAPE = 10, (210, 576)
# name -> (image channel, label channel, category id); page index = t + SCRATCH_T * channel
SCRATCH_CHANNELS = {"nuclei": (0, 2, 1), "cells": (1, 3, 2)}


def load_scratch(channels: tuple[str, ...] = tuple(SCRATCH_CHANNELS)) -> list[Frame]:
    path = _file(package_dir("ndev_sampledata", "ndev-sampledata"), SCRATCH_FILE, "ndev-sampledata")
    try:
        with Image.open(path) as tiff:
            if tiff.n_frames != 4 * SCRATCH_T:
                raise ConversionError(f"{path}: {4 * SCRATCH_T} pages expected, got {tiff.n_frames}")
            pages = []
            for index in range(tiff.n_frames):
                tiff.seek(index)
                pages.append(np.array(tiff))
    except OSError as exc:
        raise ConversionError(f"{path}: cannot read ({exc})") from exc
    if any(page.shape != SCRATCH_SHAPE for page in pages):
        raise ConversionError(f"{path}: pages of {SCRATCH_SHAPE} px expected, got {pages[0].shape}")
    return [
        Frame(
            f"scratch_t{t:02d}_{name}",
            to_uint8(pages[t + SCRATCH_T * image_c]),
            pages[t + SCRATCH_T * label_c].astype(np.int32),
            category_id,
            432,
        )
        for name in channels
        for image_c, label_c, category_id in [SCRATCH_CHANNELS[name]]
        for t in range(SCRATCH_T)
    ]


SOURCES: dict[str, Callable[[], list[Frame]]] = {
    "stardist": load_stardist,
    "ngio": load_ngio,
    # the nucleus labels of the scratch assay are partial (some nuclei unlabelled): a source of its own
    "scratch_nuclei": lambda: load_scratch(("nuclei",)),
    "scratch_cells": lambda: load_scratch(("cells",)),
}


def train_crops(height: int, x1: int, tile: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y, x, h, w)`` crops covering ``x < x1`` with the given step (the last one flush right/bottom)."""
    tile_h, tile_w = min(tile, height), min(tile, x1)
    xs = list(range(0, x1 - tile_w + 1, stride))
    ys = list(range(0, height - tile_h + 1, stride))
    if xs[-1] != x1 - tile_w:
        xs.append(x1 - tile_w)
    if ys[-1] != height - tile_h:
        ys.append(height - tile_h)
    return [(y, x, tile_h, tile_w) for y in ys for x in xs]


def val_crops(height: int, width: int, x0: int, val_height: int) -> list[tuple[int, int, int, int]]:
    """``(y, x, h, w)``: ``x >= x0`` in ``ceil(height / val_height)`` equal full-width strips."""
    edges = np.linspace(0, height, math.ceil(height / val_height) + 1).round().astype(int)
    return [(int(y0), x0, int(y1 - y0), width - x0) for y0, y1 in zip(edges[:-1], edges[1:])]


def _write_atomic(path: Path, write) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _annotations(labels: np.ndarray, image_id: int, category_id: int, min_area: int) -> list[dict]:
    """Every label in the crop as a compressed RLE (all instances encoded at once)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return []
    h, w = labels.shape
    masks = (labels[:, :, None] == ids[None, None, :]).astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(masks))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    return [
        {
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [float(v) for v in boxes[k]],
            "area": float(areas[k]),
            "iscrowd": 0,
            "segmentation": {"size": [h, w], "counts": rles[k]["counts"].decode("ascii")},
        }
        for k in np.flatnonzero(areas >= min_area)
    ]


def convert(
    out_dir: str | Path,
    *,
    sources: tuple[str, ...] = tuple(SOURCES),
    tile: int = 128,
    stride: int = 64,
    val_height: int = 128,
    min_area: int = 16,
) -> str:
    """Write the train/val COCO files and images under ``out_dir``; returns the one-line summary."""
    frames = [frame for source in sources for frame in SOURCES[source]()]  # every read before any write
    used = sorted({frame.category_id for frame in frames})
    categories = [{"id": cid, "name": CATEGORIES[cid]} for cid in used]
    out = Path(out_dir)
    img_dir = out / "images"
    parts = []
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
        for split in ("train", "val"):
            images, annotations = [], []
            image_counts, instance_counts = dict.fromkeys(used, 0), dict.fromkeys(used, 0)
            for frame in frames:
                height, width = frame.image.shape
                crops = (
                    train_crops(height, frame.split_x, tile, stride)
                    if split == "train"
                    else val_crops(height, width, frame.split_x, val_height)
                )
                for y, x, h, w in crops:
                    image_id = len(images) + 1
                    file_name = f"{split}_{frame.name}_y{y:03d}_x{x:03d}.png"
                    crop = np.ascontiguousarray(frame.image[y : y + h, x : x + w])
                    _write_atomic(
                        img_dir / file_name,
                        lambda tmp, crop=crop: Image.fromarray(crop, mode="L").save(tmp, format="PNG"),
                    )
                    images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
                    found = _annotations(
                        frame.labels[y : y + h, x : x + w], image_id, frame.category_id, min_area
                    )
                    annotations.extend(found)
                    image_counts[frame.category_id] += 1
                    instance_counts[frame.category_id] += len(found)
            for index, annotation in enumerate(annotations, start=1):
                annotation["id"] = index
            payload = {"images": images, "annotations": annotations, "categories": categories}
            _write_atomic(out / f"{split}.json", lambda tmp, p=payload: Path(tmp).write_text(json.dumps(p)))
            per_images = ", ".join(f"{image_counts[c]} {CATEGORIES[c]}" for c in used)
            per_instances = ", ".join(f"{instance_counts[c]} {CATEGORIES[c]}" for c in used)
            parts.append(
                f"{split}: {len(images)} images ({per_images}), {len(annotations)} instances ({per_instances})"
            )
    except OSError as exc:
        raise ConversionError(f"{out}: cannot write the dataset ({exc})") from exc
    return f"{'; '.join(parts)} -> {out}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for train.json, val.json and images/")
    parser.add_argument(
        "--sources",
        default=",".join(SOURCES),
        help=f"comma-separated subset of {','.join(SOURCES)} (default: all)",
    )
    parser.add_argument("--tile", type=int, default=128, help="training crop side in px (default 128)")
    parser.add_argument(
        "--stride", type=int, default=64, help="step between training crops in px (default 64)"
    )
    parser.add_argument(
        "--val-height", type=int, default=128, help="largest validation strip height in px (default 128)"
    )
    parser.add_argument(
        "--min-area", type=int, default=16, help="smallest kept instance fragment in px (default 16)"
    )
    args = parser.parse_args(argv)
    sources = tuple(s.strip() for s in args.sources.split(","))
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        parser.error(
            f"--sources: {','.join(unknown) or 'empty'} unknown, expected a subset of {','.join(SOURCES)}"
        )
    if args.tile < 32 or args.stride <= 0 or args.val_height < 32 or args.min_area < 1:
        parser.error(
            "--tile and --val-height must be >= 32, --stride and --min-area positive, got "
            f"{args.tile}, {args.val_height}, {args.stride}, {args.min_area}"
        )
    try:
        summary = convert(
            args.out_dir,
            sources=tuple(dict.fromkeys(sources)),
            tile=args.tile,
            stride=args.stride,
            val_height=args.val_height,
            min_area=args.min_area,
        )
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
