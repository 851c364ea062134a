"""Task-homogeneous batch sampler: one data set per batch (also across DDP ranks), proportions, determinism."""

from __future__ import annotations

from collections import Counter

import pytest

from embedkit.errors import ConfigError
from embedkit.training.sampler import TaskBatchSampler

SIZES = [40, 24, 16]


def _ds(sampler: TaskBatchSampler, index: int) -> int:
    return sampler.dataset_of(index)


@pytest.mark.parametrize("strategy", ["proportional", "round_robin"])
@pytest.mark.parametrize("drop_last", [True, False])
def test_every_batch_comes_from_one_dataset(strategy: str, drop_last: bool) -> None:
    s = TaskBatchSampler(SIZES, 6, strategy=strategy, seed=3, drop_last=drop_last)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 6
        assert len({_ds(s, i) for i in b}) == 1
        assert len(set(b)) == len(b)  # no pair twice in a batch (data sets are larger than a batch)


def test_one_epoch_visits_each_pair_at_most_once_and_drop_last_loses_only_tails() -> None:
    s = TaskBatchSampler(SIZES, 6, seed=0, drop_last=True)
    seen = Counter(i for b in s for i in b)
    assert max(seen.values()) == 1
    assert len(seen) == sum(n // 6 * 6 for n in SIZES)
    s2 = TaskBatchSampler(SIZES, 6, seed=0, drop_last=False)
    assert set(i for b in s2 for i in b) == set(range(sum(SIZES)))  # every pair is used


def test_proportional_counts_follow_size_times_weight() -> None:
    s = TaskBatchSampler([60, 60], 5, weights=[1.0, 0.5], seed=1)
    per_ds = Counter(_ds(s, b[0]) for b in s)
    assert per_ds == {0: 12, 1: 6}
    up = TaskBatchSampler([20, 20], 5, weights=[3.0, 1.0], seed=1)
    per_ds = Counter(_ds(up, b[0]) for b in up)
    assert per_ds == {0: 12, 1: 4}  # over-sampled with fresh permutations
    occurrences = Counter(i for b in up for i in b if i < 20)
    assert set(occurrences.values()) == {3}  # 3 full passes over data set 0


def test_proportional_interleaves_datasets_round_robin_alternates() -> None:
    s = TaskBatchSampler([50, 50], 5, seed=2)
    order = [_ds(s, b[0]) for b in s]
    assert order != sorted(order)  # shuffled together, not one data set after the other
    rr = TaskBatchSampler([30, 10, 20], 5, strategy="round_robin", seed=2)
    order = [_ds(rr, b[0]) for b in rr]
    assert order == [0, 1, 2, 0, 1, 2, 0, 2, 0, 2, 0, 0]


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a = TaskBatchSampler(SIZES, 4, seed=11)
    b = TaskBatchSampler(SIZES, 4, seed=11)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice gives the same epoch again
    c = TaskBatchSampler(SIZES, 4, seed=12)
    assert list(c) != list(TaskBatchSampler(SIZES, 4, seed=11))


def test_does_not_touch_the_global_rng() -> None:
    import torch

    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(TaskBatchSampler(SIZES, 4, seed=5))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_ranks_share_one_dataset_per_step_and_split_the_global_batch(drop_last: bool) -> None:
    world = 3
    ranks = [TaskBatchSampler(SIZES, 4, seed=9, num_replicas=world, rank=r, drop_last=drop_last)
             for r in range(world)]
    single = TaskBatchSampler(SIZES, 4 * world, seed=9, drop_last=drop_last)
    steps = [list(r) for r in ranks]
    assert len({len(s) for s in steps}) == 1 and len(steps[0]) == len(ranks[0])
    for step, global_batch in enumerate(single.global_batches()):
        parts = [steps[r][step] for r in range(world)]
        assert all(len(p) == 4 for p in parts)
        assert sum(parts, []) == global_batch[1]  # rank slices concatenate to the global batch
        assert len({_ds(single, i) for p in parts for i in p}) == 1


def test_set_epoch_notifies_listeners() -> None:
    s = TaskBatchSampler(SIZES, 4)
    seen: list[int] = []
    s.epoch_listeners.append(seen.append)
    s.set_epoch(3)
    assert seen == [3] and s.epoch == 3


def test_dataset_smaller_than_a_batch_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fewer than one batch of 8") as info:
        TaskBatchSampler([40, 5], 8)
    assert info.value.where == "data.datasets.1"
    assert len(TaskBatchSampler([40, 5], 8, drop_last=False)) == 5 + 1
