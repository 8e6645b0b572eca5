"""Masks sent as box-local crops (the training loader's format) are the dense masks, bit for bit:
decoded, flipped, cached, moved and expanded by the model on its device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from model_testing import small_model
from msrcnn.data import DetectionDataModule, SplitSpec
from msrcnn.data.transforms import RandomHorizontalFlip
from msrcnn.ops.mask_crops import MaskCrops, dense_masks
from msrcnn.testing.crowded import generate_crowded
from msrcnn.testing.host_syncs import count_host_syncs


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_crowded(
        tmp_path_factory.mktemp("crowded_crops"),
        num_images=4,
        height=150,
        width=230,
        min_instances=25,
        max_instances=45,
        radius=(3.0, 7.0),
    )


def _module(crowded, **kwargs) -> DetectionDataModule:
    ann_file, img_dir = (str(p) for p in crowded)
    module = DetectionDataModule(
        train=SplitSpec(ann_file, img_dir),
        val=SplitSpec(ann_file, img_dir),
        batch_size=2,
        num_workers=0,
        train_min_size=[96, 112],
        max_size=1000,
        **kwargs,
    )
    module.setup("fit")
    return module


def test_crops_decode_to_the_dense_resize_at_any_size(crowded) -> None:
    dataset = _module(crowded, hflip_prob=0.0).train_dataset
    assert dataset.resize.mask_crops
    for index in range(len(dataset)):
        image, target = dataset[index]
        crops = target["masks"]
        assert isinstance(crops, MaskCrops) and crops.size == tuple(image.shape[-2:])
        dense_target = dataset._load(index)[1]["masks"].decode(crops.size)
        assert torch.equal(crops.dense(), dense_target)
        assert crops.values.numel() * 20 < dense_target.numel()  # windows only


def test_flip_of_crops_is_the_flip_of_the_dense_masks() -> None:
    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(6, 20, 31, generator=g) > 0.6).to(torch.uint8)
    windows = torch.tensor(
        [[0, 0, 20, 31], [3, 4, 5, 6], [10, 25, 3, 6], [19, 30, 1, 1], [2, 2, 0, 0], [5, 0, 4, 1]]
    )
    values, expected = [], torch.zeros_like(dense)
    for i, (y, x, h, w) in enumerate(windows.tolist()):
        values.append(dense[i, y : y + h, x : x + w].reshape(-1))
        expected[i, y : y + h, x : x + w] = dense[i, y : y + h, x : x + w]
    crops = MaskCrops(torch.cat(values), windows, (20, 31))
    assert torch.equal(crops.dense(), expected)
    image = tv_tensors.Image(torch.rand(3, 20, 31))
    flipped_image, flipped = RandomHorizontalFlip(1.0)(image, crops)
    _, reference = v2.RandomHorizontalFlip(1.0)(image, tv_tensors.Mask(expected))
    assert isinstance(flipped, MaskCrops) and torch.equal(flipped.dense(), reference)
    assert torch.equal(flipped_image, image.flip(-1))
    with count_host_syncs() as syncs:
        crops.dense()
        crops.hflip()
    assert syncs.total == 0  # on a GPU: no host sync


def test_loader_batches_through_a_worker_hold_crops(crowded) -> None:
    module = _module(crowded, hflip_prob=0.5)
    module.num_workers = 1
    images, targets = next(iter(module.train_dataloader()))
    assert all(isinstance(t["masks"], MaskCrops) for t in targets)
    for image, target in zip(images, targets):
        masks = dense_masks(target["masks"])
        assert masks.shape[-2:] == image.shape[-2:] and masks.dtype == torch.uint8
        # each instance's box encloses its mask (flips included)
        for box, mask in zip(target["boxes"], masks):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(ys):
                assert xs.min() >= box[0].floor() - 1 and xs.max() <= box[2].ceil() + 1


def test_model_losses_equal_with_crops_or_dense_masks(crowded) -> None:
    module = _module(crowded, hflip_prob=0.0)
    dataset = module.train_dataset
    images, crops_targets = zip(*(dataset[i] for i in range(2)))
    dense_targets = [{**t, "masks": t["masks"].dense()} for t in crops_targets]
    losses = []
    for targets in (crops_targets, dense_targets):
        model = small_model(num_classes=module.num_classes).train()
        torch.manual_seed(0)
        losses.append({k: float(v.detach()) for k, v in model(list(images), list(targets)).items()})
    assert losses[0] == losses[1]
