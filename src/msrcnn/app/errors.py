"""Errors a user can act on: reported as one clear message and a non-zero exit, not a traceback."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from msrcnn.config import ConfigError
from msrcnn.data import DataError
from msrcnn.training import NonFiniteLossError

log = logging.getLogger("msrcnn")

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError, NonFiniteLossError)
EXIT_USER_ERROR = 2


def report_user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turns :data:`USER_ERRORS` into ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapper
