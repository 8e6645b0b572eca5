"""DetectionDataModule end to end on tiny synthetic and hand-written datasets."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import BatchSampler

from msrcnn.data import DetectionDataModule, GroupedBatchSampler, InferenceSampler, SplitSpec, generate_shapes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SYNTHETIC = {"num_train": 12, "num_val": 5, "image_size": 64, "seed": 0}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("synthetic"))


def _module(synthetic_root: str, **kwargs) -> DetectionDataModule:
    defaults = {
        "train": None,
        "val": None,
        "synthetic": SYNTHETIC,
        "root": synthetic_root,
        "num_workers": 0,
        "batch_size": 4,
    }
    return DetectionDataModule(**{**defaults, **kwargs})


def _fake_trainer(world_size: int, rank: int, use_distributed_sampler: bool = False) -> SimpleNamespace:
    connector = SimpleNamespace(use_distributed_sampler=use_distributed_sampler)
    return SimpleNamespace(world_size=world_size, global_rank=rank, _accelerator_connector=connector)


def _epoch_ids(loader) -> list[list[int]]:
    return [[int(t["image_id"]) for t in targets] for _, targets in loader]


def _batch_index_order(loader) -> list[list[int]]:
    """The index batches a loader will request, without loading anything."""
    return [list(batch) for batch in loader.batch_sampler]


def test_synthetic_end_to_end_one_batch(synthetic_root: str, caplog: pytest.LogCaptureFixture) -> None:
    module = _module(synthetic_root)
    with caplog.at_level(logging.INFO, logger="msrcnn.data"):
        module.setup("fit")  # prepare_data() was not called: setup generates (idempotently)
    assert module.num_classes == 7
    assert module.class_names == ["ellipse", "rectangle", "triangle", "star", "ring", "ell"]
    assert module.category_map.label_to_cat_id(6) == 9
    assert Path(module.val_ann_file).name == "instances_val.json" and Path(module.val_ann_file).is_file()
    assert len(module.val_dataset) == 5 and 0 < len(module.train_dataset) <= 12
    assert (
        "data ready: train" in caplog.text and "7 classes" not in caplog.text and "6 classes" in caplog.text
    )

    loader = module.train_dataloader()
    assert isinstance(loader.batch_sampler, GroupedBatchSampler)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 4
    for image, target in zip(images, targets):
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        n = len(target["labels"])
        assert n > 0  # training images all have instances
        assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].dtype == torch.int64 and 1 <= int(target["labels"].min())
        assert int(target["labels"].max()) <= 6
        assert target["masks"].shape == (n, 64, 64) and target["masks"].dtype == torch.uint8
        assert target["image_id"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
        assert target["area"].dtype == torch.float32 and target["orig_size"].tolist() == [64, 64]

    val_images, val_targets = next(iter(module.val_dataloader()))
    assert len(val_images) == 2  # eval_batch_size
    assert [int(t["image_id"]) for t in val_targets] == [1, 2]


def test_prepare_data_generates_once_and_setup_reuses(synthetic_root: str) -> None:
    module = _module(synthetic_root)
    module.prepare_data()
    expected = generate_shapes(synthetic_root, **SYNTHETIC)
    assert Path(module.val_ann_file).parent.parent == expected
    module.setup("validate")
    assert len(module.val_dataset) == 5
    with pytest.raises(RuntimeError, match="train split is not set up"):
        _ = module.train_dataset


def test_train_order_is_deterministic_and_reshuffled_per_epoch(synthetic_root: str) -> None:
    def order(seed: int, epoch: int) -> list[list[int]]:
        module = _module(synthetic_root, seed=seed, batch_size=2)
        module.setup("fit")
        loader = module.train_dataloader()
        _set_sampler_epoch(loader, epoch)  # what Lightning does at every epoch start
        return _batch_index_order(loader)

    assert order(0, 0) == order(0, 0)
    assert order(0, 1) == order(0, 1)
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert sorted(i for batch in order(0, 1) for i in batch) == sorted(
        i for batch in order(0, 0) for i in batch
    )


def test_augmented_batches_are_reproducible_with_workers(synthetic_root: str) -> None:
    def first_batch() -> list[torch.Tensor]:
        module = _module(synthetic_root, num_workers=1, hflip_prob=0.5, train_min_size=[48, 80], max_size=100)
        module.setup("fit")
        images, _ = next(iter(module.train_dataloader()))
        return images

    first, second = first_batch(), first_batch()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert {min(image.shape[-2:]) for image in first} <= {48, 80}


def test_plain_batches_without_grouping(synthetic_root: str) -> None:
    module = _module(synthetic_root, aspect_ratio_group_factor=-1, batch_size=5)
    module.setup("fit")
    loader = module.train_dataloader()
    assert type(loader.batch_sampler) is BatchSampler
    batches = _batch_index_order(loader)
    assert sorted(i for batch in batches for i in batch) == list(range(len(module.train_dataset)))


def test_ranks_shard_train_and_eval(synthetic_root: str) -> None:
    module = _module(synthetic_root, batch_size=2)
    module.setup("fit")
    train_seen, val_seen, steps = [], [], set()
    for rank in range(2):
        module.trainer = _fake_trainer(2, rank)
        loader = module.train_dataloader()
        batches = _batch_index_order(loader)
        train_seen += [i for batch in batches for i in batch]
        steps.add(len(batches))
        val_loader = module.val_dataloader()
        assert isinstance(val_loader.sampler, InferenceSampler)
        val_seen += [int(t["image_id"]) for _, targets in val_loader for t in targets]
    assert set(train_seen) == set(range(len(module.train_dataset))) and len(steps) == 1
    assert sorted(val_seen) == [1, 2, 3, 4, 5]  # every val image exactly once, no padding


def test_lightning_distributed_sampler_must_be_off(synthetic_root: str) -> None:
    module = _module(synthetic_root)
    module.setup("validate")
    module.trainer = _fake_trainer(2, 0, use_distributed_sampler=True)
    with pytest.raises(RuntimeError, match="use_distributed_sampler=False"):
        module.val_dataloader()
    module.trainer = _fake_trainer(1, 0, use_distributed_sampler=True)
    assert len(module.val_dataloader().sampler) == 5


def test_explicit_splits_as_mappings_and_stage_checks(tiny_coco) -> None:
    split = {"ann_file": str(tiny_coco.ann_file), "img_dir": str(tiny_coco.img_dir)}
    module = DetectionDataModule(
        train=split, val=split, test=split, num_workers=0, aspect_ratio_group_factor=0
    )
    assert module.val_ann_file == str(tiny_coco.ann_file)  # known before setup for explicit splits
    module.setup()
    assert len(module.train_dataset) == 2 and len(module.val_dataset) == 4 and len(module.test_dataset) == 4
    assert module.num_classes == 4 and module.class_names == ["person", "airplane", "toothbrush"]
    ids = [int(t["image_id"]) for _, targets in module.test_dataloader() for t in targets]
    assert ids == [11, 22, 33, 44]  # the file's own image ids
    no_test = DetectionDataModule(train=split, val=split, num_workers=0)
    with pytest.raises(ValueError, match="test"):
        no_test.setup("test")
    with pytest.raises(RuntimeError, match="setup"):
        _ = no_test.category_map


def test_constructor_rejects_ambiguous_or_missing_data(synthetic_root: str, tiny_coco) -> None:
    split = SplitSpec(str(tiny_coco.ann_file), str(tiny_coco.img_dir))
    with pytest.raises(ValueError, match="not both"):
        DetectionDataModule(train=split, val=None, synthetic=SYNTHETIC)
    with pytest.raises(ValueError, match="no data"):
        DetectionDataModule(train=None, val=None)
    module = _module(synthetic_root)
    with pytest.raises(RuntimeError, match="prepare_data"):
        _ = module.val_ann_file


def test_from_coco2017_layout(tiny_coco) -> None:
    root = tiny_coco.root / "coco"
    for split in ("train2017", "val2017"):
        shutil.copytree(tiny_coco.img_dir, root / split)
        (root / "annotations").mkdir(exist_ok=True)
        shutil.copy(tiny_coco.ann_file, root / "annotations" / f"instances_{split}.json")
    module = DetectionDataModule.from_coco2017(root, num_workers=0)
    module.setup()
    assert module.val_ann_file.endswith("instances_val2017.json")
    with pytest.raises(RuntimeError, match="no test split"):
        _ = module.test_ann_file
    shutil.copytree(tiny_coco.img_dir, root / "test2017")
    info = {"images": tiny_coco.data["images"], "categories": tiny_coco.data["categories"]}
    (root / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    module = DetectionDataModule.from_coco2017(root, num_workers=0)
    module.setup("test")
    assert len(module.test_dataset) == 4 and not module.test_dataset.has_annotations


class _Recorder(L.LightningModule):
    """A model-free LightningModule that records which images each step saw."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_ids: list[list[int]] = []
        self.val_ids: list[int] = []

    def training_step(self, batch, batch_idx):
        images, targets = batch
        if batch_idx == 0:
            self.train_ids.append([])
        self.train_ids[-1] += [int(t["image_id"]) for t in targets]
        return self.weight * sum(float(image.mean()) for image in images)

    def validation_step(self, batch, batch_idx):
        self.val_ids += [int(t["image_id"]) for t in batch[1]]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_reshuffles_each_epoch_and_validates_every_image(synthetic_root: str) -> None:
    def run() -> _Recorder:
        module = _module(synthetic_root, batch_size=3, hflip_prob=0.0)
        recorder = _Recorder()
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
        )
        trainer.fit(recorder, datamodule=module)
        return recorder

    first, second = run(), run()
    assert first.train_ids == second.train_ids
    assert first.train_ids[0] != first.train_ids[1]
    assert sorted(first.train_ids[0]) == sorted(first.train_ids[1])
    assert sorted(first.val_ids) == sorted([1, 2, 3, 4, 5] * 2)  # each epoch validates every image once
