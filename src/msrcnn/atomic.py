"""Crash-safe file output: a path holds either its previous content or the complete new one.

Used for checkpoints, ``results.json`` and the detection files. The data goes to a temporary file
in the target's directory, is flushed and fsynced, then ``os.replace``-d over the target (atomic on
POSIX and Windows within one filesystem), and the directory is fsynced so the rename persists.

A full disk (or quota) while writing becomes :class:`DiskFullError` naming the target file, whatever
the writer raised (torch's zip writer, for one, turns ``ENOSPC`` into a ``RuntimeError``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space left on the device (or the quota) while writing ``filename``: the file keeps its old content."""

    def __init__(self, filename: str | os.PathLike, code: int = errno.ENOSPC) -> None:
        super().__init__(code, os.strerror(code), os.fspath(filename))

    def __str__(self) -> str:
        return f"{self.strerror.lower()} while writing {self.filename}"


def no_space_cause(err: BaseException | None) -> OSError | None:
    """The ``ENOSPC`` / ``EDQUOT`` error in ``err``'s chain (``__cause__`` / ``__context__``), if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return err
        err = err.__cause__ or err.__context__
    return None


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

    On any exception (or KeyboardInterrupt) the temporary file is removed and ``path`` is untouched; a
    full disk is raised as :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as err:
        if err.errno in NO_SPACE_ERRNOS:
            raise DiskFullError(path, err.errno) from err
        raise
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), default_file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = no_space_cause(err)
        if cause is not None and not isinstance(err, DiskFullError):
            raise DiskFullError(path, cause.errno) from err
        raise
    fsync_dir(path.parent)
