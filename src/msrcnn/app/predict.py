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
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from omegaconf import MISSING, DictConfig
from PIL import Image

from msrcnn.app.builders import build_detector, detector_state_dict
from msrcnn.app.evaluate import checkpoint_config
from msrcnn.config import to_plain, validate
from msrcnn.config.schema import Config
from msrcnn.data import SHAPES_CATEGORIES, read_image
from msrcnn.evaluation import DetectionRecord, make_record, write_json_atomic
from msrcnn.evaluation.plots import draw_detections, figure_to_array
from msrcnn.models import MaskScoringRCNN

log = logging.getLogger("msrcnn.app")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class PredictConfig:
    """``src/predict.py`` settings (the model and its classes come from the checkpoint)."""

    ckpt_path: str = MISSING
    input: str = MISSING  # an image, a folder of images or a glob ('imgs/*.jpg')
    output_dir: str = MISSING  # default (src/predict.py): outputs/predict/<date>
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    max_dets: int = 100  # detections per image (top class scores)
    score_threshold: float = (
        0.0  # drop detections with a lower class score (the model's own is box_score_thresh)
    )
    soft_nms: bool | None = None  # null: as trained; true | false to override
    render: bool = True  # write overlays/<image>.png
    render_min_score: float = 0.3  # overlays: draw detections with at least this mask score...
    render_max_instances: int = 30  # ...at most this many per image
    torch_threads: int | None = None


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


def checkpoint_categories(trained: dict[str, Any]) -> list[tuple[int, str]]:
    """``(category id, name)`` per model label 1..K of the checkpoint's dataset.

    The ids are the training annotation file's own: from the config when it records them
    (``category_ids``), the fixed ids of the synthetic shapes, or the categories of the run's
    annotation file when it is still where training read it; otherwise 1..K with a warning.
    """
    names = [str(n) for n in trained["class_names"]]
    if trained.get("category_ids"):
        return list(zip((int(i) for i in trained["category_ids"]), names))
    data = trained.get("data") or {}
    if data.get("name") == "shapes" and [n for _, n in SHAPES_CATEGORIES] == names:
        return [(int(i), n) for i, n in SHAPES_CATEGORIES]
    candidates = []
    if data.get("name") == "coco" and data.get("root"):
        candidates.append(Path(data["root"]) / "annotations" / "instances_val2017.json")
    for split in ("val", "train"):
        if (data.get(split) or {}).get("ann_file"):
            candidates.append(Path(data[split]["ann_file"]))
    for ann_file in candidates:
        if ann_file.is_file():
            categories = sorted(json.loads(ann_file.read_text()).get("categories", []), key=lambda c: c["id"])
            if [str(c["name"]) for c in categories] == names:
                return [(int(c["id"]), str(c["name"])) for c in categories]
    log.warning(
        "the checkpoint does not record its category ids and its annotation file is not found: "
        "using 1..%d in label order",
        len(names),
    )
    return list(enumerate(names, start=1))


def load_predictor(
    ckpt_path: str | Path, soft_nms: bool | None = None
) -> tuple[MaskScoringRCNN, dict[str, Any]]:
    """The detector of an msrcnn checkpoint (eval mode, CPU) and the checkpoint's training config.

    The weights come from the checkpoint only: ``backbone.pretrained`` is not read again (the
    normalisation layers it implied are kept, so the state dict fits).
    """
    trained = checkpoint_config(ckpt_path)
    fields = {f.name for f in dataclasses.fields(Config)}
    plain = to_plain(validate({k: v for k, v in trained.items() if k in fields}))
    backbone = plain["backbone"]
    if backbone["pretrained"]:
        backbone["norm"] = backbone["norm"] or "frozen_bn"
        backbone["trainable_layers"] = (
            backbone["trainable_layers"] if backbone["trainable_layers"] is not None else 3
        )
        backbone["pretrained"] = None
    plain["model"]["init_from"] = None
    model = build_detector(plain, trained["num_classes"])
    model.load_state_dict(detector_state_dict(ckpt_path), strict=True)
    if soft_nms is not None:
        heads = model.roi_heads
        heads.soft_nms = dataclasses.replace(heads.soft_nms, enabled=bool(soft_nms))
    return model.eval(), trained


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _keep(record: DetectionRecord, score_threshold: float) -> DetectionRecord:
    if score_threshold <= 0 or len(record) == 0:
        return record
    keep = np.flatnonzero(record.scores >= score_threshold)
    return DetectionRecord(
        image_id=record.image_id,
        boxes=record.boxes[keep],
        scores=record.scores[keep],
        labels=record.labels[keep],
        mask_ious=None if record.mask_ious is None else record.mask_ious[keep],
        rles=None if record.rles is None else [record.rles[i] for i in keep],
        mask_areas=None if record.mask_areas is None else record.mask_areas[keep],
        mask_boxes=None if record.mask_boxes is None else record.mask_boxes[keep],
    )


