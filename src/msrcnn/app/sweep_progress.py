"""How far a ``-m`` sweep is: its job count at the start, ``job k of n`` at the start of each job's log, and
the expected total once the first job has run (``conf/train.yaml``: ``hydra.callbacks.sweep_progress``).

The count is the basic sweeper's: the product of the swept values of the command line and of
``hydra.sweeper.params``. With another sweeper (one that picks its trials as it goes) the count is not
known in advance and the lines say ``job k``. The expected total is said for the basic launcher only,
which runs the jobs one after the other (a SLURM sweep runs them side by side).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from msrcnn.app.multirun import swept_keys
from msrcnn.training.eta import format_duration

log = logging.getLogger("msrcnn.app")

_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def count_jobs(config: DictConfig) -> int | None:
    """The jobs of the sweep ``config`` describes (its ``hydra.overrides.task`` and ``hydra.sweeper.params``),
    as the basic sweeper expands them; None for another sweeper or overrides it cannot expand here."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        batches = BasicSweeper.split_arguments(overrides, None)
    except Exception:  # noqa: BLE001 - e.g. glob() needs the config loader: the count stays unknown
        return None
    return sum(len(batch) for batch in batches)


def _in_sweep(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


class SweepProgress(Callback):
    """Hydra callback: the sweep's size at the start, ``job k of n`` first in each job's log, the expected
    total after the first job."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.sequential = False
        self.jobs_done = 0
        self.keys: set[str] = set()  # the swept keys: a job is named by its values of them
        self._job_start = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.total = count_jobs(config)
        params = config.hydra.get("sweeper", {}).get("params") or {}
        self.keys = swept_keys([*(f"{k}={v}" for k, v in params.items()), *config.hydra.overrides.task])
        launcher = config.hydra.get("launcher") or {}
        self.sequential = launcher.get("_target_") == _BASIC_LAUNCHER
        if self.total is not None:
            print(f"multirun: {self.total} jobs", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_start = time.perf_counter()
        if not _in_sweep(config):
            return
        of = f" of {self.total}" if self.total else ""
        swept = [o for o in config.hydra.overrides.task if o.partition("=")[0].lstrip("+~") in self.keys]
        log.info("job %d%s: %s", int(config.hydra.job.num) + 1, of, " ".join(swept))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not _in_sweep(config):
            return
        self.jobs_done += 1
        if self.jobs_done != 1 or not self.sequential or not self.total or self.total < 2:
            return
        took = time.perf_counter() - self._job_start
        log.info(
            "multirun: job 1 of %d took %s: the %d jobs take about %s in all (about %s left)",
            self.total,
            format_duration(took),
            self.total,
            format_duration(took * self.total),
            format_duration(took * (self.total - 1)),
        )
