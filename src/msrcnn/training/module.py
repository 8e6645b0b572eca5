"""The LightningModule: optimisation, logging and evaluation hooks around a plain detector.

It knows nothing about COCO: evaluation goes through an injected evaluator with
``reset()``, ``update(outputs, targets)`` and ``compute() -> dict``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from msrcnn.models.checkpoint import upgrade_config
from msrcnn.models.factory import model_of_config
from msrcnn.training.schedule import StepSchedule, scaled_lr

TRAIN_ONLY = ("all", "maskiou")  # model.train_only: the whole detector, or only its MaskIoU branch

log = logging.getLogger("msrcnn.training")


class Evaluator(Protocol):
    def reset(self) -> None: ...
    def update(
        self, outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]
    ) -> None: ...
    def compute(self) -> dict[str, Any]: ...


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


def flatten_metrics(results: dict[str, Any], prefix: str = "val/") -> dict[str, float]:
    """``{"bbox": {"AP": ..}, "maskiou_pearson": ..}`` -> ``{"val/bbox_AP": .., "val/maskiou_pearson": ..}``."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, dict):
            for name, v in value.items():
                if isinstance(v, (int, float)) and v is not None:
                    flat[f"{prefix}{key}_{name}"] = float(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


class MaskScoringModule(L.LightningModule):
    """Trains and evaluates a detector whose forward returns losses (train) or detections (eval).

    ``MaskScoringModule.load_from_checkpoint(path)`` works: the model is then rebuilt from the
    config stored in the checkpoint (as :func:`msrcnn.models.load_model` does).

    Args:
        model: a ``MaskScoringRCNN`` (or any torchvision-style detector); ``None`` builds the
            model that ``config`` describes (``config`` then needs ``num_classes``).
        optim: optimiser settings (``msrcnn.config.schema.OptimConfig`` as a dict).
        evaluator: optional evaluator for validation/test epochs.
        train_only: ``all``, or ``maskiou`` to train only the MaskIoU branch of a frozen detector.
        config: the run's resolved configuration, stored in checkpoints to rebuild the model.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        optim: dict[str, Any] | None = None,
        evaluator: Evaluator | None = None,
        train_only: str = "all",
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if model is None:  # load_from_checkpoint: the model the stored config describes
            if not config or "num_classes" not in config:
                raise ValueError("MaskScoringModule needs a model, or a config with num_classes to build one")
            config = upgrade_config(config)  # an older checkpoint's hyper-parameters, under today's names
            model = model_of_config(config)
        self.model = model
        self.optim = dict(optim or (config or {}).get("optim") or {})
        self.evaluator = evaluator
        self.train_only = train_only
        self.last_results: dict[str, Any] | None = None
        self.schedule: StepSchedule | None = None  # set by configure_optimizers
        self.save_hyperparameters({"config": config or {}, "optim": self.optim, "train_only": train_only})
        if train_only == "maskiou":
            head = getattr(getattr(self.model, "roi_heads", None), "maskiou_head", None)
            if head is None:
                raise ValueError("model.train_only=maskiou needs a model with a MaskIoU head (head=maskiou)")
            own = {id(p) for p in head.parameters()}
            for param in self.model.parameters():
                param.requires_grad_(id(param) in own)
        elif train_only != "all":
            raise ValueError(
                f"model.train_only={train_only!r} is not valid; expected one of {', '.join(TRAIN_ONLY)}"
            )

    def train(self, mode: bool = True):
        """In add-on mode the frozen detector keeps its normalisation statistics."""
        super().train(mode)
        if mode and self.train_only == "maskiou":
            for module in self.model.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ----------------------------------------------------------------- training
    def on_train_start(self) -> None:
        """Lightning (2.2+) keeps the modules' train/eval mode instead of calling ``train()``: apply the
        add-on mode's frozen normalisation statistics here (new modules start in training mode)."""
        if self.train_only == "maskiou":
            self.train()
        # A resumed run restores its LR schedule from the checkpoint, planned for that run's length;
        # the LR steps follow the length of this run (after any TimeBudget re-plan, which runs first).
        length = self.trainer.max_steps
        length = length if length and length > 0 else self.trainer.estimated_stepping_batches
        if self.schedule is not None and math.isfinite(length) and self.schedule.total_steps != int(length):
            self.schedule.replan(int(length))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Seeds torch's generators from (seed, rank, step, batch): the random draws of a training step
        (RPN/RoI sampling, multi-scale choice) do not depend on what ran before it, so a run resumed from a
        checkpoint repeats an uninterrupted run's steps exactly (Lightning does not save RNG states)."""
        seed = int((self.hparams.get("config") or {}).get("seed") or 0)
        key = [seed, self.global_rank, self.global_step, batch_idx]
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(list(images), list(targets))
        loss = sum(losses.values())
        every = int(self.optim.get("check_finite_every_n_steps", 1))
        if every > 0 and self.global_step % every == 0 and not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} (epoch {self.current_epoch}): {parts}. "
                "Lower optim.lr, raise optim.warmup_steps or set trainer.gradient_clip_val."
            )
        batch_size = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/loss", loss, batch_size=batch_size, prog_bar=True)
        return loss

    def configure_optimizers(self):
        cfg = self.optim
        total_batch = self._total_batch_size()
        lr = scaled_lr(cfg["lr"], cfg["base_batch_size"], total_batch)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg["name"] == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
            )
        elif cfg["name"] == "adamw":
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg["weight_decay"])
        else:
            raise ValueError(f"optim.name={cfg['name']!r} is not valid; expected one of sgd, adamw")
        total_steps = int(self.trainer.estimated_stepping_batches)
        self.schedule = StepSchedule(
            total_steps,
            lr_step_epochs=cfg["lr_step_epochs"],
            schedule_epochs=cfg["schedule_epochs"],
            warmup_steps=int(cfg["warmup_steps"]),
            warmup_factor=float(cfg["warmup_factor"]),
            lr_gamma=float(cfg["lr_gamma"]),
        )
        log.info(
            "optimizer %s: lr %.4g for a total batch of %d, %d steps, LR steps at %s",
            cfg["name"],
            lr,
            total_batch,
            total_steps,
            self.schedule.milestones,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_batch_size(self) -> int:
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        per_device = getattr(datamodule, "batch_size", None) or 1
        return int(per_device) * trainer.world_size * trainer.accumulate_grad_batches

    # ----------------------------------------------------------------- evaluation
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model(images)

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        # box-local masks: the evaluator RLE-encodes the pasted masks without building them
        roi_masks = getattr(self.model, "roi_mask_output", None)
        with roi_masks() if roi_masks is not None else contextlib.nullcontext():
            outputs = self.model(list(images))
        if self.evaluator is not None:
            self.evaluator.update(outputs, list(targets))

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        self.last_results = self.evaluator.compute()
        metrics = flatten_metrics(self.last_results)
        if metrics:
            # every rank holds the same results (computed on rank 0, broadcast): "max" syncs them unchanged
            self.log_dict(metrics, sync_dist=True, reduce_fx="max")

    on_test_epoch_start = on_validation_epoch_start
    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end
