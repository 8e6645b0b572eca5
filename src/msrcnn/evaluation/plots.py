"""Figures of Mask Scoring R-CNN results, shared by the W&B callback, the notebook and predict.

Pure functions on numpy arrays and :class:`~msrcnn.evaluation.records.DetectionRecord` s. Figures
are matplotlib ``Figure`` objects on the Agg canvas, made outside pyplot (no global state, no
display, nothing to close); :func:`figure_to_array` renders one as an ``uint8 [H, W, 3]`` image.

* :func:`draw_detections`: an image with its predicted masks, boxes and per-instance class score,
  predicted MaskIoU and mask score; :func:`render_detections` gives it as pixels and
  :func:`save_image` writes pixels as an image file (``msrcnn.Prediction.draw`` / ``.save`` and
  ``src/predict.py``'s overlays).
* :func:`maskiou_scatter`: paper Figure 5, predicted vs GT MaskIoU.
* :func:`score_vs_maskiou`: paper Figure 2, class score (and mask score) vs GT MaskIoU.
* :func:`mask_gallery`: crops of chosen detections (e.g. the best and worst scored masks).

:func:`load_run_records` reads a finished run directory back into records for these plots.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import yaml
from faster_coco_eval.core import mask as mask_utils
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from msrcnn.atomic import atomic_open
from msrcnn.evaluation.coco_eval import maskiou_pearson
from msrcnn.evaluation.records import DetectionRecord

__all__ = [
    "GalleryItem",
    "decode_rle",
    "detection_caption",
    "draw_detections",
    "figure_to_array",
    "image_to_array",
    "load_run_records",
    "mask_gallery",
    "maskiou_scatter",
    "render_detections",
    "save_image",
    "score_vs_maskiou",
    "select_detections",
]

_COLORS = matplotlib.colormaps["tab10"].colors


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed, ``counts`` as str or bytes) as a ``bool [H, W]`` mask."""
    rle = dict(rle)
    if isinstance(rle.get("counts"), str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def image_to_array(image: Any) -> np.ndarray:
    """A ``float [3, H, W]`` tensor/array in [0, 1], or an ``[H, W, 3]`` array, as ``uint8 [H, W, 3]``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return array


def _figure(**kwargs: Any) -> Figure:
    """A figure on the Agg canvas, outside pyplot (no global state, no display needed)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as ``uint8 [H, W, 3]``."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def select_detections(
    record: DetectionRecord, max_instances: int = 20, min_score: float = 0.0, min_instances: int = 0
) -> np.ndarray:
    """Indices of the detections to draw, best mask score first: at most ``max_instances`` with a
    mask score >= ``min_score``, but at least the best ``min_instances`` (e.g. early in training)."""
    scores = record.mask_scores
    order = np.argsort(-scores, kind="stable")
    keep = max(int((scores >= min_score).sum()), min_instances)
    return order[: min(keep, max_instances)]


def _name(label: int, class_names: Mapping[int, str] | None) -> str:
    return (class_names or {}).get(int(label), str(int(label)))


def detection_caption(
    record: DetectionRecord,
    class_names: Mapping[int, str] | None = None,
    max_instances: int = 20,
    min_score: float = 0.0,
    min_instances: int = 0,
) -> str:
    """One line per drawn instance: ``#k class: cls 0.93  MaskIoU 0.81  mask 0.75``."""
    lines = []
    for k, i in enumerate(select_detections(record, max_instances, min_score, min_instances)):
        line = f"#{k} {_name(record.labels[i], class_names)}: cls {record.scores[i]:.2f}"
        if record.mask_ious is not None:
            line += f"  MaskIoU {record.mask_ious[i]:.2f}  mask {record.mask_scores[i]:.2f}"
        lines.append(line)
    return "\n".join(lines) if lines else "no detections"


