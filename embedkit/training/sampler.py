"""Task-homogeneous batches: every batch holds pairs of one data set, in a deterministic, resumable order.

Why not sentence-transformers' ``ProportionalBatchSampler`` / ``RoundRobinBatchSampler``? They are homogeneous
per *process* only: under DDP, accelerate's ``BatchSamplerShard`` hands whole batches to ranks in turn, so rank 0
may train on retrieval pairs while rank 1 trains on classification pairs -- and once embeddings are gathered across
ranks for in-batch negatives, the contrastive batch is mixed again. Here each step draws one **global** batch of
``batch_size x world_size`` indices from a single data set and every rank takes its own contiguous slice, so the
gathered batch is homogeneous too.

The order is a pure function of ``(seed, epoch)`` (no global RNG is touched), which is what exact resume needs:
the Trainer skips the first ``k`` batches of the same order.

Example:
    >>> from embedkit.training.sampler import TaskBatchSampler
    >>> s = TaskBatchSampler([6, 4], batch_size=2, seed=0)
    >>> batches = list(s)
    >>> len(batches) == len(s) == 5
    True
    >>> all(len({i < 6 for i in b}) == 1 for b in batches)   # each batch from one data set
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch.utils.data import Sampler

from embedkit.errors import ConfigError


class TaskBatchSampler(Sampler[list[int]]):
    """Yield batches of global indices (data sets concatenated in order), each batch from one data set.

    Args:
        sizes: number of examples in each data set.
        batch_size: examples per batch **per rank**.
        weights: relative weights (``proportional``): data set ``d`` contributes ``round(weight_d x batches_d)``
            batches per epoch (weights > 1 over-sample with fresh permutations, < 1 under-sample).
        strategy: ``"proportional"`` (batches of all data sets shuffled together) or ``"round_robin"`` (data sets
            in turn, in a fixed order; one that runs out leaves the cycle).
        seed: base seed; the order depends only on ``(seed, epoch)``.
        drop_last: drop each data set's incomplete last global batch (otherwise it is topped up by wrapping around
            that data set, so every rank still gets ``batch_size`` examples).
        num_replicas / rank: DDP world size and this process's rank.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        *,
        weights: Sequence[float] | None = None,
        strategy: Literal["proportional", "round_robin"] = "proportional",
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1 (got {batch_size})", where="training.batch_size")
        if not sizes:
            raise ConfigError("no data sets to sample from", where="data.datasets")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world size {num_replicas}")
        self.sizes = [int(n) for n in sizes]
        self.batch_size = int(batch_size)
        self.weights = [float(w) for w in (weights or [1.0] * len(self.sizes))]
        if len(self.weights) != len(self.sizes):
            raise ValueError("one weight per data set")
        self.strategy = strategy
        self.seed = int(seed)
        self.drop_last = drop_last
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        #: called with the epoch by :meth:`set_epoch` (the trainer hooks the data set's epoch here)
        self.epoch_listeners: list[Callable[[int], None]] = []
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        global_bs = self.batch_size * self.num_replicas
        for i, n in enumerate(self.sizes):
            if n < (global_bs if drop_last else 1):
                raise ConfigError(
                    f"data set #{i} has {n} pairs, fewer than one batch of {global_bs}"
                    + (f" ({self.batch_size} x {self.num_replicas} ranks)" if self.num_replicas > 1 else ""),
                    where=f"data.datasets.{i}",
                    hint="use a smaller training.batch_size, more data, or data.drop_last: false",
                )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields (called by the Trainer before each epoch)."""
        self.epoch = int(epoch)
        for listener in self.epoch_listeners:
            listener(self.epoch)

    # -- planning ------------------------------------------------------------------------------------------------

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def _batches_per_dataset(self) -> list[int]:
        gbs = self.global_batch_size
        full = [n // gbs if self.drop_last else -(-n // gbs) for n in self.sizes]
        if self.strategy == "round_robin":
            return full
        return [max(1, round(b * w)) for b, w in zip(full, self.weights)]

    def _generator(self, *salt: int) -> torch.Generator:
        g = torch.Generator()
        # a fixed mix of (seed, epoch, salt): independent streams, no global RNG involved
        value = self.seed * 1_000_003 + self.epoch * 10_007
        for s in salt:
            value = value * 31 + s + 1
        g.manual_seed(value % (2**63 - 1))
        return g

    def _dataset_batches(self, d: int, count: int) -> list[list[int]]:
        """``count`` global batches of data set ``d``, cut from successive fresh permutations.

        With ``drop_last`` each permutation's incomplete tail is dropped; without it the stream runs on into the
        next permutation (so the last batch wraps around the data set and every rank gets a full slice).
        """
        n, gbs, off = self.sizes[d], self.global_batch_size, self.offsets[d]
        out: list[list[int]] = []
        pool: list[int] = []
        rnd = 0
        while len(out) < count:
            perm = torch.randperm(n, generator=self._generator(d, rnd)).tolist()
            if pool:  # the wrap-around batch must not repeat a pair: leftovers' indices go last
                left = set(pool)
                perm = [i for i in perm if i not in left] + [i for i in perm if i in left]
            pool.extend(perm)
            rnd += 1
            while len(pool) >= gbs and len(out) < count:
                out.append([off + i for i in pool[:gbs]])
                pool = pool[gbs:]
            if self.drop_last:
                pool = []
        return out

    def global_batches(self) -> list[tuple[int, list[int]]]:
        """``[(data set, global indices)]`` for the current epoch, in order (identical on every rank)."""
        counts = self._batches_per_dataset()
        per_ds = [self._dataset_batches(d, c) for d, c in enumerate(counts)]
        if self.strategy == "round_robin":
            order: list[tuple[int, list[int]]] = []
            pos = [0] * len(per_ds)
            while any(p < len(b) for p, b in zip(pos, per_ds)):
                for d, batches in enumerate(per_ds):
                    if pos[d] < len(batches):
                        order.append((d, batches[pos[d]]))
                        pos[d] += 1
            return order
        slots = [d for d, c in enumerate(counts) for _ in range(c)]
        perm = torch.randperm(len(slots), generator=self._generator(10**6)).tolist()
        taken = [0] * len(per_ds)
        order = []
        for j in perm:
            d = slots[j]
            order.append((d, per_ds[d][taken[d]]))
            taken[d] += 1
        return order

    # -- Sampler API ---------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for _, batch in self.global_batches():
            yield batch[lo:hi]

    def __len__(self) -> int:
        return sum(self._batches_per_dataset())

    def dataset_of(self, index: int) -> int:
        """The data set a global index belongs to."""
        for d in range(len(self.sizes) - 1, -1, -1):
            if index >= self.offsets[d]:
                return d
        raise IndexError(index)


class ClusterBatchSampler(TaskBatchSampler):
    """Yield precomputed cluster batches (B3, :func:`embedkit.mining.b3.build_b3_clusters`), one cluster a step.

    Clusters are built per data set, so every batch is task-homogeneous, and each holds exactly one **global**
    batch (``batch_size x num_replicas`` examples): every rank takes its contiguous slice of the same cluster, so the
    gathered contrastive batch is the whole cluster. Each epoch the clusters are shuffled (data sets interleaved as
    in :class:`TaskBatchSampler`'s ``strategy``; the order is a pure function of ``(seed, epoch)``, so exact resume
    works the same way). The members of a cluster stay together; their order inside it is reshuffled per epoch, so
    a rank does not see the same slice every time.

    A data set's **leftover** (the ``n % global batch`` examples in no cluster) is dropped with ``drop_last``
    (the default, as for plain batches: at most ``global batch - 1`` examples per data set, the weakest-linked
    ones). With ``drop_last=False`` it is one extra batch per epoch, topped up with examples drawn (per epoch, from
    the seed) from the data set's clusters, so every example is trained on at least once an epoch.

    Args:
        clusters: per data set, its clusters as lists of **local** indices (``B3Clusters.clusters``).
        leftovers: per data set, its leftover local indices (``B3Clusters.leftover``); default none.
        sizes / batch_size / weights / strategy / seed / drop_last / num_replicas / rank: as for
            :class:`TaskBatchSampler` (a weight scales a data set's clusters per epoch, repeats reshuffled).

    Example:
        >>> s = ClusterBatchSampler([[[0, 1], [2, 3]], [[1, 0]]], sizes=[4, 2], batch_size=2, seed=0)
        >>> sorted(sorted(b) for b in s)   # global indices: data set 1 starts at 4
        [[0, 1], [2, 3], [4, 5]]
    """

    def __init__(
        self,
        clusters: Sequence[Sequence[Sequence[int]]],
        sizes: Sequence[int],
        batch_size: int,
        *,
        leftovers: Sequence[Sequence[int]] | None = None,
        weights: Sequence[float] | None = None,
        strategy: Literal["proportional", "round_robin"] = "proportional",
        seed: int = 0,
        drop_last: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(sizes, batch_size, weights=weights, strategy=strategy, seed=seed, drop_last=drop_last,
                         num_replicas=num_replicas, rank=rank)
        if len(clusters) != len(self.sizes):
            raise ValueError("one cluster list per data set")
        leftovers = leftovers if leftovers is not None else [[] for _ in self.sizes]
        if len(leftovers) != len(self.sizes):
            raise ValueError("one leftover list per data set")
        gbs = self.global_batch_size
        self.clusters = [[[int(i) for i in c] for c in per_ds] for per_ds in clusters]
        self.leftovers = [[int(i) for i in left] for left in leftovers]
        for d, (per_ds, left) in enumerate(zip(self.clusters, self.leftovers)):
            bad = [len(c) for c in per_ds if len(c) != gbs]
            if bad:
                raise ConfigError(
                    f"data set #{d} has clusters of {bad[0]} examples, not one global batch of {gbs}"
                    + (f" ({self.batch_size} x {self.num_replicas} ranks)" if self.num_replicas > 1 else ""),
                    where="data.b3",
                    hint="build the clusters with cluster_size = training.batch_size x world size",
                )
            used = [i for c in per_ds for i in c] + left
            if sorted(used) != list(range(self.sizes[d])):
                raise ValueError(f"data set #{d}: clusters and leftover must hold each of its "
                                 f"{self.sizes[d]} examples exactly once")
            if not per_ds:
                raise ConfigError(f"data set #{d} has no cluster", where=f"data.datasets.{d}",
                                  hint="use a smaller training.batch_size or more data")

    def _local_batches(self, d: int) -> list[list[int]]:
        """Data set ``d``'s batches this epoch (local indices): its clusters, plus the topped-up leftover."""
        batches = [list(c) for c in self.clusters[d]]
        left = self.leftovers[d]
        if left and not self.drop_last:
            pool = [i for c in self.clusters[d] for i in c]
            pick = torch.randperm(len(pool), generator=self._generator(d, 2**20)).tolist()
            batches.append(left + [pool[j] for j in pick[: self.global_batch_size - len(left)]])
        return batches

    def _batches_per_dataset(self) -> list[int]:
        full = [len(self._local_batches(d)) for d in range(len(self.sizes))]
        if self.strategy == "round_robin":
            return full
        return [max(1, round(b * w)) for b, w in zip(full, self.weights)]

    def _dataset_batches(self, d: int, count: int) -> list[list[int]]:
        """``count`` batches of data set ``d``: its batches in successive seeded orders, members reshuffled."""
        local = self._local_batches(d)
        off = self.offsets[d]
        out: list[list[int]] = []
        rnd = 0
        while len(out) < count:
            for j in torch.randperm(len(local), generator=self._generator(d, rnd)).tolist():
                if len(out) == count:
                    break
                batch = local[j]
                inner = torch.randperm(len(batch), generator=self._generator(d, rnd, j + 1)).tolist()
                out.append([off + batch[k] for k in inner])
            rnd += 1
        return out
