"""Which implementation of a device-sensitive operation runs: the CPU's or the GPU's.

A few operations have two implementations that compute the same thing. On a GPU the cost that
matters is the host waiting for the device (a *host sync*: reading a value, or an output whose
shape depends on the data), so the GPU variants batch work to need as few syncs as possible. On a
CPU a sync costs nothing and the fastest variant is often a plain loop (torchvision's per-class
NMS, a per-mask paste). :func:`use_gpu_paths` picks by device; :func:`gpu_paths` makes every
device, the CPU included, take the GPU variants inside a ``with`` block: that is how the tests
count a GPU inference's host syncs and compare the GPU variants with torchvision's on a CPU.

Operations with two variants: :func:`msrcnn.ops.nms.batched_nms`,
:func:`msrcnn.ops.paste.paste_masks_in_image`,
:class:`msrcnn.models.torchvision_ports.poolers.MultiScaleRoIAlign`, the RPN's proposal filtering
(:class:`msrcnn.models.torchvision_ports.rpn.RegionProposalNetwork`) and the RoI heads'
post-processing, and the convergence checks of :func:`msrcnn.ops.soft_nms.batched_soft_nms`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torchvision

__all__ = ["gpu_paths", "use_gpu_paths"]

_forced = False


def use_gpu_paths(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` take the GPU variants: any device but the CPU, or inside :func:`gpu_paths`;
    never while tracing (ONNX export), where torchvision's traceable code runs."""
    if torchvision._is_tracing():
        return False
    return _forced or torch.device(device).type != "cpu"


@contextmanager
def gpu_paths() -> Iterator[None]:
    """Inside the block every device, the CPU included, runs the GPU variants."""
    global _forced
    previous, _forced = _forced, True
    try:
        yield
    finally:
        _forced = previous
