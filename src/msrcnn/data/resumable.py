"""Resumable loading: a training epoch that restarts mid-epoch with exactly the batches and the
augmentation an uninterrupted run would have had.

:class:`ResumableBatches` gives an epoch's index batches from any position, each index paired with its
augmentation seed (:func:`sample_seed`); :class:`SeededItems` loads an item under that seed; and
:class:`ResumableLoader` is the DataLoader that iterates them. The data module
(:meth:`~msrcnn.data.DetectionDataModule.train_dataloader`) puts them together from the optimizer step
a checkpoint resumes from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from msrcnn.data.errors import LOGGER

__all__ = ["ResumableBatches", "ResumableLoader", "SeededItems", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch``: a hash, the same in any worker or process."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ResumableBatches:
    """A training epoch's index batches that can start mid-epoch, each index paired with its augmentation seed.

    ``position(batches_per_epoch)`` is asked when an epoch's iteration starts and returns
    ``(epoch, skip)``: the base sampler is reshuffled for ``epoch`` and the first ``skip`` batches
    (already trained on before a resume) are left out, so a resumed run sees exactly the batches an
    uninterrupted one would.
    ``None`` keeps the epoch last given to the base sampler's ``set_epoch`` and skips nothing. The
    items are ``(index, seed)`` with ``seed = sample_seed(seed, epoch, index)``: random augmentation
    then depends on neither the worker that loads it nor the RNG use before it. ``len`` is the full
    epoch (what Lightning counts a resumed epoch's batches against).
    """

    def __init__(self, batch_sampler, position, seed: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.position = position
        self.seed = int(seed)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        base = getattr(self.batch_sampler, "sampler", None)
        position = self.position(len(self.batch_sampler)) if self.position is not None else None
        if position is None:
            epoch, skip = int(getattr(base, "epoch", 0)), 0
        else:
            epoch, skip = position
            set_epoch = getattr(base, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
        if skip:
            LOGGER.info("resuming the training data mid-epoch: epoch %d from batch %d", epoch, skip)
        for i, batch in enumerate(self.batch_sampler):
            if i >= skip:
                yield [(int(index), sample_seed(self.seed, epoch, int(index))) for index in batch]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class SeededItems(Dataset):
    """Loads ``(index, seed)`` items with torch's CPU generator seeded by ``seed`` (its own state kept intact).

    The random augmentation of an item is then a function of the item and the epoch alone: the same in
    any worker, unaffected by prefetching, and reproduced exactly after a resume.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]):
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """A DataLoader drawing its index batches from a :class:`ResumableBatches` (through ``_index_sampler``,
    the attribute torch's loader iterators read their batches from); ``batch_sampler`` stays the plain one."""

    def __init__(self, *args: Any, index_batches: ResumableBatches, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._index_batches = index_batches

    # Private in torch, and kept: DataLoader has no public hook for iterating batches other than its
    # batch_sampler's while len() and Lightning's set_epoch still see the plain one (torchdata's
    # StatefulDataLoader would be the public route; it is not a dependency). Tested by the exact-resume tests.
    @property
    def _index_sampler(self) -> ResumableBatches:
        return self._index_batches

    # Lightning's stateful-loader protocol: a resumed run asks the loader whether it can resume mid-epoch
    # (and warns "not resumable" otherwise). It can: its position follows the trainer's optimizer step
    # (the data module's state_dict), so there is nothing of its own to store.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
