"""The iteration-based training loop shared by the instance, segmentation and Mask R-CNN trainers.

A run of ``total`` iterations that resumes exactly:

* :func:`resume_run` restores the model, optimiser, scheduler, scaler, RNG states and the log
  rows from ``checkpoints/last.pt`` when its key matches, and says where to start;
* :func:`resumable_loader` draws batches from a :class:`ResumableSampler` (items addressed as
  ``(index, epoch)``) through a DataLoader with its own generator, so creating the iterator
  never draws from the global RNG that the resumed run has just restored;
* :func:`run_iterations` calls ``step(batch, iteration)`` (which returns the iteration's
  figures as a device tensor), sums them on the device, and every ``log_every`` iterations
  hands their mean to ``on_log`` (the one host-device synchronisation per window); every
  ``checkpoint_every`` iterations (and at the end) the main process saves full state.

The epoch-based classifier trainer does not use it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bestie.engine.checkpoint import TrainingObjects, resume_checkpoint, save_checkpoint
from bestie.engine.distributed import Process, barrier
from bestie.engine.logger import CsvLog, progress
from bestie.engine.schedule import ResumableSampler

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """The mean figures of the iterations since the last log row."""

    values: list[float]  # the step tensor's entries, averaged over the window
    first: int  # the first iteration of the window (1-based)
    iteration: int  # the last iteration of the window
    epoch: int  # the epoch of that iteration (0-based)
    seconds_per_iteration: float

    def check_finite(self, names: Sequence[str], what: str, hint: str = "") -> None:
        """Raise FloatingPointError when one of the first ``len(names)`` values is NaN/inf."""
        values = self.values[: len(names)]
        if all(math.isfinite(value) for value in values):
            return
        terms = ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))
        raise FloatingPointError(
            f"non-finite {what} in iterations {self.first}..{self.iteration}: {terms}{hint}"
        )


@dataclass
class Resumed:
    """Where a run starts, its log (rows so far restored) and its checkpoint file."""

    start: int
    log: CsvLog
    checkpoint: Path


def resume_run(
    output: Path,
    run: TrainingObjects,
    columns: Sequence[str],
    process: Process,
    *,
    key: str,
    total: int,
) -> Resumed:
    """Restore ``run`` from ``output/checkpoints/last.pt`` (if it is this key's) and the log."""
    checkpoint = output / "checkpoints" / "last.pt"
    log = CsvLog(output / "train_log.csv", columns)
    state = resume_checkpoint(checkpoint, run.objects(), key=key, map_location=process.device)
    start = state.progress if state else 0
    if state and process.is_main:
        log.restore(state.extra.get("log", []))
        LOG.info("resuming at iteration %d of %d", start, total)
    return Resumed(start, log, checkpoint)


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    process: Process,
    *,
    seed: int,
    start: int,
    total: int,
    workers: int,
    config_key: str,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """Batches ``start + 1 .. total`` of this process's share of ``batch_size`` (total).

    ``config_key`` names the batch size's config key in the error raised when it does not
    split over the processes.
    """
    if batch_size % process.world_size:
        raise ValueError(
            f"{config_key} {batch_size} is not divisible by the {process.world_size} "
            "training processes"
        )
    per_rank = batch_size // process.world_size
    sampler = ResumableSampler(
        len(dataset), per_rank, seed, process.rank, process.world_size, start=start, total=total
    )
    return DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=process.device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


def run_iterations(
    run: TrainingObjects,
    loader: DataLoader,
    resumed: Resumed,
    process: Process,
    *,
    total: int,
    log_every: int,
    checkpoint_every: int,
    key: str,
    description: str,
    step: Callable[[Any, int], torch.Tensor],
    on_log: Callable[[Window], dict[str, Any] | None],
    after_step: Callable[[int], None] | None = None,
) -> None:
    """Iterations ``resumed.start + 1 .. total``: steps, log rows and checkpoints.

    Args:
        step: ``(batch, iteration) -> tensor`` of figures (device tensor, no sync).
        on_log: called on every process with the window's means; returns the log row (its
            ``iteration``, ``epoch``, ``lr`` and ``seconds_per_iteration`` are filled in
            here) or None for no row. Only the main process writes the log.
        after_step: called with each iteration number after its step (e.g. snapshots).
    """
    per_epoch = loader.sampler.batches_per_epoch
    window: torch.Tensor | None = None
    bar = None
    if process.is_main:
        bar = progress(range(total), total=total, initial=resumed.start, description=description)
    iteration, tick = resumed.start, time.perf_counter()
    run.model.train()
    for batch in loader:
        iteration += 1
        figures = step(batch, iteration)
        window = figures if window is None else window + figures
        if bar is not None:
            bar.update(1)
        if iteration % log_every == 0 or iteration == total:
            steps = (iteration - 1) % log_every + 1
            values = (window / steps).tolist()  # the one device sync per log window
            now = time.perf_counter()
            epoch = (iteration - 1) // per_epoch
            mean = Window(values, iteration - steps + 1, iteration, epoch, (now - tick) / steps)
            row = on_log(mean)
            if row is not None and process.is_main:
                row.update(
                    iteration=iteration,
                    epoch=mean.epoch,
                    lr=run.optimizer.param_groups[0]["lr"],
                    seconds_per_iteration=mean.seconds_per_iteration,
                )
                resumed.log.append(row)
            window, tick = None, time.perf_counter()
        if after_step is not None:
            after_step(iteration)
        if iteration % checkpoint_every == 0 or iteration == total:
            if process.is_main:
                save_checkpoint(
                    resumed.checkpoint,
                    run.objects(),
                    progress=iteration,
                    key=key,
                    extra={"log": resumed.log.rows},
                )
            barrier(process)
    if bar is not None:
        bar.close()


def train_iterations(
    run: TrainingObjects,
    dataset: Dataset,
    output: Path,
    process: Process,
    cfg: Any,
    *,
    section: str,
    seed: int,
    key: str,
    columns: Sequence[str],
    description: str,
    step: Callable[[Any, int], torch.Tensor],
    on_log: Callable[[Window], dict[str, Any] | None],
    after_step: Callable[[int], None] | None = None,
    collate_fn: Callable | None = None,
) -> None:
    """Resume, build the loader and run the iterations of one training stage.

    ``cfg`` is the stage's config section (``section`` names it in errors): its
    ``iterations``, ``batch_size``, ``workers``, ``log_every`` and ``checkpoint_every``.
    """
    resumed = resume_run(output, run, columns, process, key=key, total=cfg.iterations)
    loader = resumable_loader(
        dataset,
        cfg.batch_size,
        process,
        seed=seed,
        start=resumed.start,
        total=cfg.iterations,
        workers=cfg.workers,
        config_key=f"{section}.batch_size",
        collate_fn=collate_fn,
    )
    run_iterations(
        run,
        loader,
        resumed,
        process,
        total=cfg.iterations,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        key=key,
        description=description,
        step=step,
        on_log=on_log,
        after_step=after_step,
    )
