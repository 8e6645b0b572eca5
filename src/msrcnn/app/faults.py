"""Faults of the machine, not of the input: a full disk ends a run in one line, and nothing is lost.

Every file of a run (checkpoints, ``results.json``, the detection files) is written atomically
(:mod:`msrcnn.atomic`): a full disk leaves the previous file whole and no temporary file behind, and
raises :class:`~msrcnn.atomic.DiskFullError` naming the file. :func:`report_disk_full` turns that (or any
``ENOSPC`` / ``EDQUOT`` error in an exception's chain, e.g. from a logger's own file) into one line::

    error: no space left on device while writing <file>; last good checkpoint: <ckpt> (resume with ckpt_path=<ckpt>)

and exit status :data:`EXIT_DISK_FULL`. :func:`guard_log_files` keeps a full disk under the run's log file
from printing Python's ``--- Logging error ---`` traceback at every log line: one warning, and the log
goes on on the console (the next checkpoint or results write then ends the run with the line above).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from msrcnn.atomic import DiskFullError, no_space_cause

EXIT_DISK_FULL = 1


# The user's HYDRA_FULL_ERROR, kept here (and so in child processes) while run_cli sets Hydra's own to 1.
_USER_FULL_ERROR = "MSRCNN_FULL_ERROR"


def full_errors_requested() -> bool:
    """``HYDRA_FULL_ERROR=1``: the user wants tracebacks, not one-line reports."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def last_checkpoint_hint(checkpoint_dir: str | os.PathLike | None) -> str:
    """``last good checkpoint: <path> (resume with ckpt_path=<path>)``, or that there is none yet."""
    if checkpoint_dir is None:
        return ""
    last = Path(checkpoint_dir) / "last.ckpt"
    if last.is_file():
        return f"last good checkpoint: {last} (resume with ckpt_path={last})"
    return f"last good checkpoint: none yet (expected at {last})"


def disk_full_message(err: BaseException, checkpoint_dir: str | os.PathLike | None = None) -> str | None:
    """The one line for a full disk somewhere in ``err``'s chain; None when the disk was not full."""
    cause = no_space_cause(err)
    if cause is None:
        return None
    if isinstance(cause, DiskFullError):
        what = str(cause)
    else:
        where = f" while writing {cause.filename}" if cause.filename else ""
        what = f"{(cause.strerror or 'no space left on device').lower()}{where}"
    hint = last_checkpoint_hint(checkpoint_dir)
    return f"{what}; free some space{'; ' + hint if hint else ''}"


@contextlib.contextmanager
def report_disk_full(checkpoint_dir: str | os.PathLike | None = None) -> Iterator[None]:
    """A full disk inside ends the process with one ``error: ...`` line (:func:`disk_full_message`) and
    :data:`EXIT_DISK_FULL`; other errors pass. ``HYDRA_FULL_ERROR=1`` keeps the traceback."""
    try:
        yield
    except BaseException as err:  # noqa: BLE001 - Lightning and torch wrap the OSError in their own types
        message = None if isinstance(err, SystemExit) else disk_full_message(err, checkpoint_dir)
        if message is None or full_errors_requested():
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_DISK_FULL) from None


def guard_log_files(logger: logging.Logger | None = None) -> None:
    """Makes the file handlers of ``logger`` (the root logger) stand down at a full disk with one warning
    instead of a ``--- Logging error ---`` traceback per record."""
    logger = logger or logging.getLogger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and not getattr(handler, "_msrcnn_guarded", False):
            handler.handleError = _disk_full_aware(handler, logger)  # type: ignore[method-assign]
            handler._msrcnn_guarded = True  # type: ignore[attr-defined]


def _disk_full_aware(handler: logging.FileHandler, logger: logging.Logger):
    original = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        if no_space_cause(sys.exc_info()[1]) is None:
            return original(record)
        logger.removeHandler(handler)
        with contextlib.suppress(OSError):
            handler.close()
        print(
            f"warning: no space left on device while writing the log {handler.baseFilename}; "
            "it stops here, the console goes on",
            file=sys.stderr,
            flush=True,
        )
        return None

    return handle_error
