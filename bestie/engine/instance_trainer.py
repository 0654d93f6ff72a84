"""Training of the instance network: IAG losses with online self-refinement (SPEC §4-5).

One training step: forward, refined labels from the network's own detached outputs
(``bestie.refine.refine_targets``, on the training device), the combined losses
(``bestie.losses.instance_losses``), one Adam step, one warm-up/poly scheduler step. The
step makes no host-device synchronisation: loss terms are summed on the device and read
(and checked for NaN/inf) only every ``log_every`` iterations. Full state is saved every
``checkpoint_every`` iterations; a rerun resumes from it exactly (same batches, same RNG).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from bestie.config import Config
from bestie.engine.checkpoint import TrainingObjects, save_model
from bestie.engine.distributed import Process, wrap_model
from bestie.engine.loop import Window, train_iterations
from bestie.engine.schedule import warmup_poly_scheduler
from bestie.losses import instance_losses
from bestie.refine import refine_targets

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
    run = build_run(cfg, model, process)
    snapshots = output / "snapshots"

    def on_log(window: Window) -> dict[str, Any] | None:
        window.check_finite(TERMS, "loss")
        if not process.is_main:
            return None
        extra = {"pseudo_tp": float("nan"), "refined_tp": float("nan")}
        if audit is not None:
            extra.update(audit(_unwrap(run), window.iteration))
            run.model.train()
        row = dict(zip(TERMS, window.values[: len(TERMS)], strict=True))
        return {**row, "refined_instances": window.values[-1], **extra}

    def after_step(iteration: int) -> None:
        if process.is_main and icfg.snapshot_every and iteration % icfg.snapshot_every == 0:
            metadata = {"iteration": iteration, **(snapshot_metadata or {})}
            save_model(snapshots / f"iter_{iteration:07d}.pt", _unwrap(run), metadata)

    train_iterations(
        run,
        dataset,
        output,
        process,
        icfg,
        section="instance",
        seed=cfg.seed,
        key=key,
        columns=COLUMNS,
        description="train instance",
        step=lambda batch, iteration: train_step(run, batch, cfg, iteration),
        on_log=on_log,
        after_step=after_step,
    )
    return _unwrap(run)


def _unwrap(run: Run) -> nn.Module:
    """The model without its DDP wrapper."""
    return run.model.module if run.process.distributed else run.model
