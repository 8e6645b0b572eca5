"""Training: the LightningModule and the learning-rate schedule."""

from msrcnn.training.callbacks import TimeBudget
from msrcnn.training.module import MaskScoringModule, NonFiniteLossError, flatten_metrics
from msrcnn.training.schedule import StepSchedule, lr_factor, milestone_steps, scaled_lr

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
