"""The order preference training reads the pairs in: a fresh seeded permutation per epoch that a resumed run can
enter part-way, so a killed and resumed training trains on exactly the batches of an uninterrupted one."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader

from tsq.training.pairs_data import collate


class EpochPermutation(torch.utils.data.Sampler[int]):
    """A fresh permutation every epoch, seeded by (seed, epoch) alone, that a resumed run can enter part-way.

    Under data parallelism each process reads every `world`-th pair of the permutation from its rank on
    (padded with its first pairs to a multiple of `world`, as torch's `DistributedSampler` does), so the
    pairs of one global batch are the pairs of the one-process batch of the same global size, and the
    loss curve is the one-process curve. Lightning calls `set_epoch` at each epoch start;
    `batches_started` counts this epoch's batches (a callback raises it), and `resume_at` makes the next
    pass skip those already trained on.
    """

    def __init__(self, size: int, seed: int, batch_size: int) -> None:
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.epoch, self.batches_started, self._skip = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # the skip belongs to the epoch a checkpoint was taken in, never to the next
            self._skip = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, batches: int) -> None:
        self.epoch, self.batches_started, self._skip = epoch, batches, batches * self.batch_size

    @staticmethod
    def rank_and_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return math.ceil(self.size / self.rank_and_world()[1])

    def __iter__(self):
        rank, world = self.rank_and_world()
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order += order[: len(self) * world - self.size]
        mine = order[rank::world]
        skip, self._skip = self._skip, 0
        if not skip:
            self.batches_started = 0
        return iter(mine[skip:])


class ResumableLoader(DataLoader):
    """The pairs in `EpochPermutation` order; Lightning stores its `state_dict` in every checkpoint and hands it
    back on resume, so a resumed run trains on exactly the batches an uninterrupted one would."""

    def __init__(self, data: list[dict], batch_size: int, seed: int) -> None:
        super().__init__(data, batch_size=batch_size, sampler=EpochPermutation(len(data), seed, batch_size),
                         collate_fn=collate)  # fmt: skip

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches_started": self.sampler.batches_started}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume_at(state["epoch"], state["batches_started"])


class CountBatches(L.Callback):
    """Counts the batches of the current epoch that training started (what a checkpoint's loader state says)."""

    def __init__(self, sampler: EpochPermutation) -> None:
        self.sampler = sampler

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sampler.batches_started += 1


def rows_read(size: int, seed: int, batch_size: int, steps: int, accumulate: int = 1, world: int = 1) -> list[int]:
    """The positions (into the training data) that a training of `steps` optimizer steps reads, over all
    `world` processes, in `EpochPermutation` order: whole epochs while the steps last, then the first
    `remaining steps x accumulate` batches of each process's share of the next one. Sorted."""
    if min(size, batch_size, accumulate, world) <= 0 or steps < 0:
        raise ValueError(
            f"rows_read needs positive sizes, got {size=}, {batch_size=}, {accumulate=}, {world=}, {steps=}"
        )
    share = math.ceil(size / world)
    batches = math.ceil(share / batch_size)
    per_epoch = math.ceil(batches / accumulate)
    read: set[int] = set()
    epoch, remaining = 0, steps
    while remaining > 0 and len(read) < size:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        order += order[: share * world - size]
        take = share if remaining >= per_epoch else remaining * accumulate * batch_size
        for rank in range(world):
            read.update(order[rank::world][:take])
        remaining -= per_epoch
        epoch += 1
    return sorted(read)
