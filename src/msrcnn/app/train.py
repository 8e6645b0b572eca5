"""``src/train.py``: train, checkpoint, then evaluate the final model on the val split."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from omegaconf import DictConfig

from msrcnn.app.builders import build_callbacks, build_datamodule, build_detector, build_logger, build_trainer
from msrcnn.app.errors import report_last_checkpoint
from msrcnn.app.faults import guard_log_files, report_disk_full
from msrcnn.app.float32_precision import set_float32_matmul_precision
from msrcnn.app.input_size import apply_auto_input_size, describe_input_scale
from msrcnn.app.quiet import quiet_resume_in_place, quiet_third_party
from msrcnn.app.reference import format_reference
from msrcnn.app.schemas import validate
from msrcnn.app.summary import format_results_table
from msrcnn.app.wandb_runs import wandb_job
from msrcnn.config import to_plain
from msrcnn.config.validate import check_overrides
from msrcnn.evaluation import write_json_atomic
from msrcnn.evaluation.evaluator import CocoEvaluator
from msrcnn.models import read_checkpoint
from msrcnn.models.backbones import backbone_defaults
from msrcnn.training import MaskScoringModule, TimeBudget

log = logging.getLogger("msrcnn.app")


def prepare(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Validates the config, then :func:`start_run`."""
    cfg = validate(cfg)
    check_overrides(cfg, _single_run_overrides())
    return cfg, start_run(cfg)


def start_run(cfg: DictConfig) -> Path:
    """The run set-up of every script's job (a validated config): creates the run directory
    (``paths.output_dir``), sets the thread count (``torch_threads``) and seeds (``seed``)."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    quiet_third_party()  # only the project's lines (msrcnn.app.quiet)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    return output_dir


def _single_run_overrides() -> list[str]:
    """The command line's overrides of a single run (a ``-m`` sweep over ``head=maskiou,none`` may set
    ``head.*`` for its ``maskiou`` jobs)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


def training_summary(trainer: L.Trainer, module: MaskScoringModule) -> dict[str, Any]:
    """How many steps were planned and ran, why training stopped, and whether the LR schedule
    completed (a run cut short before its LR steps ends undecayed)."""
    steps = int(trainer.global_step)
    planned = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None
    budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    schedule = module.schedule
    out: dict[str, Any] = {
        "steps_run": steps,
        "steps_planned": planned,
        "steps_configured": planned,
        "epochs_run": int(trainer.current_epoch),
        "lr_milestones": list(schedule.milestones) if schedule is not None else None,
        "final_lr_factor": schedule(max(steps - 1, 0)) if schedule is not None else None,
    }
    if budget is not None:
        out.update(budget.summary())
    if trainer.interrupted:
        reason = f"interrupted at step {steps}"
    elif planned is not None and steps >= planned:
        reason = f"completed the planned {planned} steps"
        if budget is not None and budget.replans:
            last = budget.replans[-1]
            reason += (
                f" (re-planned from {out['steps_configured']} to fit the time budget of {budget.seconds:.0f} s:"
                f" {last['seconds_per_step']:.3f} s/step at step {int(last['at_step'])})"
            )
    elif timer is not None and (timer.time_remaining() or 0.0) <= 0.0:
        reason = f"trainer.max_time reached at step {steps} of {planned}"
    elif trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch:
        reason = f"trainer.max_epochs={trainer.max_epochs} reached at step {steps}"
    else:
        reason = f"stopped at step {steps} of {planned}"
    out["stop_reason"] = reason
    out["schedule_completed"] = planned is None or steps >= planned
    return out


def write_results(
    results: dict[str, Any], evaluator: CocoEvaluator, output_dir: Path, extra: dict[str, Any]
) -> Path | None:
    """``results.json`` (when the split is annotated) and the two detection files, atomically."""
    evaluator.write_detections(output_dir)
    if not evaluator.has_annotations:
        return None
    return write_json_atomic(output_dir / "results.json", {**results, **extra}, indent=2)


