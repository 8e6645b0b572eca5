"""Crash-safe JSON output for evaluation results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from msrcnn.atomic import atomic_open

__all__ = ["write_json_atomic"]


def _json_default(obj: Any) -> Any:
    """Serialise numpy scalars and arrays (COCO results often carry them)."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON so that ``path`` is either the old file or the complete new one.

    The JSON goes to a temporary file in the same directory, is flushed and fsynced, then
    ``os.replace``-d over ``path`` (atomic on POSIX and Windows). On any failure, including
    one while serialising, the temporary file is removed and ``path`` is left untouched.
    Numpy scalars/arrays are converted to plain JSON values.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_open(path, "w") as handle:
        json.dump(obj, handle, indent=indent, default=_json_default)
    return path
