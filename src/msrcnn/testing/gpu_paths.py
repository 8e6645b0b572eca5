"""Running the GPU code paths on any device, the CPU included (see :mod:`msrcnn.ops.gpu_paths`).

That is how the tests count a GPU inference's host syncs (:mod:`msrcnn.testing.host_syncs`) and
compare the GPU variants with torchvision's on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from msrcnn.ops import gpu_paths as _decision

__all__ = ["gpu_paths"]


@contextmanager
def gpu_paths() -> Iterator[None]:
    """Inside the block every device, the CPU included, runs the GPU variants (except while tracing:
    :func:`msrcnn.ops.gpu_paths.use_gpu_paths`)."""
    previous, _decision.forced = _decision.forced, True
    try:
        yield
    finally:
        _decision.forced = previous
