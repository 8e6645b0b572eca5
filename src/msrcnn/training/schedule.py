"""Learning-rate schedule of the paper (paper Sec. 4.1, after Detectron): linear warm-up, then steps at fixed fractions."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


def scaled_lr(base_lr: float, base_batch_size: int, total_batch_size: int) -> float:
    """Linear scaling rule: ``base_lr`` is for ``base_batch_size`` images per optimizer step."""
    if base_batch_size <= 0 or total_batch_size <= 0:
        raise ValueError(
            f"batch sizes must be positive, got base {base_batch_size}, total {total_batch_size}"
        )
    return base_lr * total_batch_size / base_batch_size


def milestone_steps(step_epochs: Sequence[float], schedule_epochs: float, total_steps: int) -> list[int]:
    """The paper's LR steps (epochs 14 and 17 of 18) placed at the same fractions of ``total_steps``."""
    if schedule_epochs <= 0:
        raise ValueError(f"optim.schedule_epochs={schedule_epochs} must be positive")
    return sorted(int(round(e / schedule_epochs * total_steps)) for e in step_epochs)


def lr_factor(
    step: int, *, warmup_steps: int, warmup_factor: float, milestones: Sequence[int], gamma: float
) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (0-based)."""
    decay = gamma ** bisect_right(list(milestones), step)
    if step < warmup_steps:
        alpha = step / warmup_steps
        return decay * (warmup_factor * (1 - alpha) + alpha)
    return decay


class StepSchedule:
    """The LR multiplier of a run whose length may be re-planned while it trains.

    The paper's steps sit at fixed fractions (``lr_step_epochs / schedule_epochs``) of ``total_steps``,
    so when :class:`~msrcnn.training.callbacks.TimeBudget` shortens a run, :meth:`replan` moves them
    with it and the run still ends with its decayed LR. A callable object rather than a function,
    so ``LambdaLR.state_dict`` saves (and a resumed run restores) the planned length. Its arguments are
    the ``optim`` group's keys of the same names.
    """

    def __init__(
        self,
        total_steps: int,
        *,
        lr_step_epochs: Sequence[float],
        schedule_epochs: float,
        warmup_steps: int,
        warmup_factor: float,
        lr_gamma: float,
    ) -> None:
        self.lr_step_epochs = [float(e) for e in lr_step_epochs]
        self.schedule_epochs = float(schedule_epochs)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.lr_gamma = float(lr_gamma)
        self.total_steps = 0
        self.milestones: list[int] = []
        self.replan(total_steps)

    def replan(self, total_steps: int) -> list[int]:
        """Sets the run length; returns the new LR milestones."""
        self.total_steps = int(total_steps)
        self.milestones = milestone_steps(self.lr_step_epochs, self.schedule_epochs, self.total_steps)
        return self.milestones

    def __call__(self, step: int) -> float:
        return lr_factor(
            step,
            warmup_steps=self.warmup_steps,
            warmup_factor=self.warmup_factor,
            milestones=self.milestones,
            gamma=self.lr_gamma,
        )
