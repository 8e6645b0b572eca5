"""The v2 training transforms: resize to the model's input size (bit-exact with torchvision's detection
transform) and flips keep image, boxes and masks consistent."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms import v2

from msrcnn.data import EncodedMasks, ResizeToInput, build_train_transforms, input_size
from msrcnn.data.transforms import resize_scale
from msrcnn.models.torchvision_ports.transform import MaskScoringTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes (pixel edges) of non-empty masks."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32)


RECTS = [(2, 3, 12, 9), (20, 10, 49, 30), (0, 0, 5, 5)]  # x1, y1, x2, y2


def _sample(height: int = 30, width: int = 50, encoded: bool = False):
    """An image with three rectangular instances whose boxes are exactly their masks' extents."""
    masks = torch.zeros((len(RECTS), height, width), dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(RECTS):
        masks[i, y1:y2, x1:x2] = 1
    image = tv_tensors.Image(torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)))
    if encoded:
        rles = mask_utils.encode(masks.permute(1, 2, 0).numpy().copy(order="F"))
        mask_value = EncodedMasks(rles, height, width)
    else:
        mask_value = tv_tensors.Mask(masks)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(RECTS, dtype=torch.float32), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.tensor([1, 2, 3]),
        "masks": mask_value,
        "image_id": torch.tensor(7),
    }
    return image, target


def test_input_size_follows_torchvision_rule() -> None:
    assert resize_scale(30, 50, 60, 1000) == pytest.approx(2.0)
    assert resize_scale(30, 50, 60, 80) == pytest.approx(80 / 50)  # long side cap wins
    assert input_size(30, 50, 23, 1000) == (23, 38)
    assert input_size(700, 1100, 160, 160) == (101, 160)
    for height, width, min_size, max_size in [
        (30, 50, 23, 1000),
        (700, 1100, 160, 160),
        (479, 640, 800, 1333),
        (333, 999, 512, 700),
    ]:
        resized = F.interpolate(
            torch.zeros(1, 1, height, width),
            scale_factor=resize_scale(height, width, min_size, max_size),
            recompute_scale_factor=True,
        )
        assert tuple(resized.shape[-2:]) == input_size(height, width, min_size, max_size)


@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize(("min_size", "max_size"), [(60, 1000), (23, 1000), (41, 45), (7, 1000)])
def test_resize_to_input_matches_the_models_resize_exactly(
    encoded: bool, min_size: int, max_size: int
) -> None:
    image, target = _sample(encoded=encoded)
    out_image, out = ResizeToInput([min_size], max_size)(image, target)
    reference = MaskScoringTransform([min_size], max_size, MEAN, STD).train()
    full_masks = _sample()[1]["masks"].as_subclass(torch.Tensor)
    ref_image, ref = reference.resize(
        image.as_subclass(torch.Tensor),
        {"boxes": target["boxes"].as_subclass(torch.Tensor), "masks": full_masks},
    )
    assert isinstance(out_image, tv_tensors.Image) and isinstance(out["masks"], tv_tensors.Mask)
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes) and out["boxes"].canvas_size == tuple(
        out_image.shape[-2:]
    )
    assert torch.equal(out_image, ref_image)
    assert torch.equal(out["boxes"], ref["boxes"])
    assert torch.equal(out["masks"], ref["masks"]) and out["masks"].dtype == torch.uint8
    assert torch.equal(out["labels"], target["labels"]) and torch.equal(out["image_id"], target["image_id"])


def test_integer_scale_keeps_exact_extents() -> None:
    image, target = _sample(encoded=True)
    out_image, out = ResizeToInput([60], 1000)(image, target)
    assert out_image.shape == (3, 60, 100)
    assert torch.equal(out["boxes"], torch.tensor(RECTS, dtype=torch.float32) * 2)
    assert torch.equal(_boxes_from_masks(out["masks"]), out["boxes"].as_subclass(torch.Tensor))


def test_the_model_leaves_marked_targets_alone() -> None:
    image, target = _sample()
    model_transform = MaskScoringTransform([60], 1000, MEAN, STD).train()
    plain = {
        "boxes": target["boxes"].as_subclass(torch.Tensor),
        "masks": target["masks"].as_subclass(torch.Tensor),
    }
    marked = {**plain, "at_input_size": torch.tensor(True)}
    kept_image, kept = model_transform.resize(image.as_subclass(torch.Tensor), dict(marked))
    assert (
        kept_image.shape == image.shape
        and kept["masks"] is plain["masks"]
        and kept["boxes"] is plain["boxes"]
    )
    resized_image, _ = model_transform.resize(image.as_subclass(torch.Tensor), dict(plain))
    assert resized_image.shape == (3, 60, 100)
    # evaluation always resizes (images come at their original size)
    assert model_transform.eval().resize(image.as_subclass(torch.Tensor), dict(marked))[0].shape == (
        3,
        60,
        100,
    )


def test_flip_keeps_boxes_and_masks_consistent() -> None:
    image, target = _sample()
    flipped_image, flipped = v2.RandomHorizontalFlip(1.0)(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(_boxes_from_masks(flipped["masks"]), flipped["boxes"].as_subclass(torch.Tensor))
    assert flipped["boxes"][1].tolist() == [1.0, 10.0, 30.0, 30.0]
    assert torch.equal(flipped["labels"], target["labels"])


def test_flip_probability() -> None:
    image, target = _sample()
    pipeline = build_train_transforms(hflip_prob=0.5)
    torch.manual_seed(0)
    flips = sum(not torch.equal(pipeline(image, target)[0], image) for _ in range(200))
    assert 70 < flips < 130
    assert build_train_transforms(hflip_prob=0.0) is None


def test_scale_jitter_chooses_among_sizes() -> None:
    image, target = _sample(encoded=True)
    jitter = ResizeToInput([15, 30, 45], max_size=1000)
    torch.manual_seed(0)
    shapes = set()
    for _ in range(30):
        out_image, out = jitter(image, target)
        assert out["masks"].shape[-2:] == out_image.shape[-2:] == out["boxes"].canvas_size
        shapes.add(out_image.shape[-2])
    assert shapes == {15, 30, 45}


def test_images_without_instances() -> None:
    image = tv_tensors.Image(torch.rand(3, 30, 50))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(30, 50)),
        "masks": EncodedMasks([], 30, 50),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    out_image, out = v2.Compose([ResizeToInput([60], 1000), v2.RandomHorizontalFlip(1.0)])(image, target)
    assert out_image.shape == (3, 60, 100)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 60, 100)


def test_resize_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="min_sizes"):
        ResizeToInput([], 100)
    with pytest.raises(ValueError, match="min_sizes"):
        ResizeToInput([0], 100)
