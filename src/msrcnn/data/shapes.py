"""``shapes``: a deterministic synthetic COCO-format instance-segmentation dataset.

It is the project's embedded default dataset (the CPU demo trains on it in minutes), built so that
mask quality varies independently of how confident the classifier is, which is what Mask Scoring
R-CNN exploits: each class has its own hue family and shape, so a trained classifier is sure of the
class, while the masks are hard in ways the class says nothing about: partial occlusion (a later
object may hide up to half of an earlier one, never cutting it in pieces, and the mask is only the
visible part), objects cut by the image border (each object stays one piece), thin parts (the "L",
star points), holes (the ring), low-contrast and striped fills, blur and noise, on muted gradient
backgrounds with clutter that is not an object, in all three COCO size buckets.

Segmentations are polygons for unoccluded hole-free objects that lie inside the image (rasterised with
pycocotools, so the written polygon decodes to exactly the painted pixels) and compressed RLE
otherwise, so both code paths of the loader are exercised. Category ids are deliberately
non-contiguous, like COCO's, so the label mapping is exercised end to end too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from msrcnn.data.coco import SplitSpec
from msrcnn.data.errors import LOGGER

GENERATOR_VERSION = 4
CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "ellipse"),
    (2, "rectangle"),
    (4, "triangle"),
    (5, "star"),
    (7, "ring"),
    (9, "ell"),
)
# Target (pre-occlusion) object areas in pixels, per COCO size bucket: small < 32^2 <= medium < 96^2 <= large.
_AREA_BUCKETS = ((100.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, None))
_BUCKET_PROBS = np.array([0.15, 0.55, 0.3])
_LARGEST_SIDE_FRACTION = 0.8
_PLACEMENT_TRIES = 10
_MAX_OCCLUSION = 0.5  # of an earlier object's visible pixels, by a later one
_MIN_VISIBLE_PIXELS = 12
_MIN_VISIBLE_FRACTION = 0.15
_LOW_CONTRAST_PROB = 0.05
_HUE_JITTER = 0.04  # of the hue circle, around each class's own hue
_BACKGROUND_SATURATION = 0.25
_BLOB_PROB = 0.15
_MAX_STROKES = 1  # thin straight strokes of clutter per image
_NOISE_STD = (0.01, 0.03)
_STRIPES_PROB = 0.15
_BLUR_PROB = 0.2
_SPLITS = ("train", "val")

Polygon = np.ndarray  # (K, 2) vertices, x then y
UnitShape = tuple[list[Polygon], list[Polygon]]  # filled parts (unioned), holes (subtracted)


def _ellipse(rng: np.random.Generator) -> UnitShape:
    """An ellipse (40-gon) with axis ratio in [0.45, 1]."""
    t = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
    return [np.stack((np.cos(t), rng.uniform(0.45, 1.0) * np.sin(t)), axis=1)], []


def _rectangle(rng: np.random.Generator) -> UnitShape:
    """A rectangle with side ratio in [0.3, 1] (squares included)."""
    q = rng.uniform(0.3, 1.0)
    return [np.array([[-1.0, -q], [1.0, -q], [1.0, q], [-1.0, q]])], []


def _triangle(rng: np.random.Generator) -> UnitShape:
    """An irregular triangle: jittered angles and radii around an equilateral one."""
    angles = np.array([0.0, 2.0 * np.pi / 3.0, 4.0 * np.pi / 3.0]) + rng.uniform(-0.4, 0.4, 3)
    radii = rng.uniform(0.7, 1.0, 3)
    return [np.stack((radii * np.cos(angles), radii * np.sin(angles)), axis=1)], []


def _star(rng: np.random.Generator) -> UnitShape:
    """A 5- or 6-pointed star with inner radius ratio in [0.38, 0.6] (non-convex)."""
    points = int(rng.integers(5, 7))
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, rng.uniform(0.38, 0.6))
    return [np.stack((radii * np.cos(angles), radii * np.sin(angles)), axis=1)], []


def _ring(rng: np.random.Generator) -> UnitShape:
    """An elliptical annulus: the hole forces an RLE segmentation."""
    t = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
    outer = np.stack((np.cos(t), rng.uniform(0.75, 1.0) * np.sin(t)), axis=1)
    return [outer], [outer * rng.uniform(0.4, 0.7)]


def _ell(rng: np.random.Generator) -> UnitShape:
    """A thin "L": two overlapping bars, i.e. a two-part polygon."""
    thickness = rng.uniform(0.12, 0.3)
    height = rng.uniform(1.0, 2.0)
    horizontal = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, -1.0 + thickness], [-1.0, -1.0 + thickness]])
    vertical = np.array(
        [[-1.0, -1.0], [-1.0 + thickness, -1.0], [-1.0 + thickness, -1.0 + height], [-1.0, -1.0 + height]]
    )
    return [horizontal, vertical], []


_SHAPES: tuple[Callable[[np.random.Generator], UnitShape], ...] = (
    _ellipse,
    _rectangle,
    _triangle,
    _star,
    _ring,
    _ell,
)


def _shoelace(polygon: Polygon) -> float:
    """Area of a polygon given as (K, 2) vertices."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates of pixel centres, each (size, size)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


