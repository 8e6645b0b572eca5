"""Errors a user can act on: reported as one clear message and a non-zero exit, not a traceback."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from msrcnn.app.faults import _USER_FULL_ERROR, full_errors_requested, report_disk_full
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


def run_cli(hydra_main: Callable[[], Any], schema: type) -> None:
    """Runs a script's ``@hydra.main`` function with Hydra's own errors as one line and exit status 2.

    Hydra's errors (a misspelt key, an unknown group option, an override it cannot parse) are raised to
    here instead of printed (``HYDRA_FULL_ERROR=1`` for Hydra, the user's setting kept for
    :func:`full_errors_requested`) and reported as ``error: <message>``: a misspelt key with the closest
    valid keys of ``schema`` (difflib), an unknown option with the group's options.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ.setdefault(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        if full_errors_requested():
            raise
        print(f"error: {hydra_error_message(err, schema)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None


def hydra_error_message(err: BaseException, schema: type) -> str:
    """One line for an error Hydra raises while composing the configuration."""
    from hydra.conf import HydraConf
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue, ValidationError

    from msrcnn.config.validate import missing_value_message, unknown_key_message

    cause = err.__cause__
    key = getattr(cause, "full_key", None) or getattr(err, "full_key", None)
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = [o for o in err.options if o != "schema"]  # the group's schema is no option of its own
        return f"{group}={option}: no such option; options of {group}: {', '.join(options)}"
    if isinstance(err, OverrideParseException):
        reason = err.message.splitlines()[0]
        return (
            f"cannot parse the override {err.override!r} ({reason}); quote a value with special"
            f" characters, e.g. 'input=\"imgs/*[0-9].png\"'"
        )
    if key and isinstance(cause or err, (ConfigAttributeError, ConfigKeyError)):
        top, _, rest = str(key).partition(".")
        if top == "hydra" and rest:
            return unknown_key_message(HydraConf, rest, root="hydra.")
        return unknown_key_message(schema, key)
    if key and isinstance(cause or err, MissingMandatoryValue):
        return missing_value_message(key)
    if key and isinstance(cause, ValidationError):  # a value of the wrong type for a typed group
        return f"invalid configuration: {key}: {str(cause).splitlines()[0]}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or type(err).__name__


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
                with report_disk_full():  # a full disk: one line (train.py's names its last checkpoint)
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

        from msrcnn.atomic import no_space_cause
        from msrcnn.training.preemption import StoppedBySignal

        if no_space_cause(err) is not None:
            raise  # a full disk: msrcnn.app.faults.report_disk_full says it in one line
        last = Path(checkpoint_dir) / "last.ckpt"
        if isinstance(err, StoppedBySignal):  # saved at the signal (msrcnn.training.preemption)
            then = f"; SLURM job {err.requeued} requeued" if err.requeued else ""
            log.warning(
                "%s %s at step %d; checkpoint saved: %s%s; to resume, run the same command with "
                "hydra.run.dir=%s (ckpt_path=auto) or add ckpt_path=%s",
                what,
                f"stopped by {signal.Signals(err.signum).name}",
                err.step,
                err.checkpoint,
                then,
                Path(checkpoint_dir).parent,
                err.checkpoint,
            )
            raise InterruptedRun(128 + err.signum) from err
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
