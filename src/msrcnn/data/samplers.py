"""Batch samplers: aspect-ratio grouping for training, exact sharding for evaluation.

Training batches group images of similar aspect ratio (as torchvision's detection references do) so
padding to a common size wastes little memory. Evaluation shards the index range contiguously with no
padding, so each image is predicted and counted exactly once across ranks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import BatchSampler, Sampler

from msrcnn.data.errors import LOGGER


def create_aspect_ratio_groups(aspect_ratios: Sequence[float] | np.ndarray, k: int = 0) -> np.ndarray:
    """Group id of every image: its width/height quantized into ``2k + 2`` log-spaced bins.

    Bin edges are ``2 ** linspace(-1, 1, 2k + 1)`` (``[1.0]`` for k = 0: portrait vs landscape), the
    same as torchvision's references.
    """
    bins = 2.0 ** np.linspace(-1.0, 1.0, 2 * k + 1) if k > 0 else np.array([1.0])
    groups = np.searchsorted(bins, np.asarray(aspect_ratios, dtype=np.float64), side="right")
    counts = np.bincount(groups, minlength=len(bins) + 1)
    LOGGER.info("aspect-ratio bin edges %s; images per bin %s", np.round(bins, 3).tolist(), counts.tolist())
    return groups


class GroupedBatchSampler(BatchSampler):
    """Batches whose indices share a group id, drawn in the order of a base sampler.

    Unlike torchvision's reference version nothing is dropped or repeated: once the base sampler is
    exhausted the leftover partial groups are chunked together (largest groups first), so every index
    appears exactly once and there are ``ceil(len(sampler) / batch_size)`` batches.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int] | np.ndarray, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = batch_size
        self.drop_last = False

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for index in self.sampler:
            buffer = buffers[int(self.group_ids[index])]
            buffer.append(int(index))
            if len(buffer) == self.batch_size:
                yield buffer.copy()
                buffer.clear()
        leftovers = [idx for buf in sorted(buffers.values(), key=len, reverse=True) for idx in buf]
        for start in range(0, len(leftovers), self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Reseed the base sampler's shuffle for ``epoch`` (Lightning calls the base sampler directly)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


def shard_range(size: int, num_replicas: int, rank: int) -> tuple[int, int]:
    """``[start, end)`` of ``rank``'s contiguous shard of ``range(size)``; shard sizes differ by at most one."""
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
    base, extra = divmod(size, num_replicas)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class InferenceSampler(Sampler[int]):
    """Contiguous, unpadded shard of ``range(size)`` for one rank: every index is evaluated exactly once."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.size = size
        self.num_replicas = num_replicas
        self.rank = rank
        self.start, self.end = shard_range(size, num_replicas, rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
