"""Errors a user can act on: reported as one clear message and a non-zero exit, not a traceback."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from msrcnn.config import ConfigError
from msrcnn.data import DataError
from msrcnn.models import CheckpointError
from msrcnn.training import NonFiniteLossError

log = logging.getLogger("msrcnn")

USER_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError,
    ConfigError,
    DataError,
    FileNotFoundError,
    NonFiniteLossError,
)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM), e.g. a scheduler's pre-emption


class InterruptedRun(SystemExit):
    """The run was stopped from outside (SIGTERM, Ctrl-C): ends the process, and a whole sweep."""


def full_errors_requested() -> bool:
    """``HYDRA_FULL_ERROR=1``: the user wants tracebacks, not one-line reports."""
    return os.environ.get("HYDRA_FULL_ERROR", "") == "1"


def report_user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turns :data:`USER_ERRORS` into ``error: <message>`` on stderr and exit status 2.

    The message is one line, also for a :class:`~msrcnn.data.DataError` raised in a DataLoader worker
    (whose message torch wraps in the worker's traceback). With ``HYDRA_FULL_ERROR=1`` the error is
    re-raised with its traceback instead (a worker's traceback printed first).

    In a multirun with the ``MultirunSummary`` callback (``conf/train.yaml``), a failing job (any
    exception or exit status other than an interruption) is recorded in its directory instead and the
    sweep goes on; see :mod:`msrcnn.app.multirun`.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from msrcnn.app import multirun

        capture = multirun.capturing_failures()
        if capture:
            multirun.clear_failure()
        try:
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as err:
                if full_errors_requested():
                    worker_traceback = getattr(err, "worker_traceback", None)
                    if worker_traceback:
                        print(worker_traceback, file=sys.stderr, flush=True)
                    raise
                print(f"error: {err}", file=sys.stderr, flush=True)
                raise SystemExit(EXIT_USER_ERROR) from None
        except (Exception, SystemExit) as err:
            if (
                not capture
                or isinstance(err, InterruptedRun)
                or (isinstance(err, SystemExit) and not err.code)
            ):
                raise
            multirun.record_failure(err)
            if _several_processes():
                raise  # a rank must not end normally while the others wait for it in a collective
            return None

    return wrapper


def _several_processes() -> bool:
    """Whether this job is one rank of several (DDP, or several SLURM tasks)."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return True
    return any(int(os.environ.get(var, "1") or 1) > 1 for var in ("WORLD_SIZE", "SLURM_NTASKS"))


@contextlib.contextmanager
def report_last_checkpoint(checkpoint_dir: str | Path, what: str = "training") -> Iterator[None]:
    """On any failure or interruption inside, says ``last good checkpoint: <path>`` (or that there is none).

    Checkpoints are written atomically (``msrcnn.training.checkpoint_io``), so ``last.ckpt``, when it
    exists, is complete. Lightning's SIGTERM handling stops at the end of the current batch and saves
    nothing; the run then ends with status 143 (130 after Ctrl-C), which also stops a sweep.
    """
    try:
        yield
    except BaseException as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        last = Path(checkpoint_dir) / "last.ckpt"
        if isinstance(err, SIGTERMException):
            reason, exit_code = "stopped by SIGTERM", EXIT_TERMINATED
        elif isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt):
            reason, exit_code = "interrupted", EXIT_INTERRUPTED  # Lightning turns Ctrl-C into sys.exit(1)
        else:
            reason, exit_code = f"failed ({type(err).__name__})", None
        if last.is_file():
            where = f"last good checkpoint: {last}\n  resume with: ckpt_path={last}"
        else:
            where = f"no checkpoint was written yet (last good checkpoint: none, expected at {last})"
        log.error("%s %s; %s", what, reason, where)  # Hydra logs to the console and <run dir>/<job>.log
        if exit_code is not None:
            raise InterruptedRun(exit_code) from err
        raise
