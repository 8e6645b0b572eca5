"""Instance masks as box-local crops: what a data loader sends, expanded to full masks on the device.

A training image of a many-instance set holds ~190 instances; at a 512 x 832 input their full-image
uint8 masks are 81 MB per image, almost all zeros, which a DataLoader worker writes into shared memory,
the main process pins and the GPU receives. :class:`MaskCrops` carries only each mask's bounding
window (a few hundred bytes per instance) and its position; :meth:`MaskCrops.dense` writes them into
the ``[N, H, W]`` masks on whatever device the crops were moved to, in one scatter with no host sync.
``MaskScoringRCNN`` accepts either form in ``targets["masks"]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MaskCrops", "dense_masks"]


class MaskCrops:
    """``N`` binary masks of an ``H x W`` image, each stored as its window ``values`` at ``(y0, x0)``.

    Args:
        values: uint8 ``[sum(h * w)]``, the windows one after the other, each in row-major order.
        windows: int64 ``[N, 4]`` ``(y0, x0, h, w)`` of each window (inside the image; ``h * w`` may be 0).
        size: ``(H, W)`` of the image.
    """

    def __init__(self, values: Tensor, windows: Tensor, size: tuple[int, int]) -> None:
        self.values = values
        self.windows = windows
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.windows.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.size)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def __repr__(self) -> str:
        return f"MaskCrops({len(self)} masks, {self.size[0]}x{self.size[1]}, {self.values.numel()} window pixels)"

    # moved by Lightning (a ``to`` method), pinned by the DataLoader (``pin_memory``)
    def to(self, *args, **kwargs) -> MaskCrops:
        return MaskCrops(self.values.to(*args, **kwargs), self.windows.to(*args, **kwargs), self.size)

    def pin_memory(self) -> MaskCrops:
        return MaskCrops(self.values.pin_memory(), self.windows.pin_memory(), self.size)

    def clone(self) -> MaskCrops:
        return MaskCrops(self.values.clone(), self.windows.clone(), self.size)

    def hflip(self) -> MaskCrops:
        """The masks mirrored left-right (torchvision's ``horizontal_flip`` of the full masks)."""
        y0, x0, h, w = self.windows.unbind(1)
        owner, start, rows, cols = self._pixel_coordinates()
        width = w[owner]
        values = torch.empty_like(self.values)
        values[start + rows * width + (width - 1 - cols)] = self.values
        return MaskCrops(values, torch.stack([y0, self.size[1] - x0 - w, h, w], dim=1), self.size)

    def _pixel_coordinates(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For each stored pixel: its mask, its mask's first stored pixel, and its row and column
        inside the mask's window (``output_size``: no host sync)."""
        _, _, h, w = self.windows.unbind(1)
        area = h * w
        total = self.values.numel()
        owner = torch.repeat_interleave(torch.arange(len(self), device=self.device), area, output_size=total)
        start = (torch.cumsum(area, 0) - area)[owner]
        local = torch.arange(total, device=self.device) - start
        width = w[owner].clamp(min=1)
        return owner, start, local // width, local % width

    def dense(self) -> Tensor:
        """uint8 ``[N, H, W]`` masks on the crops' device (one scatter, no host sync)."""
        height, width = self.size
        out = torch.zeros(len(self) * height * width, dtype=torch.uint8, device=self.device)
        if self.values.numel():
            owner, _, rows, cols = self._pixel_coordinates()
            y0, x0 = self.windows[:, 0][owner], self.windows[:, 1][owner]
            out[(owner * height + y0 + rows) * width + x0 + cols] = self.values
        return out.view(len(self), height, width)


def dense_masks(masks: Tensor | MaskCrops) -> Tensor:
    """``masks`` as ``[N, H, W]`` full masks (expanded from :class:`MaskCrops` where needed)."""
    return masks.dense() if isinstance(masks, MaskCrops) else masks
