"""Helpers of the experiments tests (issue #5): the tiny configuration, scripts, one shared tiny run.

Builds on ``msrcnn_testing`` (paths, the tiny configuration, run_script) with one shared tiny W&B run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from msrcnn.evaluation import DetectionRecord, encode_masks
from msrcnn_testing import CONF, ROOT, TINY, run_script  # noqa: F401 (re-exported)

QUIET_WANDB = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


_TINY_RUNS: dict[str, Path] = {}


def tiny_wandb_run(tmp_path_factory, shapes_dir: Path) -> Path:
    """One TINY training run with the W&B logger (offline), shared by the whole session."""
    key = str(shapes_dir)
    if key not in _TINY_RUNS:
        out = tmp_path_factory.mktemp("tiny_wandb_run")
        overrides = [o for o in TINY if not o.startswith("logger=")]
        run_script(
            "train.py",
            *overrides,
            "logger=wandb",
            f"paths.data_dir={shapes_dir}",
            f"hydra.run.dir={out}",
            env=QUIET_WANDB,
        )
        _TINY_RUNS[key] = out
    return _TINY_RUNS[key]


AP = {"AP": 10.0, "AP50": 20.0, "AP75": 5.0, "APs": None, "APm": 1.0, "APl": 2.0}


def fake_results(
    segm: float,
    segm_cls: float | None = None,
    oracle: float | None = None,
    bbox: float = 30.0,
    pearson: float | None = 0.5,
    head: str = "maskiou",
    gain_interval: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """A results.json as src/train.py writes it, with the given APs (AP50 = AP + 20, AP75 = AP - 1) and,
    when given, the mask scoring gain's interval ``(AP, low, high)``."""

    def block(ap: float) -> dict[str, float | None]:
        return {**AP, "AP": ap, "AP50": ap + 20, "AP75": ap - 1}

    segm_cls = segm if segm_cls is None else segm_cls
    ms = head == "maskiou"
    return {
        "bbox": block(bbox),
        "segm": block(segm if ms else segm_cls),
        "segm_cls": block(segm_cls),
        "segm_oracle": block(oracle if oracle is not None else segm + 2) if ms else None,
        "maskiou_pearson": pearson if ms else None,
        "mask_scoring_gain": (
            dict(zip(("AP", "low", "high"), gain_interval), verdict="-", bootstrap={})
            if ms and gain_interval
            else None
        ),
        "num_images": 4,
        "num_detections": 40,
        "experiment_name": "x",
        "split": "val",
    }


def fake_run(
    path: Path, overrides: list[str], config: dict[str, Any], results: dict[str, Any] | None
) -> Path:
    """A run directory with .hydra/{config,overrides}.yaml and, unless None, results.json."""
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    base = {
        "experiment_name": "default",
        "backbone": {"name": "r18_fpn"},
        "head": {"name": "maskiou", "input": "concat", "target": "target_class", "tau": 0.0},
    }
    for key, value in config.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(base))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))
    return path


# Three square detections on a 48 px image (category ids 3, 7, 3), for plots and media.
def square_masks(size=48):
    masks = torch.zeros(3, 1, size, size)
    masks[0, 0, 4:20, 4:20] = 1
    masks[1, 0, 24:40, 10:30] = 1
    masks[2, 0, 30:46, 30:46] = 1
    return masks


def record(image_id=1, mask_ious=(0.9, 0.5, 0.1)):
    rles = encode_masks(square_masks())
    return DetectionRecord(
        image_id=image_id,
        boxes=np.array([[4, 4, 20, 20], [10, 24, 30, 40], [30, 30, 46, 46]], np.float32),
        scores=np.array([0.9, 0.8, 0.3], np.float32),
        labels=np.array([3, 7, 3]),
        mask_ious=None if mask_ious is None else np.array(mask_ious, np.float32),
        rles=rles,
    )
