"""Which implementation of a device-sensitive operation runs: the CPU's or the GPU's.

A few operations have two implementations that compute the same thing. On a GPU the cost that
matters is the host waiting for the device (a *host sync*: reading a value, or an output whose
shape depends on the data), so the GPU variants batch work to need as few syncs as possible. On a
CPU a sync costs nothing and the fastest variant is often a plain loop (torchvision's per-class
NMS, a per-mask paste). :func:`use_gpu_paths` picks by device. The tests make every device, the CPU
included, take the GPU variants with :func:`msrcnn.testing.gpu_paths.gpu_paths`, which sets
:data:`forced`.

Operations with two variants: :func:`msrcnn.ops.nms.batched_nms`,
:func:`msrcnn.ops.paste.paste_masks_in_image`,
:class:`msrcnn.models.torchvision_ports.poolers.MultiScaleRoIAlign`, the RPN's proposal filtering
(:class:`msrcnn.models.torchvision_ports.rpn.RegionProposalNetwork`) and the RoI heads'
post-processing, and the convergence checks of :func:`msrcnn.ops.soft_nms.batched_soft_nms`.
"""

from __future__ import annotations

import torch
import torchvision

__all__ = ["forced", "use_gpu_paths"]

forced = False
"""True: every device, the CPU included, takes the GPU variants (set by :func:`msrcnn.testing.gpu_paths.gpu_paths`)."""


def use_gpu_paths(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` take the GPU variants: any device but the CPU, or any while
    :data:`forced`; never while tracing (ONNX export), where torchvision's traceable code runs."""
    if torchvision._is_tracing():
        return False
    return forced or torch.device(device).type != "cpu"
