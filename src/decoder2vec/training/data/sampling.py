"""Deterministic, resumable batch order.

Epoch ``e``'s batches are a pure function of ``(seed, e)``, so a run resumed from ``(epoch, index)``
sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from decoder2vec.training.errors import BatchSizeError


@dataclass
class Position:
    epoch: int = 0
    index: int = 0  # batches of this epoch already consumed


class BatchPlan:
    """Global batches of example indices; each group (e.g. a task) fills its own batches.

    groups: lists of example indices; a batch never mixes groups. Within a group the order is shuffled
    each epoch, incomplete batches are dropped (all ranks need equal-size shards), and the batches of
    all groups are shuffled together.
    """

    def __init__(self, groups: list[list[int]], batch_size: int, seed: int, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise BatchSizeError(f"batch size must be positive, got {batch_size}")
        sizes = [len(g) for g in groups]
        if not any(s >= batch_size for s in sizes):
            where = "the data set" if len(groups) == 1 else "every task"
            raise BatchSizeError(
                f"batch size {batch_size} is larger than {where} ({max(sizes, default=0)} examples at most); "
                "lower the batch size or add data"
            )
        self.groups, self.batch_size, self.seed, self.shuffle = groups, batch_size, seed, shuffle
        self.position = Position()

    @classmethod
    def single(cls, n: int, batch_size: int, seed: int, shuffle: bool = True) -> BatchPlan:
        return cls([list(range(n))], batch_size, seed, shuffle)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        batches = []
        for group in self.groups:
            order = torch.randperm(len(group), generator=gen).tolist() if self.shuffle else range(len(group))
            members = [group[i] for i in order]
            batches += [
                members[i : i + self.batch_size]
                for i in range(0, len(members) - self.batch_size + 1, self.batch_size)
            ]
        if self.shuffle and len(self.groups) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        """Endless stream from the current position, advancing it as batches are taken."""
        while True:
            batches = self.epoch_batches(self.position.epoch)
            while self.position.index < len(batches):
                batch = batches[self.position.index]
                self.position.index += 1
                yield batch
            self.position = Position(self.position.epoch + 1, 0)

    def state_dict(self) -> dict:
        return {"epoch": self.position.epoch, "index": self.position.index}

    def load_state_dict(self, state: dict) -> None:
        self.position = Position(int(state["epoch"]), int(state["index"]))


def shard(batch: list, rank: int, world_size: int) -> list:
    """This rank's contiguous slice of a global batch (rank order matches ``gather_with_grad``)."""
    per = len(batch) // world_size
    return batch[rank * per : (rank + 1) * per]