def draw_detections(
    image: Any,
    record: DetectionRecord,
    class_names: Mapping[int, str] | None = None,
    max_instances: int = 20,
    min_score: float = 0.0,
    min_instances: int = 0,
    title: str | None = None,
    alpha: float = 0.45,
    dpi: int = 100,
    min_side: float = 4.0,
) -> Figure:
    """The image with the predicted masks (filled), boxes and a label per instance:
    ``#k class  cls 0.93 | iou 0.81 | ms 0.75`` (class score, predicted MaskIoU, mask score).

    Args:
        image: ``float [3, H, W]`` in [0, 1] (a tensor is fine) or ``uint8 [H, W, 3]``.
        record: the image's detections (``labels`` as given, named through ``class_names``): a
            :class:`DetectionRecord` or a :class:`msrcnn.Prediction` (named by its own class names).
        class_names: label (the record's category id) -> name.
        max_instances: at most this many, best mask score first.
        min_score: skip detections with a lower mask score...
        min_instances: ...but draw at least this many.
        min_side: figure size floor in inches (small images are enlarged so labels stay legible).
    """
    if not isinstance(record, DetectionRecord) and hasattr(record, "to_record"):  # a msrcnn.Prediction
        if class_names is None:
            class_names = dict(zip((int(c) for c in record.category_ids), record.class_names))
        record = record.to_record()
    pixels = image_to_array(image)
    height, width = pixels.shape[:2]
    scale = max(1.0, min_side * dpi / max(height, width))
    fig = _figure(figsize=(width * scale / dpi, height * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(pixels)
    ax.set_axis_off()
    overlay = np.zeros((height, width, 4), dtype=np.float32)
    for k, i in enumerate(select_detections(record, max_instances, min_score, min_instances)):
        color = _COLORS[k % len(_COLORS)]
        if record.rles is not None:
            mask = decode_rle(record.rles[i])
            if mask.shape == (height, width):
                overlay[mask] = (*color, alpha)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[color], linewidths=1.0)
        x0, y0, x1, y1 = (float(v) for v in record.boxes[i])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
        text = f"#{k} {_name(record.labels[i], class_names)} cls {record.scores[i]:.2f}"
        if record.mask_ious is not None:
            text += f"\niou {record.mask_ious[i]:.2f} | ms {record.mask_scores[i]:.2f}"
        inside = y0 < 0.1 * height  # no room above the box: label inside it
        ax.text(
            x0,
            y0,
            text,
            fontsize=7,
            color="white",
            va="top" if inside else "bottom",
            ha="left",
            bbox=dict(facecolor=color, alpha=0.75, pad=1.0, edgecolor="none"),
        )
    ax.imshow(overlay)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    if title:
        ax.text(
            2,
            height - 2,
            title,
            fontsize=8,
            color="white",
            va="bottom",
            ha="left",
            bbox=dict(facecolor="black", alpha=0.6, pad=1.0, edgecolor="none"),
        )
    return fig


def render_detections(
    image: Any, record: Any, class_names: Mapping[int, str] | None = None, **kwargs: Any
) -> np.ndarray:
    """:func:`draw_detections` (same arguments) rendered as ``uint8 [H', W', 3]``."""
    return figure_to_array(draw_detections(image, record, class_names, **kwargs))


def save_image(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Writes ``uint8 [H, W, 3]`` pixels as an image file, atomically, in the format of the path's
    suffix (``.png``, ``.jpg``, ...); returns the path."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r} (use .png or .jpg)")
    with atomic_open(path, "wb") as f:
        Image.fromarray(pixels).save(f, format=fmt)
    return path


def _scatter(ax, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str, diagonal: bool) -> None:
    r = maskiou_pearson(x, y)
    ax.scatter(x, y, s=6, alpha=0.35, linewidths=0)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nn={x.size}" + (f", Pearson r={r:.3f}" if r is not None else ""), fontsize=9)
    ax.grid(alpha=0.3)


def maskiou_scatter(
    predicted: Sequence[float], gt: Sequence[float], title: str = "MaskIoU prediction"
) -> Figure:
    """Paper Figure 5: predicted MaskIoU (y) against the GT MaskIoU (x), with the diagonal."""
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=np.float64).ravel()
    if predicted.shape != gt.shape:
        raise ValueError(f"{predicted.size} predicted but {gt.size} GT MaskIoUs")
    fig = _figure(figsize=(4.2, 4.2), dpi=100, layout="constrained")
    _scatter(fig.add_subplot(), gt, predicted, "GT MaskIoU", "predicted MaskIoU", title, diagonal=True)
    return fig


def score_vs_maskiou(
    class_scores: Sequence[float], gt: Sequence[float], mask_scores: Sequence[float] | None = None
) -> Figure:
    """Paper Figure 2: the class score against the GT MaskIoU (Mask R-CNN's ranking), and beside it
    the mask score (MS R-CNN's ranking) when given."""
    class_scores = np.asarray(class_scores, dtype=np.float64).ravel()
    gt = np.asarray(gt, dtype=np.float64).ravel()
    panels = [(class_scores, "class score", "Mask R-CNN: class score")]
    if mask_scores is not None:
        panels.append(
            (
                np.asarray(mask_scores, dtype=np.float64).ravel(),
                "mask score",
                "MS R-CNN: class score x MaskIoU",
            )
        )
    fig = _figure(figsize=(4.2 * len(panels), 4.2), dpi=100, layout="constrained")
    for k, (scores, ylabel, title) in enumerate(panels):
        if scores.shape != gt.shape:
            raise ValueError(f"{scores.size} scores but {gt.size} GT MaskIoUs")
        _scatter(
            fig.add_subplot(1, len(panels), k + 1), gt, scores, "GT MaskIoU", ylabel, title, diagonal=True
        )
    return fig


@dataclass
class GalleryItem:
    """One detection to show in :func:`mask_gallery`."""

    image: Any  # float [3, H, W] or uint8 [H, W, 3]
    rle: Mapping[str, Any]
    box: Sequence[float]  # xyxy
    caption: str


