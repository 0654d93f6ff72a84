"""Training of the instance network: IAG losses with online self-refinement (SPEC §4-5).

One training step: forward, refined labels from the network's own detached outputs
(``bestie.refine.refine_targets``, on the training device), the combined losses
(``bestie.losses.instance_losses``), one Adam step, one warm-up/poly scheduler step. The
step makes no host-device synchronisation: loss terms are summed on the device and read
(and checked for NaN/inf) only every ``log_every`` iterations. Full state is saved every
``checkpoint_every`` iterations; a rerun resumes from it exactly (same batches, same RNG).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bestie.config import Config
from bestie.engine.checkpoint import TrainingObjects, resume_checkpoint, save_checkpoint, save_model
from bestie.engine.distributed import Process, barrier, wrap_model
from bestie.engine.logger import CsvLog, progress
from bestie.engine.schedule import ResumableSampler, warmup_poly_scheduler
from bestie.losses import instance_losses
from bestie.refine import refine_targets

LOG = logging.getLogger(__name__)
TERMS = ("total", "seg", "center_pseudo", "offset_pseudo", "center_refined", "offset_refined")
COLUMNS = (
    "iteration",
    "epoch",
    "lr",
    *TERMS,
    "refined_instances",
    "pseudo_tp",
    "refined_tp",
    "seconds_per_iteration",
)
Audit = Callable[[nn.Module, int], dict[str, float]]


@dataclass
class Run(TrainingObjects):
    """Everything a training step needs, built once."""

    process: Process
    amp: bool


def build_run(cfg: Config, model: nn.Module, process: Process) -> Run:
    """Move the model to its device (channels-last on CUDA), wrap it for DDP, build Adam."""
    model = model.to(process.device)
    cuda = process.device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, process)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.instance.lr, weight_decay=cfg.instance.weight_decay
    )
    scheduler = warmup_poly_scheduler(
        optimizer,
        cfg.instance.iterations,
        warmup=cfg.instance.warmup_iterations,
        warmup_factor=cfg.instance.warmup_factor,
        power=cfg.instance.poly_power,
    )
    amp = cuda and cfg.instance.amp
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return Run(model, optimizer, scheduler, scaler, process, amp)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    if device.type == "cuda":
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def _points(batch: dict[str, torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Per-image GT points (point supervision), sliced on the CPU: no device sync."""
    counts = batch["point_count"].tolist()
    return [batch["points"][b, :n].to(device) for b, n in enumerate(counts)]


def train_step(
    run: Run, batch: dict[str, torch.Tensor], cfg: Config, iteration: int
) -> torch.Tensor:
    """One optimisation step; returns the loss terms and refined count as a device tensor."""
    device = run.process.device
    point_supervision = cfg.supervision == "point"
    points = _points(batch, device) if point_supervision else None
    data = _to_device(
        {k: v for k, v in batch.items() if k not in ("points", "point_count")}, device
    )
    with torch.autocast(device.type, dtype=torch.float16, enabled=run.amp):
        outputs = run.model(data["image"])
    outputs = {key: value.float() for key, value in outputs.items()}
    pseudo = {key: data[key] for key in ("center", "offset", "weight")}
    refined = None
    if cfg.refine.enabled and iteration > cfg.refine.start_iter:
        with torch.no_grad():
            refined = refine_targets(
                outputs["seg"].detach(),
                outputs["center"].detach(),
                outputs["offset"].detach(),
                data["image_label"],
                data["semantic"],
                cfg.refine,
                sigma=cfg.pseudo.sigma,
                points=points,
            )
    losses = instance_losses(
        outputs,
        pseudo,
        refined,
        data["semantic"],
        cfg.loss,
        iag=cfg.instance.iag,
        point_supervision=point_supervision,
    )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(losses["total"]).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    count = torch.zeros((), device=device)
    if refined is not None and refined.get("center") is not None:
        count = (refined["center"] == 1.0).sum().float()
    return torch.stack([losses[term].detach().float() for term in TERMS] + [count])


