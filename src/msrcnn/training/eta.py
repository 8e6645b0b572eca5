"""The run's ETA: what the whole training will cost, said once the step time is measured, and the time
left on every progress line after it (the step logger's line and the progress bar).

:class:`RunEta` measures the time per optimizer step after ``warmup_steps`` (the first steps allocate
memory and fill caches) over ``min_steps`` steps or ``min_seconds``, whichever comes first, so that a
slow machine hears within its first minute what the run will cost. It then says in one line the planned
steps, the measured s/step, the expected training time and the evaluation that follows, e.g.::

    4,284 steps planned at 10 s/step here: about 11 h 54 min of training, then the evaluation of 200
    images at 800 px. On a CPU, experiment=demo trains in about 7 min.

On a CPU a run planned to train for more than ``long_run_seconds`` gets one more line with the quicker
alternatives; the run goes on as configured. The planned total is ``trainer.max_steps`` (or the steps of
``max_epochs``), so a re-plan by :class:`~msrcnn.training.TimeBudget` shows in the time left at once.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import CustomTimeColumn

from msrcnn.training.time_budget import TimeBudget

log = logging.getLogger("msrcnn.training")


def _now() -> float:
    """The clock of the ETA (a test drives it)."""
    return time.perf_counter()


DEMO_HINT = "On a CPU, experiment=demo trains in about 7 min."


def format_duration(seconds: float) -> str:
    """``45 s``, ``4 min 40 s`` (under 10 min), ``47 min``, ``11 h 54 min``."""
    seconds = max(0.0, float(seconds))
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 599.5:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 3570:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_rate(seconds_per_step: float) -> str:
    """``0.284``, ``10``, ``1,000`` (s/step)."""
    return f"{seconds_per_step:,.0f}" if seconds_per_step >= 100 else f"{seconds_per_step:.3g}"


def planned_steps(trainer: L.Trainer) -> int | None:
    """The optimizer steps this run is planned to take: ``max_steps``, or the steps of ``max_epochs``
    (whichever ends the run first); None for an endless run."""
    planned = trainer.estimated_stepping_batches  # Lightning's: max_steps, max_epochs or the lower of both
    return int(planned) if math.isfinite(planned) and planned > 0 else None


def validations_between(trainer: L.Trainer, step: int, planned: int) -> int:
    """How many validations during training fall after ``step`` up to ``planned`` (0 without validation)."""
    batches = sum(trainer.num_val_batches) if isinstance(trainer.num_val_batches, list) else 0
    if not batches or not trainer.limit_val_batches:
        return 0
    per_epoch, every = trainer.num_training_batches, trainer.val_check_batch
    if not every or not math.isfinite(per_epoch) or not math.isfinite(every):
        return 0
    interval = int(every) * (trainer.check_val_every_n_epoch or 1) if every >= per_epoch else int(every)
    return max(0, planned // interval - step // interval)


def find_eta(trainer: L.Trainer) -> RunEta | None:
    return next((c for c in trainer.callbacks if isinstance(c, RunEta)), None)


def eta_suffix(trainer: L.Trainer) -> str:
    """``  eta 11 h 50 min`` for a progress line (empty before the step time is measured)."""
    eta = find_eta(trainer)
    left = eta.remaining(trainer) if eta is not None else None
    return "" if left is None else f"  eta {format_duration(left)}"


def _on_cpu(trainer: L.Trainer) -> bool:
    return trainer.strategy.root_device.type == "cpu"


class RunEta(L.Callback):
    """Measures the step time early, announces the run's cost once, and gives the time left.

    ``evaluation``: what follows training (``"200 images at 800 px"``), named in the announcement;
    ``demo_hint``: on a CPU, point at ``experiment=demo`` (for runs on the embedded data other than the demo).
    """

    def __init__(
        self,
        warmup_steps: int = 1,
        min_steps: int = 10,
        min_seconds: float = 20.0,
        evaluation: str | None = None,
        demo_hint: bool = True,
        long_run_seconds: float = 3600.0,
    ) -> None:
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_steps = max(1, int(min_steps))
        self.min_seconds = float(min_seconds)
        self.evaluation = evaluation
        self.demo_hint = demo_hint
        self.long_run_seconds = float(long_run_seconds)
        self.seconds_per_step: float | None = None
        self.announcement: str | None = None  # the ETA line, once said
        self._start: tuple[int, float] = (0, 0.0)
        self._ref: tuple[int, float] | None = None  # (step, time) the rate is measured from
        self._last_step = -1
        self.validation_seconds: float | None = None  # the last validation during training
        self._val_start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (int(trainer.global_step), _now())
        self._ref = None
        self._last_step = int(trainer.global_step)
        self.seconds_per_step = None
        self.announcement = None
        self.validation_seconds = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._val_start = _now()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is None or trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        self.validation_seconds = _now() - self._val_start
        self._val_start = None
        if self._ref is not None:  # the step time excludes the validations (counted on their own)
            self._ref = (self._ref[0], self._ref[1] + self.validation_seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = int(trainer.global_step)
        if step == self._last_step:  # gradient accumulation: no optimizer step
            return
        self._last_step = step
        now = _now()
        if self._ref is None:
            if step >= self._start[0] + self.warmup_steps:
                self._ref = (step, now)
            return
        if step <= self._ref[0]:
            return
        elapsed = now - self._ref[1]
        self.seconds_per_step = elapsed / (step - self._ref[0])
        measured = step - self._ref[0] >= self.min_steps or elapsed >= self.min_seconds
        if self.announcement is None and measured:
            self._announce(trainer, now)

    def remaining(self, trainer: L.Trainer) -> float | None:
        """Seconds of training left at the measured rate (None before it is measured or without a plan)."""
        planned = planned_steps(trainer)
        if self.announcement is None or self.seconds_per_step is None or planned is None:
            return None
        step = int(trainer.global_step)
        left = max(0, planned - step) * self.seconds_per_step
        if self.validation_seconds is not None:
            left += validations_between(trainer, step, planned) * self.validation_seconds
        return left

    def _budget_plan(self, trainer: L.Trainer, planned: int, now: float) -> tuple[int, Any] | None:
        """The steps a :class:`~msrcnn.training.TimeBudget` will re-plan to, when the plan overruns it."""
        budget = next((c for c in trainer.callbacks if isinstance(c, TimeBudget)), None)
        if budget is None or self.seconds_per_step is None:
            return None
        step = int(trainer.global_step)
        left = budget.seconds - budget._elapsed_before - (now - self._start[1])
        fits = step + int(0.98 * max(0.0, left) / self.seconds_per_step)
        return (fits, budget) if fits < planned else None

    def _announce(self, trainer: L.Trainer, now: float) -> None:
        per_step = float(self.seconds_per_step)
        planned = planned_steps(trainer)
        if planned is None:
            self.announcement = (
                f"{format_rate(per_step)} s/step here (no planned end: trainer.max_steps/max_epochs unset)"
            )
        else:
            step = int(trainer.global_step)
            total = (planned - step) * per_step + (now - self._start[1])
            line = f"{planned:,} steps planned at {format_rate(per_step)} s/step here: about {format_duration(total)} of training"
            validations = validations_between(trainer, step, planned)
            if validations:
                line += f", plus {validations} validations during it (in the eta once the first is timed)"
            replan = self._budget_plan(trainer, planned, now)
            if replan is not None:
                fits, budget = replan
                total = budget.seconds - budget._elapsed_before
                line += (
                    f"; callbacks.time_budget.seconds={budget.seconds:g} will re-plan it to about {fits:,} steps"
                    f" ({format_duration(total)}, the same LR schedule)"
                )
            if self.evaluation:
                line += f", then the evaluation of {self.evaluation}"
            self.announcement = line + "."
        on_cpu = _on_cpu(trainer)
        if on_cpu and self.demo_hint:
            self.announcement += " " + DEMO_HINT
        if not trainer.is_global_zero:
            return
        log.info("%s", self.announcement)
        if planned is not None and on_cpu and total > self.long_run_seconds:
            log.warning(
                "this run trains for about %s on this CPU and goes on as configured; quicker: experiment=demo"
                " (about 7 min), experiment=smoke (under a minute), or callbacks.time_budget.seconds=%d"
                " (as many steps as fit in %s, the same LR schedule)",
                format_duration(total),
                int(self.long_run_seconds),
                format_duration(self.long_run_seconds),
            )


def _bar_metrics(trainer: L.Trainer, metrics: dict[str, Any]) -> dict[str, Any]:
    """The bar's metrics without Lightning's ``v_num``, with the run's time left first."""
    metrics = {k: v for k, v in metrics.items() if k != "v_num"}
    eta = find_eta(trainer)
    left = eta.remaining(trainer) if eta is not None else None
    return metrics if left is None else {"eta": format_duration(left), **metrics}


