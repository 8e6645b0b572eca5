"""The training split's resized-sample cache (issue 16): a cached item is the item the uncached pipeline
gives for the same seed (flips and scale jitter included), through DataLoader workers and across
epochs; returned tensors never alias the cache; a split too large for the budget is not cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from msrcnn.data import CocoInstanceDataset, DetectionDataModule, ResizeToInput, SplitSpec
from msrcnn.data.transforms import build_train_transforms
from msrcnn.ops.mask_crops import MaskCrops
from msrcnn.testing.crowded import generate_crowded

SIZES = [48, 64, 80]  # scale jitter: one of three short sides per item


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_crowded(
        tmp_path_factory.mktemp("crowded_cache"),
        num_images=4,
        height=140,
        width=220,
        min_instances=20,
        max_instances=40,
        radius=(3.0, 6.0),
    )


def _dataset(crowded: tuple[Path, Path], cache_bytes: int, sizes=SIZES) -> CocoInstanceDataset:
    ann_file, img_dir = crowded
    return CocoInstanceDataset(
        ann_file,
        img_dir,
        resize=ResizeToInput(sizes, 1000, mask_crops=True),  # as the data module's training loader
        transforms=build_train_transforms(hflip_prob=0.5),
        drop_empty=True,
        cache_bytes=cache_bytes,
    )


def _item(dataset: CocoInstanceDataset, index: int, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dataset[index]


def _assert_same(a, b) -> None:
    (image_a, target_a), (image_b, target_b) = a, b
    assert type(image_a) is torch.Tensor and torch.equal(image_a, image_b)
    assert target_a.keys() == target_b.keys()
    for key in target_a:
        a, b = target_a[key], target_b[key]
        if key == "masks":
            assert type(a) is type(b) is MaskCrops and a.size == b.size
            assert torch.equal(a.values, b.values) and torch.equal(a.windows, b.windows)
            continue
        if key == "at_input_size":
            assert a is b is True
            continue
        assert type(a) is torch.Tensor, key
        assert a.dtype == b.dtype and torch.equal(a, b), key


def test_cached_items_equal_uncached_ones_with_flips_and_jitter(crowded) -> None:
    cached, plain = _dataset(crowded, 64 * 2**20), _dataset(crowded, 0)
    assert cached.cache_fits() and not plain.cache_fits()
    flips, sizes = set(), set()
    for epoch in range(6):
        for index in range(len(cached)):
            seed = 1000 * epoch + index
            got, expected = _item(cached, index, seed), _item(plain, index, seed)
            _assert_same(got, expected)
            sizes.add((index, tuple(got[0].shape[-2:])))
            unflipped = _item(CocoInstanceDataset(*crowded, resize=ResizeToInput(SIZES, 1000)), index, seed)
            if tuple(unflipped[0].shape) == tuple(got[0].shape):
                flips.add(torch.equal(unflipped[0], got[0]))
    assert flips == {True, False}  # both flipped and unflipped items were compared
    assert len(sizes) > len(cached)  # images seen at several input sizes
    assert cached.cache_hits > 0 and plain.cache_hits == 0
    assert len(cached._cache) <= len(SIZES) * len(cached)


def test_returned_tensors_do_not_alias_the_cache(crowded) -> None:
    dataset = _dataset(crowded, 64 * 2**20, sizes=[64])
    first = _item(dataset, 0, seed=3)
    reference = [first[0].clone(), {key: _clone(value) for key, value in first[1].items()}]
    tensors = [first[0], first[1]["masks"].values, first[1]["masks"].windows]
    tensors += [v for v in first[1].values() if isinstance(v, torch.Tensor)]
    for value in tensors:
        if value.dtype == torch.bool:
            value.logical_not_()
        else:
            value.zero_()
    again = _item(dataset, 0, seed=3)
    assert dataset.cache_hits == 1
    _assert_same(again, tuple(reference))


def _clone(value):
    return value.clone() if isinstance(value, (torch.Tensor, MaskCrops)) else value


def test_too_small_a_budget_or_no_resize_disables_the_cache(crowded) -> None:
    small = _dataset(crowded, 10_000)
    assert not small.cache_fits()
    for index in range(len(small)):
        _item(small, index, seed=index)
        _item(small, index, seed=index)
    assert small.cache_hits == 0 and not small._cache
    unresized = CocoInstanceDataset(*crowded)
    assert not unresized.cache_fits()
    assert isinstance(unresized[0][1]["masks"], torch.Tensor)


def test_a_new_input_size_starts_a_new_cache(crowded) -> None:
    dataset = _dataset(crowded, 64 * 2**20, sizes=[64])
    assert min(_item(dataset, 0, seed=0)[0].shape[-2:]) == 64
    dataset.resize = ResizeToInput([40], 1000)
    image, target = _item(dataset, 0, seed=0)
    assert min(image.shape[-2:]) == 40 and target["masks"].shape[-2:] == image.shape[-2:]
    assert len(dataset._cache) == 1 and dataset.cache_hits == 0


def test_resize_at_a_given_size_draws_nothing() -> None:
    resize = ResizeToInput([30, 40, 50], 1000)
    image = tv_tensors.Image(torch.rand(3, 60, 90))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[1.0, 2.0, 30.0, 40.0]]), format="XYXY", canvas_size=(60, 90)
    )
    torch.manual_seed(5)
    size = resize.draw_size(60, 90)
    after_draw = torch.rand(())
    torch.manual_seed(5)
    out_image, out_boxes = resize(image, boxes)
    assert tuple(out_image.shape[-2:]) == size and torch.equal(torch.rand(()), after_draw)
    state = torch.random.get_rng_state()
    fixed_image, fixed_boxes = resize.at_size((image, boxes), size)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(fixed_image, out_image) and torch.equal(fixed_boxes, out_boxes)
    assert fixed_boxes.canvas_size == size


def test_loader_workers_give_the_uncached_batches_over_epochs(crowded) -> None:
    """Through a persistent worker (tensors cross into shared memory) the cached pipeline's batches of
    three epochs equal those of the uncached one."""
    ann_file, img_dir = (str(path) for path in crowded)

    def epochs(cache: bool) -> list:
        module = DetectionDataModule(
            train=SplitSpec(ann_file, img_dir),
            val=SplitSpec(ann_file, img_dir),
            batch_size=2,
            num_workers=1,
            train_min_size=SIZES,
            max_size=1000,
        )
        module.setup("fit")
        if not cache:
            module.train_dataset.cache_bytes = 0
        loader = module.train_dataloader()
        assert isinstance(loader, DataLoader) and loader.persistent_workers
        batches = []
        for epoch in range(3):
            loader.batch_sampler.sampler.set_epoch(epoch)
            batches += [batch for batch in loader]
        return batches

    cached, plain = epochs(True), epochs(False)
    assert len(cached) == len(plain) == 6
    for (images_a, targets_a), (images_b, targets_b) in zip(cached, plain):
        for a, b in zip(zip(images_a, targets_a), zip(images_b, targets_b)):
            _assert_same(a, b)


def test_the_data_module_caches_and_later_epochs_hit(crowded) -> None:
    """The DataModule's training split is cached by default: the second epoch (one input size) is
    served from the cache, item for item, and equals what the uncached pipeline gives."""
    ann_file, img_dir = (str(path) for path in crowded)
    module = DetectionDataModule(
        train=SplitSpec(ann_file, img_dir),
        val=SplitSpec(ann_file, img_dir),
        batch_size=2,
        num_workers=0,
        train_min_size=[64],
        max_size=1000,
    )
    module.setup("fit")
    dataset = module.train_dataset
    assert dataset.cache_fits()
    loader = module.train_dataloader()
    epochs = []
    for epoch in range(2):
        loader.batch_sampler.sampler.set_epoch(epoch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch)
            epochs.append([batch for batch in loader])
        assert dataset.cache_hits == epoch * len(dataset)
    dataset.cache_bytes = 0  # the same epoch without the cache
    loader.batch_sampler.sampler.set_epoch(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        plain = [batch for batch in loader]
    assert dataset.cache_hits == len(dataset)
    for (images_a, targets_a), (images_b, targets_b) in zip(epochs[1], plain, strict=True):
        for a, b in zip(zip(images_a, targets_a), zip(images_b, targets_b)):
            _assert_same(a, b)
