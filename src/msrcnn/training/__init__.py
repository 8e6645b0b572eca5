"""Training: the LightningModule and the learning-rate schedule."""

from msrcnn.training.module import MaskScoringModule, NonFiniteLossError, flatten_metrics
from msrcnn.training.schedule import StepSchedule, lr_factor, milestone_steps, scaled_lr
from msrcnn.training.time_budget import TimeBudget

__all__ = [
    "MaskScoringModule",
    "NonFiniteLossError",
    "StepSchedule",
    "TimeBudget",
    "flatten_metrics",
    "lr_factor",
    "milestone_steps",
    "scaled_lr",
]
