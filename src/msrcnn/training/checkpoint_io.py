"""Atomic checkpoint files: a crash, an exception or SIGKILL during a save never leaves a half-written one.

:class:`AtomicCheckpointIO` serialises the checkpoint into a temporary file in the target's own
directory, flushes and ``fsync``s it, then ``os.replace``s it over the target (atomic on POSIX
and Windows within one filesystem) and ``fsync``s the directory. Until the replace, the previous
``last.ckpt`` is untouched; after it, the new one is complete on disk. Remote paths (``s3://`` and
the like) go through Lightning's own :class:`TorchCheckpointIO`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from msrcnn.atomic import atomic_open

log = logging.getLogger("msrcnn.training")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a same-directory temporary file, fsync and ``os.replace``."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def _is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local file: no protocol, or ``file://`` (fsspec's rule: ``s3://...``,
    ``memory://...`` and chained ``a::b`` URLs are not)."""
    parts = re.split(r"(::|://)", os.fspath(path), maxsplit=1)
    return len(parts) == 1 or parts[0] in ("file", "local")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` whose local saves are atomic (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)
        log.debug("checkpoint written: %s", path)
