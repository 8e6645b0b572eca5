"""``src/export.py``: a trained checkpoint as an ONNX file for ONNX Runtime (see :mod:`msrcnn.inference.export`).

    python src/export.py ckpt_path=RUN/checkpoints/last.ckpt [format=onnx] [output=model.onnx] [image=a.jpg]

Writes the file atomically, then (``check=true``) runs it with ONNX Runtime on the example image
and prints the largest difference of each output from the eager PyTorch model.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from msrcnn.app.schemas import ExportAppConfig
from msrcnn.config import ConfigError, validate
from msrcnn.data import DataError
from msrcnn.models import load_model


def export(cfg: DictConfig) -> Path:
    """Exports ``cfg.ckpt_path``; returns the written file's path."""
    from msrcnn.data.images import to_image_tensor
    from msrcnn.inference.export import FORMATS, compare_with_eager, export_onnx

    cfg = validate(cfg, ExportAppConfig)
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not valid; expected one of {', '.join(FORMATS)}")
    start = time.perf_counter()
    image = to_image_tensor(cfg.image) if cfg.image else None  # an unreadable file: DataError
    model = load_model(cfg.ckpt_path, map_location="cpu", soft_nms=False)
    trained_soft_nms = bool(((model.config or {}).get("model") or {}).get("soft_nms", {}).get("enabled"))
    output = Path(cfg.output) if cfg.output else Path(cfg.ckpt_path).with_suffix(f".{cfg.format}")
    try:
        path = export_onnx(model, output, example_image=image, opset=cfg.opset)
    except ImportError as err:
        raise ConfigError(str(err)) from None
    size_mb = path.stat().st_size / 1e6
    print(f"{cfg.format}: {path} ({size_mb:.1f} MB, {time.perf_counter() - start:.1f} s)", flush=True)
    if trained_soft_nms:
        print("note: trained with Soft-NMS at test time; the exported graph uses plain NMS", flush=True)
    if cfg.check:
        if image is None:
            side = int(model.transform.min_size[-1])
            image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
        result = compare_with_eager(model, path, image)
        if not result["same_count"]:
            raise DataError(
                f"{path}: ONNX Runtime and PyTorch disagree on the number of detections of the check image"
            )
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in result["max_abs_diff"].items())
        print(
            f"check (ONNX Runtime vs PyTorch, {result['detections']} detections): max |diff| {diffs}",
            flush=True,
        )
    return path
