"""``src/eval.py``: evaluate a checkpoint on a split and write the same files as training."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from msrcnn.app.builders import build_datamodule, build_logger, build_trainer, check_logger
from msrcnn.app.schemas import Config, EvalAppConfig, validate
from msrcnn.app.summary import format_results_table
from msrcnn.app.train import start_run, write_results
from msrcnn.app.wandb_runs import wandb_job
from msrcnn.config import ConfigError, to_plain
from msrcnn.config.schema import DataConfig
from msrcnn.data import DataError
from msrcnn.evaluation.evaluator import CocoEvaluator
from msrcnn.models import load_model
from msrcnn.training import MaskScoringModule


@wandb_job  # logger=wandb: the W&B run ends with the job
def evaluate(cfg: DictConfig) -> dict[str, Any] | None:
    """Evaluates ``cfg.ckpt_path``; returns the results (None on a split without annotations).

    ``logger=wandb`` logs the results, tables and figures to W&B: a run of its own (``job_type`` eval)
    whose config is the checkpoint's training config plus ``evaluation`` (this evaluation's settings), or,
    with ``logger.id=<training run id>``, into that training run.
    """
    cfg = validate(cfg, EvalAppConfig)
    check_logger(cfg.logger)
    if cfg.logger.log_model:
        raise ConfigError(
            "logger.log_model=true is for training (src/train.py); src/eval.py writes no checkpoint"
        )
    output_dir = start_run(cfg)
    start = time.perf_counter()

    model = load_model(cfg.ckpt_path, soft_nms=cfg.soft_nms)
    trained = model.config
    data_cfg = (
        cfg.data
        if cfg.data is not None
        else OmegaConf.merge(OmegaConf.structured(DataConfig), trained["data"])
    )
    run_cfg = validate(
        {k: v for k, v in trained.items() if k in {f.name for f in dataclasses.fields(Config)}}
    )
    run_cfg.data = data_cfg
    run_cfg.paths = cfg.paths
    datamodule = build_datamodule(run_cfg, train_required=False)
    datamodule.prepare_data()
    datamodule.setup("validate" if cfg.split.value == "val" else "test")
    if list(datamodule.class_names) != list(trained["class_names"]):
        raise DataError(
            f"the checkpoint {cfg.ckpt_path} was trained on classes {trained['class_names']}, "
            f"the dataset has {list(datamodule.class_names)}"
        )

    plain = to_plain(run_cfg)

    split = cfg.split.value
    ann_file = datamodule.val_ann_file if split == "val" else datamodule.test_ann_file
    evaluator = CocoEvaluator(ann_file, [0, *datamodule.category_map.cat_ids], max_dets=cfg.max_dets)
    module = MaskScoringModule(model, plain["optim"], evaluator, config=trained)
    logger, callbacks = _eval_logger(cfg, output_dir, trained)
    trainer = build_trainer(cfg, logger=logger, callbacks=callbacks)
    # The data module shards the split over the trainer's processes once it is attached.
    run = trainer.validate if split == "val" else trainer.test
    run(module, datamodule=datamodule, verbose=False)
    results = module.last_results
    if trainer.is_global_zero:
        extra = {
            "checkpoint": str(cfg.ckpt_path),
            "split": cfg.split.value,
            "ann_file": str(ann_file),
            "soft_nms": model.roi_heads.soft_nms.enabled,
            "total_seconds": round(time.perf_counter() - start, 1),
        }
        path = write_results(results, evaluator, output_dir, extra)
        if path is not None:
            print("\n" + format_results_table(results), flush=True)
        print(f"detections written to {output_dir}" + (f"\nresults: {path}" if path else ""), flush=True)
    return results if evaluator.has_annotations else None


def _eval_logger(cfg: DictConfig, output_dir: Path, trained: dict[str, Any]) -> tuple[Any, list[L.Callback]]:
    """The ``logger`` group's logger for an evaluation (the W&B media callback with a W&B one)."""
    settings = {
        "ckpt_path": str(cfg.ckpt_path),
        "split": cfg.split.value,
        "max_dets": cfg.max_dets,
        "soft_nms": cfg.soft_nms,
    }
    run_cfg = OmegaConf.merge(cfg, {"experiment_name": f"eval {trained.get('experiment_name', '')}".strip()})
    trained_tags = list((trained.get("logger") or {}).get("tags") or [])
    run_cfg.logger.tags = list(dict.fromkeys([*trained_tags, *cfg.logger.tags]))  # e.g. the paper table
    logger = build_logger(run_cfg, output_dir, {**trained, "evaluation": settings}, job_type="eval")
    if not logger or cfg.logger.name.value != "wandb":
        return logger, []
    from msrcnn.training.media import WandbMedia

    return logger, [WandbMedia(log_images=cfg.logger.log_images, prefix=f"{cfg.split.value}/")]