@functools.lru_cache(maxsize=16)
def _upsample_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid) linear-interpolation weights from ``grid`` control points to ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    low = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    frac = (pos - low).astype(np.float32)
    weights = np.zeros((size, grid), dtype=np.float32)
    weights[np.arange(size), low] = 1.0 - frac
    weights[np.arange(size), low + 1] = frac
    return weights


def _smooth_field(rng: np.random.Generator, size: int, grid: int, channels: int, scale: float) -> np.ndarray:
    """Low-frequency noise (size, size, channels): a random control grid, bilinearly upsampled."""
    control = rng.normal(0.0, scale, (grid, grid, channels)).astype(np.float32)
    weights = _upsample_matrix(size, grid)
    rows = np.tensordot(weights, control, axes=(1, 0))  # (size, grid, channels)
    return np.tensordot(rows, weights, axes=(1, 1)).transpose(0, 2, 1)  # (size, size, channels)


def _segment_distance(xs: np.ndarray, ys: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre to the segment p0-p1."""
    d = p1 - p0
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(xs - p0[0] - t * d[0], ys - p0[1] - t * d[1])


def _grey(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` muted colours (saturation at most ``_BACKGROUND_SATURATION``), (n, 3) in [0, 1]."""
    value = rng.uniform(0.2, 0.9, (n, 1))
    tint = rng.uniform(-1.0, 1.0, (n, 3))
    return np.clip(value + _BACKGROUND_SATURATION * value * tint, 0.0, 1.0).astype(np.float32)


def _class_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    """A saturated colour of the class's hue family (hues spread evenly over the classes, jittered)."""
    hue = (label / len(_SHAPES) + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 1.0
    saturation, value = rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0  # HSV -> RGB
    return (value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour gradient plus low-frequency noise, then clutter that is not an object:
    sometimes a translucent amorphous blob and a thin straight stroke of any colour."""
    xs, ys = _pixel_grid(size)
    low, high = _grey(rng, 2)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = ((xs - size / 2) * np.cos(angle) + (ys - size / 2) * np.sin(angle)) / size + 0.5
    image = low + (high - low) * t[..., None]
    image += _smooth_field(rng, size, int(rng.integers(3, 7)), 3, 0.04)
    if rng.random() < _BLOB_PROB:
        field = _smooth_field(rng, size, int(rng.integers(4, 9)), 1, 1.0)[..., 0]
        blob = field > np.quantile(field, rng.uniform(0.85, 0.97))
        alpha = rng.uniform(0.3, 0.8)
        image[blob] = (1.0 - alpha) * image[blob] + alpha * _grey(rng)[0]
    for _ in range(int(rng.integers(0, _MAX_STROKES + 1))):
        p0, p1 = rng.uniform(0.0, size, (2, 2))
        image[_segment_distance(xs, ys, p0, p1) < rng.uniform(0.5, 1.5)] = rng.uniform(0.0, 1.0, 3)
    return image


def _target_area(rng: np.random.Generator, size: int) -> float:
    """A log-uniform area from a random COCO size bucket, among those that fit in the image (the
    small bucket always does: image_size >= 16)."""
    largest = (_LARGEST_SIDE_FRACTION * size) ** 2
    ranges = [(lo, min(hi or largest, largest)) for lo, hi in _AREA_BUCKETS]
    feasible = np.array([hi > lo for lo, hi in ranges], dtype=np.float64)
    probs = _BUCKET_PROBS * feasible
    lo, hi = ranges[int(rng.choice(len(ranges), p=probs / probs.sum()))]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _place(rng: np.random.Generator, shape: UnitShape, area: float, size: int) -> UnitShape:
    """Rotate, scale (to about ``area`` pixels, at most ~the image) and position a unit shape.

    Centres may lie near the border so some objects are cut by it. Vertices are rounded to the
    precision they are written with, so the polygon in the json decodes to the painted pixels.
    """
    parts, holes = shape
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    unit_area = sum(_shoelace(p) for p in parts) - sum(_shoelace(h) for h in holes)
    reach = max(float(np.linalg.norm(p, axis=1).max()) for p in parts)
    scale = min(np.sqrt(area / unit_area), 0.55 * size / reach)
    margin = 0.35 * reach * scale
    centre = rng.uniform(margin, size - margin, 2)  # margin < 0.2 * size: the range is never empty

    def transform(polygon: Polygon) -> Polygon:
        return np.round(polygon @ rotation.T * scale + centre, 2)

    return [transform(p) for p in parts], [transform(h) for h in holes]


def _rasterize(polygons: list[Polygon], size: int) -> np.ndarray:
    """Union of polygons as a boolean (size, size) mask, rasterised by pycocotools like the loader."""
    rles = mask_utils.frPyObjects([p.ravel().tolist() for p in polygons], size, size)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, label: int) -> None:
    """Fill ``mask`` in place with the class's colour family, a gradient and, sometimes, stripes;
    sometimes blended into what it covers (low contrast), so boundaries are not always crisp."""
    rows, cols = np.nonzero(mask)
    xs, ys = cols.astype(np.float32), rows.astype(np.float32)
    base = _class_colour(rng, label)
    if rng.random() < _LOW_CONTRAST_PROB:
        base = 0.5 * base + 0.5 * image[rows, cols].mean(axis=0)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    along = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle)
    extent = max(float(np.abs(along).max()), 1.0)
    fill = base + (along / extent)[:, None] * rng.uniform(-0.15, 0.15, 3)
    if rng.random() < _STRIPES_PROB:
        period = rng.uniform(3.0, 10.0)
        stripes = np.sin(2.0 * np.pi * (xs * np.sin(angle) - ys * np.cos(angle)) / period)
        fill += 0.08 * stripes[:, None]
    image[rows, cols] = fill


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge replication."""
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    rows = (padded[:-2] + 2.0 * padded[1:-1] + padded[2:]) / 4.0
    return (rows[:, :-2] + 2.0 * rows[:, 1:-1] + rows[:, 2:]) / 4.0


def _max_occlusion(owner: np.ndarray, new: np.ndarray, num_drawn: int) -> float:
    """The largest fraction of an already drawn object's visible pixels that ``new`` would cover."""
    if num_drawn == 0:
        return 0.0
    visible = np.bincount(owner[owner >= 0], minlength=num_drawn)
    covered = np.bincount(owner[new & (owner >= 0)], minlength=num_drawn)
    return float((covered / np.maximum(visible, 1)).max())


def _num_components(mask: np.ndarray) -> int:
    """Number of 8-connected components of a boolean mask (union-find over its row runs)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0
    crop = mask[rows[0] : rows[-1] + 1]
    padded = np.zeros((crop.shape[0], crop.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = crop
    edges = np.diff(padded, axis=1)
    run_rows, starts = np.nonzero(edges == 1)  # row-major, so runs come sorted by row then column
    ends = np.nonzero(edges == -1)[1]  # exclusive
    parent = list(range(len(starts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(run_rows, np.arange(crop.shape[0] + 1))  # runs of row r: first[r]:first[r+1]
    for r in range(crop.shape[0] - 1):
        for i in range(first[r], first[r + 1]):
            for j in range(first[r + 1], first[r + 2]):
                if starts[i] <= ends[j] and starts[j] <= ends[i]:  # the runs touch, diagonals included
                    parent[find(i)] = find(j)
    return len({find(i) for i in range(len(parent))})


def _splits_an_object(owner: np.ndarray, new: np.ndarray) -> bool:
    """Whether ``new`` is in pieces (an "L" or a ring cut by the image border) or painting it would
    cut an already drawn object's visible part into pieces."""
    if _num_components(new) > 1:
        return True
    for slot in np.unique(owner[new & (owner >= 0)]):
        if _num_components((owner == slot) & ~new) > 1:
            return True
    return False


def _encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE with string counts (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _tight_bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, w, h]`` of a non-empty mask, in whole pixels."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def render_image(
    rng: np.random.Generator, size: int, num_objects: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image: returns the uint8 (size, size, 3) pixels and its annotations (without ids).

    Objects are painted roughly large-to-small (with random swaps) and each one's mask is what remains
    visible at the end; instances left with a tiny visible area are dropped.
    """
    image = _background(rng, size)
    labels = rng.integers(len(_SHAPES), size=num_objects)
    areas = np.array([_target_area(rng, size) for _ in range(num_objects)])
    order = np.argsort(-(np.log(areas) + rng.normal(0.0, 1.0, num_objects)), kind="stable")
    owner = np.full((size, size), -1, dtype=np.int16)
    drawn: list[tuple[int, UnitShape, np.ndarray]] = []
    for index in order:
        unit = _SHAPES[labels[index]](rng)
        # partial occlusion: never hide more than half of an earlier object, nor cut it in pieces (the
        # detector would find each piece as an object of its own, a part that no RoI head trains on)
        for _ in range(_PLACEMENT_TRIES):
            parts, holes = _place(rng, unit, float(areas[index]), size)
            full = _rasterize(parts, size)
            if holes:
                full &= ~_rasterize(holes, size)
            partial = _max_occlusion(owner, full, len(drawn)) <= _MAX_OCCLUSION
            if partial and not _splits_an_object(owner, full):
                break
        else:
            continue
        if not full.any():
            continue
        _paint(rng, image, full, int(labels[index]))
        owner[full] = len(drawn)
        drawn.append((int(labels[index]), (parts, holes), full))
    if rng.random() < _BLUR_PROB:
        image = _blur(image)
    image += rng.normal(0.0, rng.uniform(*_NOISE_STD), image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    annotations = []
    for slot, (label, (parts, holes), full) in enumerate(drawn):
        visible = owner == slot
        area, full_area = int(visible.sum()), int(full.sum())
        if area < max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * full_area):
            continue
        inside = all(((p >= 0) & (p <= size)).all() for p in parts)
        if area == full_area and not holes and inside:
            segmentation: Any = [p.ravel().tolist() for p in parts]
        else:
            segmentation = _encode_rle(visible)
        annotations.append(
            {
                "category_id": CATEGORIES[label][0],
                "segmentation": segmentation,
                "area": float(area),
                "bbox": _tight_bbox(visible),
                "iscrowd": 0,
            }
        )
    return pixels, annotations


def _write_split(out_dir: Path, split: str, num_images: int, params: dict[str, Any]) -> None:
    """Render one split's PNGs and its ``annotations/instances_<split>.json``."""
    size, seed = params["image_size"], params["seed"]
    split_code = _SPLITS.index(split)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True)
    split_rng = np.random.default_rng([seed, split_code, 2**31])
    num_empty = int(round(params["empty_fraction"] * num_images))
    empty = set(split_rng.permutation(num_images)[:num_empty].tolist())
    images, annotations = [], []
    for index in range(num_images):
        image_id = index + 1
        rng = np.random.default_rng([seed, split_code, index])
        num_objects = 0 if index in empty else int(rng.integers(1, params["max_objects"] + 1))
        pixels, anns = render_image(rng, size, num_objects)
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, format="PNG", compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {
        "info": {
            "description": "msrcnn synthetic shapes",
            "version": str(GENERATOR_VERSION),
            "params": params,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cat_id, "name": name, "supercategory": "shape"} for cat_id, name in CATEGORIES],
    }
    (out_dir / "annotations").mkdir(exist_ok=True)
    with (out_dir / "annotations" / f"instances_{split}.json").open("w") as handle:
        json.dump(coco, handle, separators=(",", ":"))


def _normalise_params(
    num_train: int, num_val: int, image_size: int, seed: int, max_objects: int, empty_fraction: float
) -> dict[str, Any]:
    """Validated, canonically typed generator parameters (what the cache key hashes)."""
    params = {
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "max_objects": int(max_objects),
        "empty_fraction": float(empty_fraction),
    }
    if params["num_train"] < 1 or params["num_val"] < 1:
        raise ValueError("num_train and num_val must be at least 1")
    if params["seed"] < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if params["image_size"] < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    if params["max_objects"] < 1:
        raise ValueError(f"max_objects must be at least 1, got {max_objects}")
    if not 0.0 <= params["empty_fraction"] <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    return params


def dataset_key(params: dict[str, Any]) -> str:
    """Directory name of a generated dataset: a short hash of the parameters and generator version."""
    blob = json.dumps({"generator_version": GENERATOR_VERSION, **params}, sort_keys=True).encode()
    return f"shapes-{hashlib.sha256(blob).hexdigest()[:12]}"


def generate_shapes(
    out_root: str | os.PathLike[str],
    *,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 160,
    seed: int = 0,
    max_objects: int = 9,
    empty_fraction: float = 0.05,
) -> Path:
    """Generate (once) the shapes dataset for these parameters under ``out_root`` and return its folder.

    The folder ``out_root/<key>`` only ever appears complete: it is built in a temporary folder beside
    it and renamed into place, so an interrupted run leaves no half dataset and concurrent runs (e.g.
    one per DDP rank) agree on one copy. Later calls with the same parameters return immediately.
    """
    params = _normalise_params(num_train, num_val, image_size, seed, max_objects, empty_fraction)
    root = Path(out_root)
    final = root / dataset_key(params)
    if (final / "params.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        for split in _SPLITS:
            _write_split(tmp, split, params[f"num_{split}"], params)
        (tmp / "params.json").write_text(
            json.dumps({"generator_version": GENERATOR_VERSION, **params}, indent=2)
        )
        tmp.chmod(0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "params.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info("generated shapes dataset %s in %.1f s", final, time.perf_counter() - started)
    return final


def shapes_splits(dataset_dir: str | os.PathLike[str]) -> dict[str, SplitSpec]:
    """Train and val :class:`SplitSpec` of a folder written by :func:`generate_shapes`."""
    base = Path(dataset_dir)
    return {
        split: SplitSpec(str(base / "annotations" / f"instances_{split}.json"), str(base / split))
        for split in _SPLITS
    }
