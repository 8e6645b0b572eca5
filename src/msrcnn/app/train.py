"""``src/train.py``: train, checkpoint, then evaluate the final model on the val split."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from msrcnn.app.builders import build_callbacks, build_datamodule, build_detector, build_logger, build_trainer
from msrcnn.app.errors import report_last_checkpoint
from msrcnn.app.summary import format_results_table
from msrcnn.app.wandb_runs import wandb_job
from msrcnn.config import to_plain, validate
from msrcnn.evaluation import write_json_atomic
from msrcnn.evaluation.evaluator import CocoEvaluator
from msrcnn.training import MaskScoringModule

log = logging.getLogger("msrcnn.app")


def prepare(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Validates the config, creates the run directory, seeds and sets the thread count."""
    cfg = validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return cfg, output_dir


def write_results(
    results: dict[str, Any], evaluator: CocoEvaluator, output_dir: Path, extra: dict[str, Any]
) -> Path | None:
    """``results.json`` (when the split is annotated) and the two detection files, atomically."""
    evaluator.write_detections(output_dir)
    if not evaluator.has_annotations:
        return None
    return write_json_atomic(output_dir / "results.json", {**results, **extra}, indent=2)


@wandb_job  # the job's W&B run ends with it (one run per sweep job), its checkpoint logged if asked
def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Runs one training job; returns the final evaluation results (None when skipped)."""
    cfg, output_dir = prepare(cfg)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    plain = to_plain(cfg)
    dataset_info = {
        "num_classes": datamodule.num_classes,
        "class_names": list(datamodule.class_names),
        "category_ids": list(datamodule.category_map.cat_ids),
    }
    model = build_detector(plain, datamodule.num_classes)
    evaluator = CocoEvaluator(
        datamodule.val_ann_file,
        [0, *datamodule.category_map.cat_ids],
        max_dets=cfg.eval.max_dets,
        per_class=True,
    )
    module = MaskScoringModule(
        model,
        plain["optim"],
        evaluator,
        train_only=plain["model"]["train_only"],
        config={**plain, **dataset_info},
    )
    logger = build_logger(cfg, output_dir, plain)
    trainer = build_trainer(cfg, logger, build_callbacks(cfg, output_dir, has_logger=bool(logger)))
    with report_last_checkpoint(output_dir / "checkpoints"):  # a failure or SIGTERM says where to resume from
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if cfg.callbacks.save_last and not trainer.fast_dev_run:
        trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")  # the final state, atomically
    train_seconds = time.perf_counter() - start
    if not cfg.eval.after_fit:
        return None

    if not trainer.fast_dev_run:
        trainer.limit_val_batches = 1.0  # the final evaluation sees the whole split
    with report_last_checkpoint(output_dir / "checkpoints", what="the final evaluation"):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    results = module.last_results
    if results is None:
        raise RuntimeError("the final evaluation produced no results (was the val split empty?)")
    if trainer.is_global_zero:
        extra = {
            "experiment_name": cfg.experiment_name,
            "split": "val",
            "ann_file": str(datamodule.val_ann_file),
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - start, 1),
            "global_step": trainer.global_step,
            "checkpoint_dir": str(output_dir / "checkpoints"),
        }
        path = write_results(results, evaluator, output_dir, extra)
        print("\n" + format_results_table(results), flush=True)
        print(f"run directory: {output_dir}" + (f"\nresults: {path}" if path else ""), flush=True)
    return results
