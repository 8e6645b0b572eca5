"""Joint image/target augmentations for instance segmentation, written with whole-tensor operations.

Random choices draw from torch's global generator, which DataLoader seeds per worker from the loader's
seeded generator, so augmentation is reproducible for a fixed seed and worker count. Only training
uses these: validation and test images keep their original size because the model resizes internally
and maps predictions back to the original resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from msrcnn.data.coco import Target, Transform


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror the image, its masks and its xyxy boxes left-right."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = dict(target)
    flipped["boxes"] = torch.stack(
        (width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1
    )
    flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


class RandomHorizontalFlip:
    """:func:`hflip` with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = prob

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if torch.rand(()).item() < self.prob:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """torchvision's GeneralizedRCNNTransform rule: short side to ``min_size`` unless the long side
    would then exceed ``max_size``."""
    return min(min_size / min(height, width), max_size / max(height, width))


def resize(image: torch.Tensor, target: Target, min_size: int, max_size: int) -> tuple[torch.Tensor, Target]:
    """Resize image (bilinear), masks (nearest) and boxes (scaled) exactly as torchvision's model does."""
    height, width = image.shape[-2:]
    scale = resize_scale(height, width, min_size, max_size)
    resized = F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    new_h, new_w = resized.shape[-2:]
    masks = target["masks"]
    if masks.shape[0]:
        masks = F.interpolate(masks[:, None].float(), size=(new_h, new_w), mode="nearest")[:, 0].to(
            torch.uint8
        )
    else:
        masks = masks.new_zeros((0, new_h, new_w))
    ratios = torch.tensor((new_w / width, new_h / height, new_w / width, new_h / height), dtype=torch.float32)
    out = dict(target)
    out["boxes"] = target["boxes"] * ratios
    out["masks"] = masks
    out["area"] = masks.flatten(1).sum(1).to(torch.float32)
    return resized, out


class RandomShortSideResize:
    """Scale jitter: resize to a short side drawn uniformly from ``min_sizes``, long side capped at ``max_size``."""

    def __init__(self, min_sizes: Sequence[int], max_size: int) -> None:
        if not min_sizes:
            raise ValueError("min_sizes must not be empty")
        self.min_sizes = [int(size) for size in min_sizes]
        self.max_size = int(max_size)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        choice = int(torch.randint(len(self.min_sizes), ()).item())
        return resize(image, target, self.min_sizes[choice], self.max_size)

    def __repr__(self) -> str:
        return f"RandomShortSideResize(min_sizes={self.min_sizes}, max_size={self.max_size})"


def build_train_transforms(
    *, hflip_prob: float, train_min_size: Sequence[int] | None, max_size: int
) -> Transform | None:
    """The training augmentation pipeline, or ``None`` when it would do nothing."""
    steps: list[Transform] = []
    if train_min_size:
        steps.append(RandomShortSideResize(train_min_size, max_size))
    if hflip_prob > 0:
        steps.append(RandomHorizontalFlip(hflip_prob))
    return Compose(steps) if steps else None