def train_instance(
    cfg: Config,
    model: nn.Module,
    dataset: Dataset,
    output: Path,
    process: Process,
    *,
    key: str,
    audit: Audit | None = None,
    snapshot_metadata: dict[str, Any] | None = None,
) -> nn.Module:
    """Train for ``cfg.instance.iterations``, resuming from ``output/checkpoints/last.pt``.

    Args:
        cfg: the experiment config (instance, refine, loss, pseudo, seed, supervision).
        model: the freshly built network (weights of a checkpoint replace its init).
        dataset: items as produced by ``bestie.data.instance_dataset.InstanceDataset``.
        output: the stage folder (``train_log.csv`` and ``checkpoints/last.pt`` go here).
        process: this process (rank, world size, device).
        key: identifies the configuration and inputs; a checkpoint of another key is ignored.
        audit: optional callable (model, iteration) -> {"pseudo_tp", "refined_tp"} run on
            the main process at every log step (the paper's Fig. 6).
        snapshot_metadata: metadata of the model files kept every
            ``instance.snapshot_every`` iterations in ``output/snapshots/`` (the mAP curve).

    Returns:
        the trained model (unwrapped from DDP).
    """
    icfg = cfg.instance
    if icfg.batch_size % process.world_size:
        raise ValueError(
            f"instance.batch_size {icfg.batch_size} is not divisible by the "
            f"{process.world_size} training processes"
        )
    run = build_run(cfg, model, process)
    checkpoint_path = output / "checkpoints" / "last.pt"
    log = CsvLog(output / "train_log.csv", COLUMNS)
    state = resume_checkpoint(checkpoint_path, run.objects(), key=key, map_location=process.device)
    start = state.progress if state else 0
    if state and process.is_main:
        log.restore(state.extra.get("log", []))
        LOG.info("resuming at iteration %d of %d", start, icfg.iterations)
    per_rank = icfg.batch_size // process.world_size
    sampler = ResumableSampler(
        len(dataset),
        per_rank,
        cfg.seed,
        process.rank,
        process.world_size,
        start=start,
        total=icfg.iterations,
    )
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=icfg.workers,
        pin_memory=process.device.type == "cuda",
        # Its own generator: creating the iterator must not draw from the global RNG,
        # which a resumed run has just restored from the checkpoint.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    _loop(cfg, run, loader, log, start, checkpoint_path, key, audit, snapshot_metadata or {})
    return run.model.module if process.distributed else run.model


def _loop(cfg, run, loader, log, start, checkpoint_path, key, audit, snapshot_metadata) -> None:
    icfg, process = cfg.instance, run.process
    per_epoch = loader.sampler.batches_per_epoch
    window = torch.zeros(len(TERMS) + 1, device=process.device)
    bar = (
        progress(
            range(icfg.iterations),
            total=icfg.iterations,
            initial=start,
            description="train instance",
        )
        if process.is_main
        else None
    )
    iteration, tick = start, time.perf_counter()
    run.model.train()
    for batch in loader:
        iteration += 1
        window += train_step(run, batch, cfg, iteration)
        if bar is not None:
            bar.update(1)
        if iteration % icfg.log_every == 0 or iteration == icfg.iterations:
            epoch = (iteration - 1) // per_epoch
            tick = _log_window(cfg, run, log, window, iteration, epoch, tick, audit)
            window.zero_()
        if process.is_main and icfg.snapshot_every and iteration % icfg.snapshot_every == 0:
            snapshot = checkpoint_path.parent.parent / "snapshots" / f"iter_{iteration:07d}.pt"
            model = run.model.module if process.distributed else run.model
            save_model(snapshot, model, {"iteration": iteration, **snapshot_metadata})
        if iteration % icfg.checkpoint_every == 0 or iteration == icfg.iterations:
            if process.is_main:
                save_checkpoint(
                    checkpoint_path,
                    run.objects(),
                    progress=iteration,
                    key=key,
                    extra={"log": log.rows},
                )
            barrier(process)
    if bar is not None:
        bar.close()


def _log_window(cfg, run, log, window, iteration, epoch, tick, audit) -> float:
    """Read the summed terms (one device sync), check them, append a log row."""
    steps = (iteration - 1) % cfg.instance.log_every + 1
    values = (window / steps).tolist()
    if not all(math.isfinite(value) for value in values[: len(TERMS)]):
        raise FloatingPointError(
            f"non-finite loss in iterations {iteration - steps + 1}..{iteration}: "
            + ", ".join(f"{t}={v}" for t, v in zip(TERMS, values, strict=False))
        )
    now = time.perf_counter()
    if not run.process.is_main:
        return now
    extra = {"pseudo_tp": float("nan"), "refined_tp": float("nan")}
    if audit is not None:
        extra.update(audit(run.model.module if run.process.distributed else run.model, iteration))
        run.model.train()
    row = dict(zip(TERMS, values[: len(TERMS)], strict=True))
    row.update(
        iteration=iteration,
        epoch=epoch,
        lr=run.optimizer.param_groups[0]["lr"],
        refined_instances=values[-1],
        seconds_per_iteration=(now - tick) / steps,
        **extra,
    )
    log.append(row)
    return time.perf_counter()
