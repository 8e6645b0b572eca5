"""Training-time transforms on ``torchvision.transforms.v2`` and ``tv_tensors``.

A sample is ``(tv_tensors.Image, target)`` with ``target["boxes"]`` a ``tv_tensors.BoundingBoxes``
(XYXY) and ``target["masks"]`` a ``tv_tensors.Mask`` or, before resizing, :class:`EncodedMasks`
(RLEs decoded by :class:`ResizeToInput` directly at the resized size). Other target entries (labels,
ids) pass through untouched.

:class:`ResizeToInput` resizes to the detector's input size with exactly the rule and the arithmetic
of torchvision's ``GeneralizedRCNNTransform`` (short side to one of ``min_sizes``, drawn per image,
long side capped at ``max_size``; bilinear image, nearest masks, scaled boxes), so the model, seeing
``target["at_input_size"]``, leaves image and target as they are (``MaskScoringTransform.resize``).
Training masks are thus never materialised at full resolution, and the resize runs in the
DataLoader workers instead of the training process.

Random choices draw from torch's global generator, which :class:`~msrcnn.data.datamodule.DetectionDataModule`
seeds per item, so augmentation is reproducible. Only training uses these: validation and test
images keep their original size (the model resizes them and maps predictions back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.models.detection.transform import resize_boxes
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from msrcnn.data.masks import EncodedMasks, nearest_source_indices
from msrcnn.ops.mask_crops import MaskCrops

__all__ = [
    "ResizeToInput",
    "build_train_transforms",
    "input_size",
    "resize_scale",
]


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """torchvision's GeneralizedRCNNTransform rule: short side to ``min_size`` unless the long side
    would then exceed ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


def input_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The ``(height, width)`` torchvision's detection transform resizes a ``height x width`` image to:
    ``F.interpolate(scale_factor=s, recompute_scale_factor=True)`` truncates ``side * s``."""
    scale = resize_scale(height, width, min_size, max_size)
    return int(height * scale), int(width * scale)


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of ``[..., H, W]`` masks by gathering the rows and columns torch's
    ``mode="nearest"`` reads (no float copy of the masks)."""
    height, width = mask.shape[-2:]
    rows = torch.from_numpy(nearest_source_indices(height, size[0]).copy())  # the cached array is read-only
    cols = torch.from_numpy(nearest_source_indices(width, size[1]).copy())
    return mask.index_select(-2, rows).index_select(-1, cols)


class ResizeToInput(v2.Transform):
    """Resize to the detector's input size (scale jitter when ``min_sizes`` has several entries).

    Images are resized bilinearly without antialiasing, masks by nearest neighbour (an
    :class:`EncodedMasks` is decoded at the new size), boxes by torchvision's ``resize_boxes``: the
    same numbers, bit for bit, as ``GeneralizedRCNNTransform`` would compute in the model.
    ``mask_crops=True`` (the data module's training loader) decodes an :class:`EncodedMasks` into
    :class:`~msrcnn.ops.mask_crops.MaskCrops`, each mask's window only: a worker then sends a few
    hundred bytes per instance instead of a full-image plane, and the model expands them on its device.
    """

    _transformed_types = (tv_tensors.Image, tv_tensors.BoundingBoxes, tv_tensors.Mask, EncodedMasks)

    def __init__(self, min_sizes: Sequence[int], max_size: int, mask_crops: bool = False) -> None:
        super().__init__()
        self.mask_crops = mask_crops
        sizes = [int(size) for size in min_sizes]
        if not sizes or any(size <= 0 for size in sizes) or int(max_size) <= 0:
            raise ValueError(
                f"min_sizes must be non-empty and positive and max_size positive, got {min_sizes}, {max_size}"
            )
        self.min_sizes = sizes
        self.max_size = int(max_size)

    def draw_size(self, height: int, width: int) -> tuple[int, int]:
        """The input size of a ``height x width`` image: one of ``min_sizes`` drawn from torch's global
        generator (no draw when there is only one), as :meth:`make_params` does."""
        choice = int(torch.randint(len(self.min_sizes), ()).item()) if len(self.min_sizes) > 1 else 0
        return input_size(int(height), int(width), self.min_sizes[choice], self.max_size)

    def _params(self, flat_inputs: list[Any], size: tuple[int, int] | None) -> dict[str, Any]:
        images = [inpt for inpt in flat_inputs if isinstance(inpt, tv_tensors.Image)]
        if len(images) != 1:
            raise TypeError(
                f"ResizeToInput needs exactly one tv_tensors.Image in the sample, got {len(images)}"
            )
        height, width = (int(side) for side in images[0].shape[-2:])
        if size is None:
            size = self.draw_size(height, width)
        return {"original": (height, width), "size": (int(size[0]), int(size[1]))}

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self._params(flat_inputs, None)

    def at_size(self, sample: Any, size: tuple[int, int]) -> Any:
        """``self(sample)`` with the input size given instead of drawn (e.g. by an earlier
        :meth:`draw_size`): no random number is used."""
        flat_inputs, spec = tree_flatten(sample)
        needs = self._needs_transform_list(flat_inputs)
        params = self._params([inpt for inpt, need in zip(flat_inputs, needs) if need], size)
        outputs = [self.transform(inpt, params) if need else inpt for inpt, need in zip(flat_inputs, needs)]
        return tree_unflatten(outputs, spec)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        size = params["size"]
        if isinstance(inpt, EncodedMasks):
            # mask_crops: box-local windows, which the model expands on its device
            return inpt.decode_crops(size) if self.mask_crops else tv_tensors.Mask(inpt.decode(size))
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(_resize_mask(inpt.as_subclass(torch.Tensor), size), like=inpt)
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            if inpt.format != tv_tensors.BoundingBoxFormat.XYXY:
                raise ValueError(f"ResizeToInput expects XYXY boxes, got {inpt.format}")
            boxes = resize_boxes(inpt.as_subclass(torch.Tensor), list(params["original"]), list(size))
            return tv_tensors.wrap(boxes, like=inpt, canvas_size=size)
        return TF.resize(inpt, list(size), interpolation=v2.InterpolationMode.BILINEAR, antialias=False)

    def extra_repr(self) -> str:
        return f"min_sizes={self.min_sizes}, max_size={self.max_size}, mask_crops={self.mask_crops}"


class RandomHorizontalFlip(v2.RandomHorizontalFlip):
    """torchvision's ``RandomHorizontalFlip`` that also mirrors :class:`~msrcnn.ops.mask_crops.MaskCrops`."""

    _transformed_types = (*v2.RandomHorizontalFlip._transformed_types, MaskCrops)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, MaskCrops):
            return inpt.hflip()
        return super().transform(inpt, params)


def build_train_transforms(*, hflip_prob: float) -> v2.Transform | None:
    """The augmentation applied after :class:`ResizeToInput`, or ``None`` when it would do nothing."""
    if hflip_prob > 0:
        return RandomHorizontalFlip(hflip_prob)
    return None