def record_annotations(record: DetectionRecord, first_id: int = 1) -> list[dict[str, Any]]:
    """COCO annotations of one image's detections, with the three scores."""
    anns = []
    areas = (
        mask_utils.area([dict(r, counts=r["counts"].encode("ascii")) for r in record.rles])
        if record.rles
        else []
    )
    for k in range(len(record)):
        x0, y0, x1, y1 = (float(v) for v in record.boxes[k])
        mask_iou = None if record.mask_ious is None else float(record.mask_ious[k])
        mask_score = float(record.mask_scores[k])
        ann = {
            "id": first_id + k,
            "image_id": record.image_id,
            "category_id": int(record.labels[k]),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": mask_score,
            "class_score": float(record.scores[k]),
            "mask_iou": mask_iou,
            "mask_score": mask_score,
            "iscrowd": 0,
        }
        if record.rles is not None:
            ann["segmentation"] = record.rles[k]
            ann["area"] = float(areas[k])
        anns.append(ann)
    return anns


def predict(cfg: DictConfig) -> Path:
    """Runs the checkpoint on ``cfg.input``; returns the path of ``predictions.json``."""
    cfg = validate(cfg, PredictConfig)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    start = time.perf_counter()
    images = list_images(cfg.input)
    output_dir = Path(cfg.output_dir)
    overlay_dir = output_dir / "overlays"
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.render:
        overlay_dir.mkdir(exist_ok=True)

    model, trained = load_predictor(cfg.ckpt_path, cfg.soft_nms)
    device = _device(cfg.device)
    model.to(device)
    model.mask_output = "roi"  # the records hold RLEs, computed from the box-local masks (no paste)
    categories = checkpoint_categories(trained)
    label_to_cat_id = [0, *(cat_id for cat_id, _ in categories)]
    names = dict(categories)

    image_entries, annotations, used_names = [], [], set()
    for image_id, path in enumerate(images, start=1):
        image = read_image(path, image_id)
        with torch.no_grad():
            output = model([image.to(device)])[0]
        record = _keep(make_record(output, image_id, label_to_cat_id, cfg.max_dets), cfg.score_threshold)
        image_entries.append(
            {
                "id": image_id,
                "file_name": str(path),
                "height": int(image.shape[1]),
                "width": int(image.shape[2]),
            }
        )
        annotations += record_annotations(record, first_id=len(annotations) + 1)
        if cfg.render:
            name = path.stem if path.stem not in used_names else f"{path.stem}_{image_id}"
            used_names.add(name)
            fig = draw_detections(
                image, record, names, cfg.render_max_instances, cfg.render_min_score, title=path.name
            )
            Image.fromarray(figure_to_array(fig)).save(overlay_dir / f"{name}.png")

    result = {
        "info": {
            "description": "Mask Scoring R-CNN predictions: score = mask_score = class_score x mask_iou",
            "checkpoint": str(cfg.ckpt_path),
            "experiment_name": trained.get("experiment_name"),
            "soft_nms": model.roi_heads.soft_nms.enabled,
        },
        "images": image_entries,
        "categories": [{"id": cat_id, "name": name} for cat_id, name in categories],
        "annotations": annotations,
    }
    path = write_json_atomic(output_dir / "predictions.json", result)
    print(
        f"{len(images)} images, {len(annotations)} detections in {time.perf_counter() - start:.1f} s\n"
        f"predictions: {path}" + (f"\noverlays: {overlay_dir}" if cfg.render else ""),
        flush=True,
    )
    return path
