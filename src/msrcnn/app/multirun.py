"""Sweeps that survive failing jobs: ``python src/train.py -m ...`` runs every job and reports the failures.

Hydra 1.3's basic launcher runs the jobs of a sweep one after the other; a job raising an exception
is re-raised by the sweeper once the batch is done (no summary, and later batches never run), and a
job ending in ``SystemExit`` (our one-line user errors) aborts the sweep at once. With the
:class:`MultirunSummary` callback configured (``conf/train.yaml``: ``hydra.callbacks``), a job that
fails instead records ``failed.json`` and ``error.txt`` in its own directory and returns, the next
job runs, and at the end the callback lists the failed jobs and makes the process exit with status 1.
Interruptions (Ctrl-C, SIGTERM) still stop the whole sweep.

The summary reads the job directories, so it also works with launchers that run jobs elsewhere
(``hydra/launcher=slurm``: the sweep directory is on a shared filesystem).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from msrcnn.evaluation.io import write_json_atomic

log = logging.getLogger("msrcnn.app")

FAILED_FILE = "failed.json"
ERROR_FILE = "error.txt"
EXIT_SWEEP_FAILED = 1


def _hydra_config() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def capturing_failures() -> bool:
    """True in a Hydra multirun job whose config has the :class:`MultirunSummary` callback."""
    from hydra.types import RunMode

    hc = _hydra_config()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return False
    callbacks = hc.get("callbacks") or {}
    return any(str(cb.get("_target_", "")).endswith("MultirunSummary") for cb in callbacks.values())


def job_dir() -> Path:
    hc = _hydra_config()
    return Path(hc.runtime.output_dir)


def clear_failure() -> None:
    """Removes a previous attempt's failure record from this job's directory (a re-run sweep dir)."""
    for name in (FAILED_FILE, ERROR_FILE):
        (job_dir() / name).unlink(missing_ok=True)


def _root_cause(err: BaseException) -> BaseException:
    """The exception behind a ``SystemExit`` raised to report it (``raise SystemExit(2) from None``)."""
    if isinstance(err, SystemExit):
        return err.__cause__ or err.__context__ or err
    return err


def record_failure(err: BaseException) -> Path:
    """Writes ``failed.json`` (job number, overrides, error) and ``error.txt`` (traceback) into the job dir."""
    hc = _hydra_config()
    directory = job_dir()
    cause = _root_cause(err)
    message = str(cause) or type(cause).__name__
    record = {
        "job_num": int(hc.job.num) if hc.job.get("num") is not None else None,
        "overrides": list(hc.overrides.task),
        "error": type(cause).__name__,
        "message": message,
        "exit_code": err.code if isinstance(err, SystemExit) else 1,
        "job_dir": str(directory),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ERROR_FILE).write_text("".join(traceback.format_exception(cause)))
    path = write_json_atomic(directory / FAILED_FILE, record, indent=2)
    log.error(
        "job %s failed (%s: %s); the sweep goes on. Details: %s",
        record["job_num"],
        record["error"],
        message.splitlines()[0] if message else "",
        directory / ERROR_FILE,
    )
    return path


def collect_failures(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The ``failed.json`` records under a sweep directory, by job number."""
    records = []
    for path in Path(sweep_dir).glob(f"**/{FAILED_FILE}"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            records.append(
                {
                    "job_num": None,
                    "overrides": [],
                    "error": "unreadable",
                    "message": str(path),
                    "job_dir": str(path.parent),
                }
            )
    return sorted(records, key=lambda r: (r.get("job_num") is None, r.get("job_num") or 0))


def swept_keys(sweep_overrides: list[str]) -> set[str]:
    """The keys a sweep's command-line overrides vary (``a=1,2``, ``a=choice(1,2)``, ``a=range(3)``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
    except Exception:  # noqa: BLE001 - a summary never fails on odd overrides: show them all
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _job_label(overrides: list[str], keys: set[str] | None) -> str:
    shown = [o for o in overrides if not keys or o.partition("=")[0].lstrip("+~") in keys]
    return " ".join(shown)


def format_failures(
    records: list[dict[str, Any]], num_jobs: int | None = None, keys: set[str] | None = None
) -> str:
    """One line per failed job (its swept overrides, the error) and the path of its traceback."""
    total = f" of {num_jobs}" if num_jobs else ""
    lines = [f"multirun: {len(records)}{total} jobs failed:"]
    for r in records:
        first = (r.get("message") or "").splitlines()[0] if r.get("message") else ""
        lines.append(
            f"  #{r.get('job_num')} {_job_label(r.get('overrides') or [], keys)}: {r.get('error')}: {first}"
        )
        lines.append(f"      {Path(r.get('job_dir', '.')) / ERROR_FILE}")
    return "\n".join(lines)


class MultirunSummary(Callback):
    """Hydra callback: after a sweep, lists the jobs that recorded a failure and exits with status 1."""

    def __init__(self) -> None:
        self.num_jobs = 0
        self.keys: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.keys = swept_keys(list(config.hydra.overrides.task))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self.num_jobs += 1  # only seen for in-process launchers (the basic one)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = collect_failures(sweep_dir)
        if not records:
            return
        write_json_atomic(sweep_dir / "failures.json", records, indent=2)
        summary = format_failures(records, self.num_jobs or None, self.keys)
        print(summary, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SWEEP_FAILED)
