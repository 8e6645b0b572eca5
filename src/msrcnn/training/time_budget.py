"""``TimeBudget``: fits training into a wall-clock budget by planning fewer steps (``callbacks.time_budget``)."""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import torch

log = logging.getLogger("msrcnn.training")


class TimeBudget(L.Callback):
    """Fits training into a wall-clock budget by planning fewer steps, never by cutting the schedule.

    It measures the time per step from step ``calibrate_steps`` on (the first steps are slower) and,
    every ``check_every_n_steps`` steps once it has measured that many, projects the end of the run.
    When the planned ``max_steps`` would overrun ``seconds`` (counted from the start of training,
    resumed runs included), it lowers ``max_steps`` to the count that fits and moves the
    LR schedule's steps with it (the module's :class:`~msrcnn.training.StepSchedule`), so a slow or
    busy machine trains for fewer steps but still completes its schedule. It only ever shortens a run.
    On a machine fast enough for the whole plan it does nothing, and the run is the fixed-step run.

    ``summary()`` gives the configured length and every re-plan.
    """

    def __init__(self, seconds: float, calibrate_steps: int = 50, check_every_n_steps: int = 50) -> None:
        if seconds <= 0:
            raise ValueError(f"time budget seconds={seconds} must be positive")
        self.seconds = float(seconds)
        self.calibrate_steps = max(1, int(calibrate_steps))
        self.check_every = max(1, int(check_every_n_steps))
        self.initial_steps: int | None = None  # max_steps as configured
        self.planned_steps: int | None = None  # after any re-planning
        self.replans: list[dict[str, float]] = []
        self._start = 0.0
        self._ref: tuple[int, float] | None = None  # (step, time) where the rate is measured from
        self._elapsed_before = 0.0  # training seconds of the run before a resume

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0:  # an epoch-based run: plan its steps
            planned = trainer.estimated_stepping_batches
            if not math.isfinite(planned):
                raise ValueError(
                    "callbacks.time_budget needs a finite run: set trainer.max_steps or trainer.max_epochs"
                )
            trainer.fit_loop.epoch_loop.max_steps = int(planned)
        configured = int(trainer.max_steps)
        resumed_replan = (
            self.replans
            and configured == self.initial_steps
            and (self.planned_steps or configured) < configured
        )
        if resumed_replan:  # resumed with the same configuration after a re-plan: keep that plan
            trainer.fit_loop.epoch_loop.max_steps = self.planned_steps
        else:  # a new run, or a resume that asks for another length: plan anew
            self.initial_steps, self.replans = configured, []
        self.planned_steps = int(trainer.max_steps)
        self._start = time.perf_counter()
        self._ref = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        now = time.perf_counter()
        if self._ref is None:
            if step >= self.calibrate_steps:  # the first steps (allocation, caches) are not typical
                self._ref = (step, now)
            return
        if step % self.check_every or step < self._ref[0] + self.check_every:
            return
        per_step = (now - self._ref[1]) / (step - self._ref[0])
        left = self.seconds - self._elapsed_before - (now - self._start)
        fits = step + int(max(0.0, left) / per_step)
        # plan 2% short of the budget, so that small drifts of the speed do not re-plan again
        new_total = max(step + 1, step + int(0.98 * max(0.0, left) / per_step))
        if trainer.world_size > 1:  # every rank decides together (check steps are the same on all ranks)
            # on the strategy's device: NCCL reduces CUDA tensors only
            plan = torch.tensor([float(fits), float(new_total)], device=trainer.strategy.root_device)
            both = trainer.strategy.reduce(plan, reduce_op="min")
            fits, new_total = (int(v) for v in both.tolist())
        if fits >= trainer.max_steps:
            return
        old = trainer.max_steps
        trainer.fit_loop.epoch_loop.max_steps = new_total  # what trainer.max_steps reads
        milestones = None
        schedule = getattr(pl_module, "schedule", None)
        if schedule is not None:
            milestones = schedule.replan(new_total)
        self.planned_steps = new_total
        self.replans.append({"at_step": step, "from": old, "to": new_total, "seconds_per_step": per_step})
        if trainer.is_global_zero:
            log.warning(
                "time budget %.0f s: %.3f s/step here, so the run is re-planned from %d to %d steps%s",
                self.seconds,
                per_step,
                old,
                new_total,
                f" (LR steps now at {milestones})" if milestones is not None else "",
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._elapsed_before += time.perf_counter() - self._start

    def summary(self) -> dict[str, object]:
        """The configured length, every re-plan and the budget (for ``results.json``)."""
        return {
            "steps_configured": self.initial_steps,
            "replanned": self.replans,
            "time_budget_seconds": self.seconds,
        }

    def state_dict(self) -> dict[str, object]:
        return {
            "initial_steps": self.initial_steps,
            "planned_steps": self.planned_steps,
            "replans": self.replans,
            "elapsed_before": self._elapsed_before
            + (time.perf_counter() - self._start if self._start else 0.0),
        }

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        self.initial_steps = state_dict["initial_steps"]  # type: ignore[assignment]
        self.planned_steps = state_dict["planned_steps"]  # type: ignore[assignment]
        self.replans = list(state_dict["replans"])  # type: ignore[arg-type]
        self._elapsed_before = float(state_dict["elapsed_before"])  # type: ignore[arg-type]
