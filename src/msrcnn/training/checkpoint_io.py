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
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger("msrcnn.training")

TMP_SUFFIX = ".tmp"


def _default_file_mode() -> int:
    """What ``open(path, "w")`` would give (mkstemp makes 0600 files): 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (best effort: not every OS/filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a same-directory temporary file, fsync and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _default_file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` whose local saves are atomic (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_torch_save(checkpoint, path)
        log.debug("checkpoint written: %s", path)
