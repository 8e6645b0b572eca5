"""``trainer.*``: every argument of :class:`lightning.Trainer`, read from its signature.

The schema is derived from ``lightning.Trainer.__init__``, so any Trainer argument (``profiler``,
``overfit_batches``, ``detect_anomaly``, ...) is accepted and a misspelt one is refused before any
work. Simple annotations (``int``, ``float``, ``bool``, ``str``, optional or not) are type-checked;
the others (unions such as ``int | float``) take any value and Lightning checks them. ``logger``,
``callbacks`` and ``plugins`` are not settable here: the ``logger`` and ``callbacks`` groups build
them (and ``plugins`` carries the atomic checkpoint writer).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import lightning

from msrcnn.config import derive

# Built by other config groups, not set under trainer.*
BUILT_ELSEWHERE = {
    "logger": "the logger group (logger=...)",
    "callbacks": "the callbacks group (callbacks.*)",
    "plugins": "the project (atomic checkpoint writes)",
}

# This project's defaults where they differ from Lightning's.
PROJECT_DEFAULTS: dict[str, Any] = {
    "precision": "32-true",
    "max_epochs": 18,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 20,
    "enable_progress_bar": True,
    "enable_model_summary": True,
    "use_distributed_sampler": False,  # the data module shards itself (no padded duplicates)
}


def trainer_arguments() -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``lightning.Trainer`` settable as ``trainer.*``."""
    params = inspect.signature(lightning.Trainer.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and n not in BUILT_ELSEWHERE}


def _make_trainer_config() -> type:
    arguments = derive.parameters_of(lightning.Trainer.__init__)
    parameters = {
        name: arguments[name].replace(default=PROJECT_DEFAULTS.get(name, arguments[name].default))
        for name in trainer_arguments()
    }
    cls = derive.schema_of(
        "TrainerConfig",
        parameters,
        lead=[("_target_", str, dataclasses.field(default="lightning.Trainer"))],
        doc="``lightning.Trainer``'s arguments (see :mod:`msrcnn.config.trainer`).",
    )
    cls.__module__ = "msrcnn.config.schema"
    return cls


TrainerConfig = _make_trainer_config()
