"""Samplers whose draws depend only on (seed, epoch, position): the same in one process, in N and after a resume.

A training epoch is a seeded permutation of the training set, cut into global batches of
``batch_size × processes`` samples; process ``r`` takes positions ``r, r + N, ...`` of every global
batch. Together the processes see exactly the samples one process would see with the global batch,
without the repeated samples that Lightning's default distributed sampler pads uneven shards with,
and every process has the same number of batches, so no collective waits for a process that has
run out. Each sample comes with the seed of its augmentation, drawn from the same seeded stream, so
augmentation does not depend on which worker process or which run (interrupted or not) loads it.

Evaluation gives each sample to exactly one process. A process left without any (fewer samples
than processes) evaluates one stand-in, :data:`STAND_IN`, which the dataset returns with the label
:data:`NO_LABEL` and the metrics leave out: it still takes part in the epoch-end synchronisation
the other processes wait in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler

STAND_IN = -1
"""The index an evaluation sampler yields for a process that has no sample of its own."""

NO_LABEL = -1
"""The label of a stand-in sample: metrics ignore it, losses weigh it zero."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class GlobalBatchSampler(DistributedSampler):
    """Yields ``(index, augmentation_seed)`` for this process; ``set_epoch`` (Lightning calls it) picks the epoch.

    A last global batch smaller than the number of processes would leave some processes without a
    batch; it is left out on every process (never with one process), and :attr:`dropped` counts it.
    """

    def __init__(self, dataset: Sized, batch_size: int, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None) -> None:
        world, own_rank = _world()
        num_replicas, rank = num_replicas or world, own_rank if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self._positions = self._local_positions()

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    @property
    def dropped(self) -> int:
        tail = len(self.dataset) % self.global_batch_size
        return tail if 0 < tail < self.num_replicas else 0

    def _local_positions(self) -> np.ndarray:
        """Positions of this process's samples in the epoch's permutation."""
        usable = len(self.dataset) - self.dropped
        positions = np.arange(usable)
        in_batch = positions % self.global_batch_size
        return positions[in_batch % self.num_replicas == self.rank]

    def __len__(self) -> int:
        return len(self._positions)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        stream = np.random.default_rng([self.seed, self.epoch])
        order = stream.permutation(len(self.dataset))
        seeds = stream.integers(0, 2**31 - 1, size=len(self.dataset))
        for position in self._positions:
            yield int(order[position]), int(seeds[position])


class EvaluationSampler(DistributedSampler):
    """Positions ``rank, rank + N, ...`` in order: every sample on exactly one process, none repeated.

    Shards differ by at most one sample; a process whose shard is empty yields :data:`STAND_IN` once,
    so a batch holds either real samples only or the stand-in alone.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        world, own_rank = _world()
        num_replicas, rank = num_replicas or world, own_rank if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self._positions = list(range(rank, len(dataset), num_replicas)) or [STAND_IN]

    def __len__(self) -> int:
        return len(self._positions)

    def __iter__(self) -> Iterator[int]:
        return iter(self._positions)
