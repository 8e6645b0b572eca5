"""Aspect-ratio grouping and evaluation sharding."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DistributedSampler, SequentialSampler

from msrcnn.data import GroupedBatchSampler, InferenceSampler, create_aspect_ratio_groups
from msrcnn.data.samplers import shard_range


def test_aspect_ratio_groups_use_torchvision_bins() -> None:
    ratios = [0.4, 0.5, 0.7, 1.0, 1.3, 1.9, 2.5]
    # k = 1: edges 0.5, 1, 2 -> bisect_right
    assert create_aspect_ratio_groups(ratios, 1).tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert create_aspect_ratio_groups(ratios, 0).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert create_aspect_ratio_groups(ratios, 3).max() <= 7


class _Indices:
    """A base sampler over a fixed sequence (for exact expectations)."""

    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def test_grouped_batches_share_a_group_and_nothing_is_dropped() -> None:
    groups = [0, 1, 0, 1, 0, 0, 1, 2]
    sampler = GroupedBatchSampler(_Indices(list(range(8))), groups, batch_size=2)
    batches = list(sampler)
    assert batches[:3] == [[0, 2], [1, 3], [4, 5]]
    assert sorted(i for batch in batches for i in batch) == list(range(8))
    assert len(batches) == len(sampler) == 4
    assert batches[3] == [6, 7]  # the leftovers of groups 1 and 2, chunked together


@pytest.mark.parametrize(("size", "batch_size"), [(1, 2), (17, 4), (64, 3), (100, 8)])
def test_grouped_batch_sampler_covers_every_index_once(size: int, batch_size: int) -> None:
    rng = np.random.default_rng(size)
    groups = rng.integers(0, 3, size)
    sampler = GroupedBatchSampler(
        DistributedSampler(range(size), num_replicas=1, rank=0, seed=3), groups, batch_size
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-size // batch_size)
    assert sorted(i for batch in batches for i in batch) == list(range(size))
    assert all(len(batch) <= batch_size for batch in batches)
    full = [batch for batch in batches if len(batch) == batch_size]
    mixed = [batch for batch in full if len({int(groups[i]) for i in batch}) > 1]
    assert len(mixed) <= 2  # only the chunked leftovers (at most #groups - 1 batches) can mix groups


def test_grouped_batch_sampler_is_seeded_and_reshuffles_per_epoch() -> None:
    groups = np.zeros(50, dtype=np.int64)

    def epoch_order(seed: int, epoch: int) -> list[list[int]]:
        sampler = GroupedBatchSampler(
            DistributedSampler(range(50), num_replicas=1, rank=0, seed=seed), groups, 4
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_order(0, 0) == epoch_order(0, 0)
    assert epoch_order(0, 0) != epoch_order(0, 1)
    assert epoch_order(0, 0) != epoch_order(1, 0)


def test_grouped_batch_sampler_over_distributed_shards() -> None:
    groups = np.arange(30) % 3
    seen = []
    lengths = set()
    for rank in range(4):
        base = DistributedSampler(range(30), num_replicas=4, rank=rank, shuffle=True, seed=0)
        sampler = GroupedBatchSampler(base, groups, batch_size=2)
        seen += [i for batch in sampler for i in batch]
        lengths.add(len(sampler))
    assert set(seen) == set(range(30))
    assert len(lengths) == 1  # every rank runs the same number of steps


def test_grouped_batch_sampler_with_sequential_base() -> None:
    sampler = GroupedBatchSampler(SequentialSampler(range(5)), [0, 0, 0, 0, 0], batch_size=2)
    assert list(sampler) == [[0, 1], [2, 3], [4]]
    sampler.set_epoch(3)  # a base sampler without set_epoch is fine


@pytest.mark.parametrize("size", [0, 1, 5, 10, 11, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_inference_sampler_shards_exactly(size: int, world: int) -> None:
    shards = [list(InferenceSampler(size, world, rank)) for rank in range(world)]
    assert [i for shard in shards for i in shard] == list(range(size))  # contiguous, in order, no padding
    lengths = [len(InferenceSampler(size, world, rank)) for rank in range(world)]
    assert lengths == [len(shard) for shard in shards]
    assert max(lengths) - min(lengths) <= 1


def test_shard_range_rejects_bad_rank() -> None:
    assert shard_range(10, 3, 0) == (0, 4) and shard_range(10, 3, 2) == (7, 10)
    with pytest.raises(ValueError):
        shard_range(10, 3, 3)