def mask_gallery(
    items: Sequence[GalleryItem], ncols: int = 4, title: str | None = None, pad: float = 0.15
) -> Figure:
    """Crops around each detection's box (plus ``pad`` of its size) with the mask overlaid."""
    n = max(1, len(items))
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig = _figure(figsize=(2.4 * ncols, 2.6 * nrows + (0.3 if title else 0)), dpi=100, layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    for k in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.set_axis_off()
        if k >= len(items):
            continue
        item = items[k]
        pixels = image_to_array(item.image)
        height, width = pixels.shape[:2]
        mask = decode_rle(item.rle)
        x0, y0, x1, y1 = (float(v) for v in item.box)
        dx, dy = (x1 - x0) * pad + 2, (y1 - y0) * pad + 2
        c0, c1 = int(max(0, np.floor(x0 - dx))), int(min(width, np.ceil(x1 + dx)))
        r0, r1 = int(max(0, np.floor(y0 - dy))), int(min(height, np.ceil(y1 + dy)))
        if c1 <= c0 or r1 <= r0:
            c0, c1, r0, r1 = 0, width, 0, height
        ax.imshow(pixels[r0:r1, c0:c1])
        overlay = np.zeros((r1 - r0, c1 - c0, 4), dtype=np.float32)
        if mask.shape == (height, width):
            crop = mask[r0:r1, c0:c1]
            overlay[crop] = (1.0, 0.15, 0.15, 0.45)
            if crop.any():
                ax.contour(crop, levels=[0.5], colors=["yellow"], linewidths=1.0)
        ax.imshow(overlay)
        ax.set_title(item.caption, fontsize=7)
    if not items:
        fig.axes[0].text(0.5, 0.5, "no detections", ha="center", va="center")
    return fig


# --------------------------------------------------------------------------- a finished run
@dataclass
class RunRecords:
    """A run directory's detections as records, with its results and ground-truth files."""

    records: list[DetectionRecord]
    results: dict[str, Any]
    ann_file: Path | None  # the evaluated split's COCO file (None when not found)
    class_names: dict[int, str]  # category id -> name
    image_files: dict[int, Path]  # image id -> file (empty when the image folder is not found)


def _image_dir(run_dir: Path, ann_file: Path) -> Path | None:
    """The evaluated split's image folder: ``data.val.img_dir`` of the run's config when it is a
    plain path, else the COCO / shapes layout (``annotations/instances_<split>.json`` beside ``<split>/``)."""
    config_file = run_dir / ".hydra" / "config.yaml"
    if config_file.is_file():
        data = (yaml.safe_load(config_file.read_text()) or {}).get("data") or {}
        img_dir = (data.get("val") or {}).get("img_dir")
        if isinstance(img_dir, str) and "${" not in img_dir and Path(img_dir).is_dir():
            return Path(img_dir)
    guess = ann_file.parent.parent / ann_file.stem.removeprefix("instances_")
    return guess if guess.is_dir() else None


def load_run_records(run_dir: str | os.PathLike) -> RunRecords:
    """Records rebuilt from a run's ``detections_bbox.json`` and ``detections_segm.json`` (written in
    the same order), with ``results.json``, its annotation file (``ann_file``, as training saw it:
    relative paths are relative to the working directory of training, the repository root) and the
    image files of the evaluated split."""
    run_dir = Path(run_dir)
    bbox_file, segm_file = run_dir / "detections_bbox.json", run_dir / "detections_segm.json"
    for path in (bbox_file, segm_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a finished run directory?")
    bbox = json.loads(bbox_file.read_text())
    segm = json.loads(segm_file.read_text())
    if len(bbox) != len(segm):
        raise ValueError(f"{run_dir}: {len(bbox)} box but {len(segm)} mask detections")
    results_file = run_dir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    ann_file = Path(results["ann_file"]) if results.get("ann_file") else None
    class_names: dict[int, str] = {}
    image_files: dict[int, Path] = {}
    if ann_file is not None and ann_file.is_file():
        gt = json.loads(ann_file.read_text())
        class_names = {int(c["id"]): str(c["name"]) for c in gt.get("categories", [])}
        image_dir = _image_dir(run_dir, ann_file)
        if image_dir is not None:
            image_files = {int(i["id"]): image_dir / i["file_name"] for i in gt.get("images", [])}
    elif ann_file is not None:
        ann_file = None
    by_image: dict[int, list[int]] = {}
    for k, det in enumerate(segm):
        by_image.setdefault(int(det["image_id"]), []).append(k)
    records = []
    for image_id in sorted(by_image):
        idx = by_image[image_id]
        xywh = np.asarray([bbox[k]["bbox"] for k in idx], dtype=np.float32).reshape(-1, 4)
        ious = [segm[k].get("mask_iou") for k in idx]
        records.append(
            DetectionRecord(
                image_id=image_id,
                boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
                scores=np.asarray(
                    [segm[k].get("class_score", bbox[k]["score"]) for k in idx], dtype=np.float32
                ),
                labels=np.asarray([segm[k]["category_id"] for k in idx], dtype=np.int64),
                mask_ious=None if any(v is None for v in ious) else np.asarray(ious, dtype=np.float32),
                rles=[segm[k]["segmentation"] for k in idx],
            )
        )
    return RunRecords(
        records=records, results=results, ann_file=ann_file, class_names=class_names, image_files=image_files
    )
