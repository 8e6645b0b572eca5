"""``src/predict.py``: a trained checkpoint on new images -> COCO-format JSON and rendered overlays.

    python src/predict.py ckpt_path=RUN/checkpoints/last.ckpt input='imgs/*.jpg' [output_dir=DIR]

``input`` is an image, a folder (its image files, not recursive) or a glob. The output directory gets

* ``predictions.json``: a COCO-format file (``images``, ``categories`` with the checkpoint's own
  category ids and names, ``annotations`` with ``bbox`` [x, y, w, h], RLE ``segmentation``,
  ``area``) where every annotation also carries ``class_score``, ``mask_iou`` (predicted MaskIoU;
  null for a plain Mask R-CNN), ``mask_score`` (= class score x MaskIoU) and ``score`` (= the mask
  score, the ranking MS R-CNN uses for masks);
* ``overlays/<image>.png``: each image with its masks, boxes, classes, class scores, MaskIoU and
  mask scores drawn (``render=false`` skips them).

Detections are ranked by mask score (``sort_by=class_score`` for the class score). An image that
cannot be read is skipped and named (on stderr and in ``predictions.json``'s ``info.skipped``); the
others are predicted and written, and the run then ends with exit status 2.
"""

from __future__ import annotations

import glob
import logging
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from msrcnn.app.schemas import PredictConfig
from msrcnn.config import derive, validate
from msrcnn.data import DataError
from msrcnn.data.images import to_image_tensor
from msrcnn.evaluation import write_json_atomic
from msrcnn.evaluation.plots import render_detections, save_image
from msrcnn.inference import PRECISIONS, SORT_KEYS, Predictor

log = logging.getLogger("msrcnn.app")

PREDICTOR_KEYS = tuple(derive.parameters_of(Predictor))  # the settings that are Predictor's arguments

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def list_images(spec: str | Path) -> list[Path]:
    """The images of ``spec``: one file, the image files of a folder, or the image files a glob matches."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
        return files
    if glob.has_magic(str(spec)):
        files = sorted(
            Path(p)
            for p in glob.glob(str(spec), recursive=True)
            if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise FileNotFoundError(f"no image files match {spec}")
        return files
    raise FileNotFoundError(
        f"input not found: {spec} (give an image, a folder or a glob such as 'imgs/*.jpg')"
    )


def predict(cfg: DictConfig) -> Path:
    """Runs the checkpoint on ``cfg.input``; returns the path of ``predictions.json``.

    Unreadable images are skipped (each named on stderr); when any were, a
    :class:`~msrcnn.data.DataError` listing them is raised after everything else was written.
    """
    cfg = validate(cfg, PredictConfig)
    for key, value, choices in (
        ("precision", cfg.precision, PRECISIONS),
        ("sort_by", cfg.sort_by, SORT_KEYS),
    ):
        if value not in choices:
            raise DataError(f"{key}={value} is not valid; expected one of {', '.join(choices)}")
    if cfg.batch_size < 1:
        raise DataError(f"batch_size={cfg.batch_size} must be at least 1")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    start = time.perf_counter()
    images = list_images(cfg.input)
    output_dir = Path(cfg.output_dir)
    overlay_dir = output_dir / "overlays"

    predictor = Predictor(**{key: cfg[key] for key in PREDICTOR_KEYS})
    model, categories = predictor.model, predictor.categories
    names = dict(categories)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.render:
        overlay_dir.mkdir(exist_ok=True)

    image_entries, annotations, used_names, skipped = [], [], set(), []
    for first in range(0, len(images), cfg.batch_size):
        batch = []  # (image id, path, tensor) of the readable images of this batch
        for image_id, path in enumerate(images[first : first + cfg.batch_size], start=first + 1):
            try:
                batch.append((image_id, path, to_image_tensor(path)))
            except (ValueError, FileNotFoundError) as err:
                skipped.append(str(path))
                print(f"skipped: {err}", file=sys.stderr, flush=True)
        for (image_id, path, image), (record, size) in zip(
            batch, predictor.records([t for _, _, t in batch], first_image_id=1)
        ):
            record.image_id = image_id
            image_entries.append(
                {
                    "id": image_id,
                    "file_name": str(path),
                    "height": int(image.shape[1]),
                    "width": int(image.shape[2]),
                }
            )
            annotations += [  # a COCO annotations file: ids, and no crowd regions
                {"id": len(annotations) + k, **ann, "iscrowd": 0}
                for k, ann in enumerate(predictor.prediction(record, size).to_coco(image_id), start=1)
            ]
            if cfg.render:
                name = path.stem if path.stem not in used_names else f"{path.stem}_{image_id}"
                used_names.add(name)
                pixels = render_detections(
                    image,
                    record,
                    names,
                    max_instances=cfg.render_max_instances,
                    min_score=cfg.render_min_score,
                    min_instances=cfg.render_min_instances,
                    title=path.name,
                )
                save_image(pixels, overlay_dir / f"{name}.png")

    result = {
        "info": {
            "description": "Mask Scoring R-CNN predictions: score = mask_score = class_score x mask_iou",
            "checkpoint": str(cfg.ckpt_path),
            "experiment_name": (model.config or {}).get("experiment_name"),
            "soft_nms": model.roi_heads.soft_nms.enabled,
            "precision": cfg.precision,
            "sort_by": cfg.sort_by,
            "skipped": skipped,
        },
        "images": image_entries,
        "categories": [{"id": cat_id, "name": name} for cat_id, name in categories],
        "annotations": annotations,
    }
    path = write_json_atomic(output_dir / "predictions.json", result)
    print(
        f"{len(image_entries)} images, {len(annotations)} detections in {time.perf_counter() - start:.1f} s\n"
        f"predictions: {path}" + (f"\noverlays: {overlay_dir}" if cfg.render else ""),
        flush=True,
    )
    if skipped:
        raise DataError(
            f"{len(skipped)} of {len(images)} images could not be read and were skipped "
            f"(listed in {path} info.skipped): {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}"
        )
    return path
