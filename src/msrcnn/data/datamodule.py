"""LightningDataModule for COCO-format instance segmentation (COCO 2017, any COCO json, or shapes).

Distribution is handled here rather than by Lightning: training shards with a seeded
``DistributedSampler`` under an aspect-ratio :class:`GroupedBatchSampler`, evaluation with an unpadded
:class:`InferenceSampler`. A Trainer running on several devices must therefore be built with
``use_distributed_sampler=False`` (checked when a dataloader is requested), otherwise Lightning would
replace the evaluation sampler with a padded one and count some images twice.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import random
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from msrcnn.data.annotations import CategoryMap
from msrcnn.data.coco import CocoInstanceDataset, SplitSpec, Target, coco2017_splits
from msrcnn.data.errors import LOGGER
from msrcnn.data.resumable import ResumableBatches, ResumableLoader, SeededItems
from msrcnn.data.samplers import GroupedBatchSampler, InferenceSampler, create_aspect_ratio_groups
from msrcnn.data.shapes import generate_shapes, shapes_splits
from msrcnn.data.transforms import ResizeToInput, build_train_transforms

_SPLITS = ("train", "val", "test")
_STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Keep images and targets as lists: detection images differ in size and the model batches them."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def leave_signals_to_the_parent() -> None:
    """In a data-loader worker: SIGTERM and SIGUSR1 sent to the whole process group (SLURM, ``timeout``,
    container runtimes) are the main process's to handle (it saves a checkpoint and stops the workers
    itself, :mod:`msrcnn.training.preemption`); a worker killed by them would end the run in a DataLoader
    traceback instead, so the worker ignores both. A worker still alive when the main process exits is
    ended by :func:`_end_leftover_workers` (``multiprocessing``'s own ``terminate()`` sends the SIGTERM the
    worker ignores, and would then wait for it forever).
    """
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


@atexit.register  # registered after multiprocessing's exit handler, so it runs before it
def _end_leftover_workers() -> None:
    """At the main process's exit, SIGKILL the daemonic children still running (data-loader workers left
    by an iterator never collected), which ignore SIGTERM (:func:`leave_signals_to_the_parent`)."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=10)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from torch's per-worker seed (derived from the loader's generator).

    The worker also leaves SIGTERM and SIGUSR1 to the main process (:func:`leave_signals_to_the_parent`).
    """
    leave_signals_to_the_parent()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_synthetic_root() -> Path:
    """Cache folder for generated datasets: ``$XDG_CACHE_HOME/msrcnn/shapes`` (``~/.cache`` by default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "msrcnn" / "shapes"


def _as_split(value: SplitSpec | Mapping[str, Any] | None) -> SplitSpec | None:
    """Accept a SplitSpec or a mapping with ``ann_file`` and ``img_dir`` (e.g. a Hydra config node)."""
    if value is None or isinstance(value, SplitSpec):
        return value
    if isinstance(value, Mapping):
        return SplitSpec(ann_file=str(value["ann_file"]), img_dir=str(value["img_dir"]))
    raise TypeError(f"a split must be a SplitSpec or a mapping with ann_file and img_dir, got {value!r}")


class DetectionDataModule(L.LightningDataModule):
    """Train/val/test data for instance segmentation with COCO-format annotation files.

    Give either explicit splits (``train``/``val``/``test``) or ``synthetic`` (keyword arguments of
    :func:`generate_shapes`, generated under ``root`` and used for train and val). Images and
    targets come out as lists (see :func:`collate`); labels are contiguous ``1..K`` and
    :attr:`category_map` maps them back to the annotation file's ids for evaluation.

    Training images reach the model at its input size: ``train_min_size`` (short sides, one drawn
    per image: scale jitter when there are several) and ``max_size`` (long-side cap) are the model's
    ``min_size`` / ``max_size`` unless set otherwise; the workers resize image, boxes and masks
    (decoded directly at that size) and the model's own resize then leaves them alone. With
    ``train_min_size=None`` training masks are decoded at full resolution and the model resizes.
    When the resized training split fits in ``train_dataset.cache_bytes`` (512 MiB per worker by
    default), each worker keeps the resized samples it loads and later epochs only redo the random
    flip (see :class:`~msrcnn.data.coco.CocoInstanceDataset`; ``persistent_workers`` keeps them).
    Validation and test targets carry no masks (the evaluation reads the annotation file).
    """

    def __init__(
        self,
        *,
        train: SplitSpec | Mapping[str, Any] | None,
        val: SplitSpec | Mapping[str, Any] | None,
        test: SplitSpec | Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        root: str | None = None,
        batch_size: int = 2,
        eval_batch_size: int = 2,
        num_workers: int = 2,
        pin_memory: bool = True,
        hflip_prob: float = 0.5,
        train_min_size: Sequence[int] | None = None,
        max_size: int | None = None,
        aspect_ratio_group_factor: int = 3,
        seed: int = 0,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        if synthetic is not None and (train is not None or val is not None):
            raise ValueError("give either synthetic or train/val splits, not both")
        if synthetic is None and train is None and val is None and test is None:
            raise ValueError("no data: give train/val/test splits or synthetic")
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.synthetic_root = Path(root) if root else default_synthetic_root()
        self._specs: dict[str, SplitSpec | None] = {
            "train": _as_split(train),
            "val": _as_split(val),
            "test": _as_split(test),
        }
        self._specs_resolved = synthetic is None
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.hflip_prob = float(hflip_prob)
        self.train_min_size: list[int] | None = None
        self.max_size: int | None = None
        self.aspect_ratio_group_factor = int(aspect_ratio_group_factor)
        self.seed = int(seed)
        self.persistent_workers = bool(persistent_workers)
        self._datasets: dict[str, CocoInstanceDataset] = {}
        self.set_input_size(train_min_size, max_size)
        self._category_map: CategoryMap | None = None
        self._resume_step: int | None = None  # the optimizer step a checkpoint resumes from (load_state_dict)

    @classmethod
    def from_coco2017(cls, root: str | os.PathLike[str], **kwargs: Any) -> DetectionDataModule:
        """COCO 2017 under ``root`` (see :func:`coco2017_splits`); test-dev is included when its file exists."""
        splits = coco2017_splits(root)
        test = splits["test"] if Path(splits["test"].ann_file).is_file() else None
        LOGGER.info("COCO 2017 at %s: test-dev %s", root, "found" if test else "not present, no test split")
        return cls(train=splits["train"], val=splits["val"], test=test, **kwargs)

    def _resolve_specs(self) -> dict[str, SplitSpec | None]:
        """Generate the synthetic dataset if configured (idempotent) and point train/val at it."""
        if self.synthetic is not None and not self._specs_resolved:
            generated = shapes_splits(generate_shapes(self.synthetic_root, **self.synthetic))
            self._specs.update(train=generated["train"], val=generated["val"])
            self._specs_resolved = True
        return self._specs

    def prepare_data(self) -> None:
        """Generate the synthetic dataset once per node (Lightning calls this on local rank 0 only)."""
        if self.synthetic is not None:
            self._resolve_specs()

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the splits this stage needs (all configured ones for ``stage=None``)."""
        specs = self._resolve_specs()
        if stage is None:
            wanted = tuple(split for split in _SPLITS if specs[split] is not None)
        else:
            wanted = _STAGE_SPLITS[stage]
            missing = [split for split in wanted if specs[split] is None]
            if missing:
                raise ValueError(f"stage {stage!r} needs the {missing} split(s), which are not configured")
        for split in wanted:
            spec = specs[split]
            if split not in self._datasets and spec is not None:
                self._datasets[split] = self._build_dataset(split, spec)
        LOGGER.info(
            "data ready: %s; %d classes (+ background): %s",
            ", ".join(f"{split} {len(dataset)} images" for split, dataset in self._datasets.items()),
            len(self.category_map),
            self.class_names,
        )

    def set_input_size(self, train_min_size: Sequence[int] | None, max_size: int | None) -> None:
        """The size training images are resized to in the workers (see the class docstring); also
        after :meth:`setup`, e.g. once the input size has been chosen from the data's statistics."""
        sizes = [int(size) for size in train_min_size] if train_min_size else None
        if sizes is not None and max_size is None:
            raise ValueError(f"train_min_size={sizes} needs a max_size (the model's long-side cap)")
        self.train_min_size = sizes
        self.max_size = None if max_size is None else int(max_size)
        if "train" in self._datasets:
            self._datasets["train"].resize = self._train_resize()

    def _train_resize(self) -> ResizeToInput | None:
        if self.train_min_size is None:
            return None
        return ResizeToInput(self.train_min_size, self.max_size, mask_crops=True)

    def _build_dataset(self, split: str, spec: SplitSpec) -> CocoInstanceDataset:
        """One split; the first split loaded fixes the category map and later ones must agree with it."""
        train = split == "train"
        dataset = CocoInstanceDataset(
            spec.ann_file,
            spec.img_dir,
            category_map=self._category_map,
            transforms=build_train_transforms(hflip_prob=self.hflip_prob) if train else None,
            resize=self._train_resize() if train else None,
            with_masks=train,
            drop_empty=split == "train",
            require_annotations=split != "test",
            name=split,
        )
        self._category_map = dataset.category_map
        return dataset

    def _dataset(self, split: str) -> CocoInstanceDataset:
        if split not in self._datasets:
            raise RuntimeError(f"the {split} split is not set up: call setup() with a stage that uses it")
        return self._datasets[split]

    @property
    def train_dataset(self) -> CocoInstanceDataset:
        return self._dataset("train")

    @property
    def val_dataset(self) -> CocoInstanceDataset:
        return self._dataset("val")

    @property
    def test_dataset(self) -> CocoInstanceDataset:
        return self._dataset("test")

    @property
    def category_map(self) -> CategoryMap:
        if self._category_map is None:
            raise RuntimeError("category_map is known after setup()")
        return self._category_map

    @property
    def num_classes(self) -> int:
        """Number of classes including background (K + 1), as torchvision's models count them."""
        return self.category_map.num_classes

    @property
    def class_names(self) -> list[str]:
        """Names of the K object classes, in label order (label i is ``class_names[i - 1]``)."""
        return list(self.category_map.names)

    def _ann_file(self, split: str) -> str:
        if not self._specs_resolved:
            raise RuntimeError("the synthetic dataset's files are known after prepare_data() or setup()")
        spec = self._specs[split]
        if spec is None:
            raise RuntimeError(f"no {split} split is configured")
        return spec.ann_file

    @property
    def val_ann_file(self) -> str:
        """The val annotation json, for the COCO evaluator (ids in it are the file's own)."""
        return self._ann_file("val")

    @property
    def test_ann_file(self) -> str:
        """The test annotation (or image-info) json."""
        return self._ann_file("test")

    def _world(self) -> tuple[int, int]:
        """(world size, rank) from the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return 1, 0
        # Private in Lightning, and kept: the Trainer's use_distributed_sampler argument has no public attribute.
        connector = getattr(trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False):
            raise RuntimeError(
                "DetectionDataModule shards data itself; build the Trainer with use_distributed_sampler=False"
            )
        return trainer.world_size, trainer.global_rank

    def _loader(
        self, dataset: Dataset, rank: int, loader_cls: type[DataLoader] = DataLoader, **kwargs: Any
    ) -> DataLoader:
        workers = self.num_workers
        return loader_cls(
            dataset,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + rank),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffled batches, grouped by aspect ratio unless ``aspect_ratio_group_factor < 0``.

        The base sampler is a ``DistributedSampler`` (also for one process) whose ``set_epoch`` Lightning
        calls every epoch through ``batch_sampler.sampler``, reshuffling deterministically. No image is
        dropped; the last batch may be smaller.

        Exact resume: under a trainer, each epoch's batches follow from the optimizer step count (saved
        with the weights, see :meth:`state_dict`), so a run resumed from any checkpoint, mid-epoch included,
        continues with the batches and augmentations an uninterrupted run would have used.
        """
        dataset = self.train_dataset
        world, rank = self._world()
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        if self.aspect_ratio_group_factor >= 0:
            groups = create_aspect_ratio_groups(dataset.aspect_ratios(), self.aspect_ratio_group_factor)
            batch_sampler: BatchSampler = GroupedBatchSampler(sampler, groups, self.batch_size)
        else:
            batch_sampler = BatchSampler(sampler, self.batch_size, drop_last=False)
        batches = ResumableBatches(batch_sampler, self._train_position, seed=self.seed)
        return self._loader(
            SeededItems(dataset),
            rank,
            loader_cls=ResumableLoader,
            batch_sampler=batch_sampler,
            index_batches=batches,
        )

    def _train_position(self, batches: int) -> tuple[int, int] | None:
        """``(epoch, batches to skip)`` of the next training epoch of ``batches``, from the optimizer step count.

        Each epoch takes ``ceil(batches / accumulate_grad_batches)`` optimizer steps, so step ``s`` is
        epoch ``s // steps_per_epoch``. Before Lightning restores a checkpoint's loops (it may build the
        loader first, for ``estimated_stepping_batches``) the step comes from :meth:`load_state_dict`.
        ``None`` without a trainer: the epoch given to ``set_epoch``, from its first batch.
        """
        trainer = self.trainer
        step, self._resume_step = self._resume_step, None
        if step is None:
            step = getattr(trainer, "global_step", None)
        if step is None or trainer is None:
            return None
        limit = getattr(trainer, "limit_train_batches", 1.0)
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif isinstance(limit, float) and limit != 1.0:
            batches = int(batches * limit)
        accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1)))
        steps_per_epoch = math.ceil(batches / accumulate)
        if steps_per_epoch <= 0:
            return 0, 0
        epoch, step_in_epoch = divmod(int(step), steps_per_epoch)
        return epoch, step_in_epoch * accumulate

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the optimizer step the training data position follows from."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {
            "train_global_step": int(trainer.global_step),
            "world_size": int(trainer.world_size),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_global_step" not in state_dict:
            return
        self._resume_step = int(state_dict["train_global_step"])
        trainer = self.trainer
        world = int(getattr(trainer, "world_size", 1) or 1)
        if (state_dict.get("world_size"), state_dict.get("batch_size")) != (world, self.batch_size):
            LOGGER.warning(
                "resuming with %d processes x batch %d, the checkpoint was written with %s x %s: the training "
                "data order continues from the same step but is not the one an uninterrupted run would see",
                world,
                self.batch_size,
                state_dict.get("world_size"),
                state_dict.get("batch_size"),
            )

    def _eval_loader(self, dataset: CocoInstanceDataset) -> DataLoader:
        world, rank = self._world()
        sampler = InferenceSampler(len(dataset), world, rank)
        return self._loader(dataset, rank, sampler=sampler, batch_size=self.eval_batch_size, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        """This rank's unpadded contiguous shard of the val split, in file order."""
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        """This rank's unpadded contiguous shard of the test split, in file order."""
        return self._eval_loader(self.test_dataset)
