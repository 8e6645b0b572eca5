"""Callbacks: a plain-text progress line for logs and terminals without a progress bar."""

from __future__ import annotations

import logging
import time

import lightning as L

from msrcnn.training.eta import eta_suffix, planned_steps

log = logging.getLogger("msrcnn.training")


class StepLogger(L.Callback):
    """Logs ``step k/N  loss ...  s/step  eta ...`` (N: the planned steps; eta: the run's time left,
    :class:`~msrcnn.training.eta.RunEta`) every ``trainer.log_every_n_steps`` optimizer steps (rank 0 only):
    the text log follows the metrics logger's cadence, one setting for both."""

    def __init__(self) -> None:
        self.every = 1
        self._start = 0.0
        self._last_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._last_step = trainer.global_step
        self.every = max(1, int(trainer.log_every_n_steps))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or step == self._last_step or not trainer.is_global_zero:
            return
        elapsed = time.perf_counter() - self._start
        per_step = elapsed / max(1, step - self._last_step)
        metrics = trainer.callback_metrics
        losses = "  ".join(
            f"{k.removeprefix('train/')} {float(v):.3f}"
            for k, v in sorted(metrics.items())
            if k.startswith("train/")
        )
        total = planned_steps(trainer) or "?"
        log.info("step %d/%s  %s  %.2f s/step%s", step, total, losses, per_step, eta_suffix(trainer))