AUTO_RESUME = "auto"


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``ckpt_path=auto`` (the default): the run folder's ``checkpoints/last.ckpt`` when there is one
    (the same command run again in the same folder, e.g. a requeued SLURM job, resumes), else a fresh
    start; ``null``: always a fresh start; a path: that checkpoint (read first: a missing, damaged or
    foreign one fails before any work)."""
    if ckpt_path == AUTO_RESUME:
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            return None
        step = read_checkpoint(last).get("global_step")
        log.info(
            "resuming from %s (step %s): ckpt_path=auto found the run folder's last checkpoint", last, step
        )
        quiet_resume_in_place()
        return str(last)
    if ckpt_path:
        read_checkpoint(ckpt_path)
    return ckpt_path


@wandb_job  # the job's W&B run ends with it (one run per sweep job), its checkpoint logged if asked
def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Runs one training job; returns the final evaluation results (None when skipped).

    A full disk anywhere in it ends the job in one line naming the file and the last good checkpoint
    (:mod:`msrcnn.app.faults`).
    """
    cfg, output_dir = prepare(cfg)
    guard_log_files()
    with report_disk_full(output_dir / "checkpoints"):
        return _train(cfg, output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, output_dir)
    start = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if apply_auto_input_size(cfg, datamodule) is None:  # data.auto_input_size: the input size from the data
        scale_note = describe_input_scale(cfg, datamodule)  # e.g. the 160 px shapes at the paper's 800 px
        if scale_note is not None:
            print(scale_note, flush=True)
            log.debug(scale_note)
    # the backbone defaults that follow backbone.pretrained, recorded resolved (checkpoint, W&B config)
    cfg.backbone.norm, cfg.backbone.trainable_layers = backbone_defaults(
        cfg.backbone.pretrained, cfg.backbone.norm, cfg.backbone.trainable_layers
    )
    plain = to_plain(cfg)
    dataset_info = {
        "num_classes": datamodule.num_classes,
        "class_names": list(datamodule.class_names),
        "category_ids": list(datamodule.category_map.cat_ids),
    }
    categories = list(zip(dataset_info["category_ids"], dataset_info["class_names"]))
    model = build_detector(plain, datamodule.num_classes, categories)
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
    evaluation = (
        f"{len(datamodule.val_dataset):,} images at {cfg.model.min_size[-1]} px"
        if cfg.eval.after_fit
        else None
    )
    callbacks = build_callbacks(cfg, output_dir, has_logger=bool(logger), evaluation=evaluation)
    trainer = build_trainer(cfg, logger, callbacks)
    log.info(
        "device: %s x%d (%s), precision %s",
        trainer.strategy.root_device.type,
        trainer.num_devices * trainer.num_nodes,
        type(trainer.strategy).__name__,
        trainer.precision,
    )
    with report_last_checkpoint(
        output_dir / "checkpoints"
    ):  # a failure or a signal says where to resume from
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.callbacks.save_last and not trainer.fast_dev_run:
        trainer.save_checkpoint(output_dir / "checkpoints" / "last.ckpt")  # the final state, atomically
    train_seconds = time.perf_counter() - start
    training = training_summary(trainer, module)
    if trainer.is_global_zero:
        print(
            f"training: {training['steps_run']} steps ({training['stop_reason']})"
            + ("" if training["schedule_completed"] else "; WARNING: the LR schedule did not complete"),
            flush=True,
        )
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
            "training": training,
            "checkpoint_dir": str(output_dir / "checkpoints"),
        }
        path = write_results(results, evaluator, output_dir, extra)
        print("\n" + format_results_table(results), flush=True)
        if cfg.reference is not None:  # where this run falls in the preset's measured spread
            print(format_reference(to_plain(cfg.reference), results, training["steps_run"]), flush=True)
        print(f"run directory: {output_dir}" + (f"\nresults: {path}" if path else ""), flush=True)
    return results
