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
import typing
from typing import Any, Optional, Union

import lightning

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

_SIMPLE = (int, float, bool, str)


def _schema_type(hint: Any) -> Any:
    """The annotation when OmegaConf can check it (a simple type, optional or not), else ``Any``."""
    if hint in _SIMPLE:
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        if other in _SIMPLE:
            return Optional[other]  # noqa: UP045 - a runtime type for OmegaConf
    return Any


def trainer_arguments() -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``lightning.Trainer`` settable as ``trainer.*``."""
    params = inspect.signature(lightning.Trainer.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and n not in BUILT_ELSEWHERE}


def _make_trainer_config() -> type:
    hints = typing.get_type_hints(lightning.Trainer.__init__)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default="lightning.Trainer"))]
    for name, param in trainer_arguments().items():
        default = PROJECT_DEFAULTS.get(name, param.default)
        fields.append((name, _schema_type(hints.get(name, Any)), dataclasses.field(default=default)))
    cls = dataclasses.make_dataclass("TrainerConfig", fields)
    cls.__doc__ = "``lightning.Trainer``'s arguments (see :mod:`msrcnn.config.trainer`)."
    cls.__module__ = "msrcnn.config.schema"
    return cls


TrainerConfig = _make_trainer_config()
