"""Crash-safe file output: a path holds either its previous content or the complete new one.

Used for checkpoints, ``results.json`` and the detection files. The data goes to a temporary file
in the target's directory, is flushed and fsynced, then ``os.replace``-d over the target (atomic on
POSIX and Windows within one filesystem), and the directory is fsynced so the rename persists.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """What ``open(path, "w")`` would give (``mkstemp`` makes 0600 files): 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: Path) -> None:
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


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file that replaces ``path`` only when the ``with`` block succeeds.

    On any exception (or KeyboardInterrupt) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), default_file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
