"""Iteration-based training helpers: the warm-up + poly schedule and a resumable sampler.

The sampler's order is a pure function of (seed, epoch), and it can start at any
iteration, so a run resumed at iteration i sees exactly the batches an uninterrupted run
would have seen from i on, without loading the skipped ones.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def warmup_poly_factor(
    step: int, total: int, *, warmup: int, warmup_factor: float, power: float
) -> float:
    """The multiplier of the base learning rate after ``step`` scheduler steps (SPEC §5.2).

    f(k) = warmup_factor + (1 - warmup_factor) * k / warmup for k < warmup, else 1; times the
    poly factor (1 - k / total) ** power, which also applies during the warm-up.
    """
    ramp = warmup_factor + (1.0 - warmup_factor) * step / warmup if step < warmup else 1.0
    return ramp * max(0.0, 1.0 - step / total) ** power


def warmup_poly_scheduler(
    optimizer: torch.optim.Optimizer,
    total: int,
    *,
    warmup: int,
    warmup_factor: float,
    power: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying :func:`warmup_poly_factor`; call ``step()`` once per iteration."""

    def factor(step: int) -> float:
        return warmup_poly_factor(
            step, total, warmup=warmup, warmup_factor=warmup_factor, power=power
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ResumableSampler(Sampler[tuple[int, int]]):
    """(index, epoch) keys for iterations ``start``..``total`` of a data-parallel run.

    Each epoch's permutation is drawn from a generator seeded with (seed, epoch); rank r of
    w takes every w-th index; the tail that does not fill a whole batch on every rank is
    dropped (``drop_last``). Keys carry the epoch so a data set can seed its augmentation
    per (epoch, index) and one DataLoader (with persistent workers) serves the whole run.

    Args:
        size: number of samples in the data set.
        batch_size: samples per batch on one rank.
        seed: base seed.
        rank, world_size: this process's position among the data-parallel processes.
        start, total: iterations already done and iterations in all.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        start: int = 0,
        total: int = 0,
    ) -> None:
        if size < batch_size * world_size:
            raise ValueError(
                f"{size} training images are fewer than one batch of "
                f"{batch_size} x {world_size} processes"
            )
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start, self.total = start, total

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's sample indices of one epoch, in order."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        return order[:usable][self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start
        while iteration < self.total:
            epoch, offset = divmod(iteration, self.batches_per_epoch)
            order = self.epoch_order(epoch)
            for batch in range(offset, self.batches_per_epoch):
                for index in order[batch * self.batch_size : (batch + 1) * self.batch_size]:
                    yield index, epoch
                iteration += 1
                if iteration >= self.total:
                    return

    def __len__(self) -> int:
        return max(self.total - self.start, 0) * self.batch_size