def step_progress_bar(rich: bool = True) -> L.Callback:
    """The progress bar of the run's optimizer steps of the planned total with the run's time left, not
    one epoch's batches: rich's (``rich=True``) or tqdm's."""
    return StepRichProgressBar() if rich else StepTQDMProgressBar()


class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar over the run's optimizer steps of the planned total (re-planned by the time
    budget, never reset per epoch), its metrics led by the run's time left (:class:`RunEta`)."""

    @property
    def total_train_batches(self) -> int | float:
        return planned_steps(self.trainer) or float("inf")

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.is_disabled or self.progress is None:
            return
        if self.train_progress_bar_id is None:  # one task for the whole run, never reset per epoch
            self._initialize_train_progress_bar_id()
        self.progress.update(
            self.train_progress_bar_id, total=self.total_train_batches, completed=trainer.global_step
        )
        self.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        if self.progress is not None:
            self.progress.update(self.train_progress_bar_id, total=self.total_train_batches)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _bar_metrics(trainer, super().get_metrics(trainer, pl_module))

    def configure_columns(self, trainer: L.Trainer) -> list:
        """Lightning's columns without rich's elapsed / remaining time (the epoch's): the run's is the eta."""
        return [c for c in super().configure_columns(trainer) if not isinstance(c, CustomTimeColumn)]


class StepTQDMProgressBar(TQDMProgressBar):
    """The same with tqdm (``callbacks.rich_progress=false``)."""

    STEP_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]"

    @property
    def total_train_batches(self) -> int | float:
        return planned_steps(self.trainer) or float("inf")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.bar_format = self.STEP_FORMAT
        self.train_progress_bar.set_description("Training")

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        total = self.total_train_batches
        self.train_progress_bar.total = None if not math.isfinite(total) else total
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        total = self.total_train_batches
        bar.total = None if not math.isfinite(total) else total
        if self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _bar_metrics(trainer, super().get_metrics(trainer, pl_module))
