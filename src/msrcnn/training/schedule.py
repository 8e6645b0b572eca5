"""Learning-rate schedule of the paper (SPEC §6): linear warm-up, then steps at fixed fractions."""

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
