"""Flip and scale-jitter keep image, boxes and masks consistent."""

from __future__ import annotations

import pytest
import torch

from msrcnn.data import (
    Compose,
    RandomHorizontalFlip,
    RandomShortSideResize,
    build_train_transforms,
    hflip,
    resize,
)
from msrcnn.data.transforms import resize_scale


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (pixel edges) of non-empty masks."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32)


def _sample(height: int = 30, width: int = 50) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An image with three rectangular instances whose boxes are exactly their masks' extents."""
    rects = [(2, 3, 12, 9), (20, 10, 49, 30), (0, 0, 5, 5)]  # x1, y1, x2, y2
    masks = torch.zeros((len(rects), height, width), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(rects):
        masks[i, y1:y2, x1:x2] = 1
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    target = {
        "boxes": torch.tensor(rects, dtype=torch.float32),
        "labels": torch.tensor([1, 2, 3]),
        "masks": masks,
        "area": masks.flatten(1).sum(1).float(),
        "image_id": torch.tensor(7),
        "iscrowd": torch.zeros(3, dtype=torch.int64),
        "orig_size": torch.tensor([height, width]),
    }
    return image, target


def _empty_sample(height: int = 30, width: int = 50) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    image, target = _sample(height, width)
    keep = torch.zeros(3, dtype=torch.bool)
    return image, {k: (v[keep] if v.ndim and v.shape[0] == 3 else v) for k, v in target.items()}


def test_hflip_keeps_boxes_and_masks_consistent() -> None:
    image, target = _sample()
    flipped_image, flipped = hflip(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(_boxes_from_masks(flipped["masks"]), flipped["boxes"])
    assert flipped["boxes"][1].tolist() == [1.0, 10.0, 30.0, 30.0]
    assert torch.equal(flipped["labels"], target["labels"]) and torch.equal(flipped["area"], target["area"])
    assert torch.equal(hflip(flipped_image, flipped)[1]["boxes"], target["boxes"])
    assert torch.equal(target["masks"], _sample()[1]["masks"])  # the input is not modified


def test_random_flip_probability() -> None:
    image, target = _sample()
    assert torch.equal(RandomHorizontalFlip(0.0)(image, target)[0], image)
    assert torch.equal(RandomHorizontalFlip(1.0)(image, target)[0], image.flip(-1))
    torch.manual_seed(0)
    flips = sum(not torch.equal(RandomHorizontalFlip(0.5)(image, target)[0], image) for _ in range(200))
    assert 70 < flips < 130


def test_resize_follows_torchvision_rule() -> None:
    assert resize_scale(30, 50, 60, 1000) == pytest.approx(2.0)
    assert resize_scale(30, 50, 60, 80) == pytest.approx(80 / 50)  # long side cap wins
    image, target = _sample()
    resized_image, resized = resize(image, target, 60, 1000)
    assert resized_image.shape == (3, 60, 100)
    assert resized["masks"].shape == (3, 60, 100) and resized["masks"].dtype == torch.uint8
    assert torch.equal(resized["boxes"], target["boxes"] * 2)
    # nearest-neighbour mask resizing keeps the exact 2x extents
    assert torch.equal(_boxes_from_masks(resized["masks"]), resized["boxes"])
    assert torch.equal(resized["area"], target["area"] * 4)
    assert torch.equal(resized["orig_size"], target["orig_size"])


def test_resize_with_non_integer_scale_stays_consistent() -> None:
    image, target = _sample()
    resized_image, resized = resize(image, target, 23, 1000)
    height, width = resized_image.shape[-2:]
    assert (height, width) == (23, 38)  # floor(30 * 23/30), floor(50 * 23/30)
    assert resized["masks"].shape[-2:] == (height, width)
    assert torch.allclose(_boxes_from_masks(resized["masks"]), resized["boxes"], atol=1.0)
    assert 0.0 <= float(resized_image.min()) and float(resized_image.max()) <= 1.0


def test_scale_jitter_chooses_among_sizes() -> None:
    image, target = _sample()
    jitter = RandomShortSideResize([15, 30, 45], max_size=1000)
    torch.manual_seed(0)
    heights = {jitter(image, target)[0].shape[-2] for _ in range(30)}
    assert heights == {15, 30, 45}


def test_transforms_handle_images_without_instances() -> None:
    image, target = _empty_sample()
    pipeline = build_train_transforms(hflip_prob=1.0, train_min_size=[60], max_size=1000)
    assert isinstance(pipeline, Compose)
    out_image, out = pipeline(image, target)
    assert out_image.shape == (3, 60, 100)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 60, 100) and out["area"].shape == (0,)


def test_build_train_transforms_can_be_a_no_op() -> None:
    assert build_train_transforms(hflip_prob=0.0, train_min_size=None, max_size=1333) is None
