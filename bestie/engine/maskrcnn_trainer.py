"""Training of the Mask R-CNN refinement stage (and of the fully supervised oracle).

torchvision's detection recipe, iteration-based: SGD with momentum and weight decay on the
trainable parameters, a linear warm-up then step decay (``maskrcnn.lr_steps``), the sum of
the five Mask R-CNN losses, AMP on CUDA, data parallel over the processes of ``torchrun``.
Optional gradient-norm clipping (``maskrcnn.clip_grad_norm``) is off in the recipe; it keeps
a random-init network stable at a high learning rate. Loss terms stay on the device and are
read (and checked for NaN/inf) every ``log_every`` iterations; full state is saved every
``checkpoint_every`` iterations and a rerun resumes from it exactly (same batches, same
RNG): the loop of :mod:`bestie.engine.loop`, shared with the instance and segnet trainers.

Reference: pytorch/vision references/detection/engine.py (``train_one_epoch``: the loss sum,
the non-finite guard, the warm-up) and references/detection/train.py (SGD, MultiStepLR).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from bestie.data.maskrcnn_dataset import collate
from bestie.engine.checkpoint import TrainingObjects
from bestie.engine.distributed import Process, wrap_model
from bestie.engine.loop import Window, train_iterations
from bestie.sections import MaskRcnnConfig

# torchvision's loss names, and their sum first.
TERMS = (
    "total",
    "loss_classifier",
    "loss_box_reg",
    "loss_mask",
    "loss_objectness",
    "loss_rpn_box_reg",
)
COLUMNS = ("iteration", "epoch", "lr", *TERMS, "seconds_per_iteration")


def warmup_step_factor(
    step: int, *, warmup: int, warmup_factor: float, milestones: Sequence[int], gamma: float
) -> float:
    """The multiplier of the base learning rate after ``step`` scheduler steps.

    A linear ramp from ``warmup_factor`` to 1 over the first ``warmup`` steps, times
    ``gamma`` per milestone reached: iteration ``m + 1`` is the first with the decayed rate of
    milestone ``m``.
    """
    ramp = warmup_factor + (1.0 - warmup_factor) * step / warmup if step < warmup else 1.0
    return ramp * gamma ** sum(step >= milestone for milestone in milestones)


@dataclass
class Run(TrainingObjects):
    """Everything a training step needs, built once."""

    process: Process
    amp: bool
    clip_grad_norm: float = 0.0


def build_run(cfg: MaskRcnnConfig, model: nn.Module, process: Process) -> Run:
    """Move the model to its device, wrap it for DDP, build SGD and the schedule."""
    model = wrap_model(model.to(process.device), process)
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.SGD(
        parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )

    def factor(step: int) -> float:
        return warmup_step_factor(
            step,
            warmup=cfg.warmup_iterations,
            warmup_factor=cfg.warmup_factor,
            milestones=cfg.lr_steps,
            gamma=cfg.lr_gamma,
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    amp = process.device.type == "cuda" and cfg.amp
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return Run(model, optimizer, scheduler, scaler, process, amp, cfg.clip_grad_norm)


def train_step(run: Run, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
    """One optimisation step; returns the loss terms (``TERMS`` order) as a device tensor."""
    device = run.process.device
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    with torch.autocast(device.type, dtype=torch.float16, enabled=run.amp):
        losses = run.model(images, targets)
    total = sum(losses.values())
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    if run.clip_grad_norm > 0:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
        parameters = [p for group in run.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, run.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    terms = [total] + [losses[name] for name in TERMS[1:]]
    return torch.stack([term.detach().float() for term in terms])


def train_maskrcnn(
    cfg: MaskRcnnConfig,
    model: nn.Module,
    dataset: Dataset,
    output: Path,
    process: Process,
    *,
    seed: int,
    key: str,
) -> nn.Module:
    """Train for ``cfg.iterations``, resuming from ``output/checkpoints/last.pt``.

    Args:
        cfg: the ``maskrcnn`` config section.
        model: the freshly built Mask R-CNN in training mode (a checkpoint replaces its
            weights).
        dataset: items ``(image, target)`` addressed as ``(index, epoch)``
            (:class:`bestie.data.maskrcnn_dataset.MaskRcnnDataset`).
        output: the stage folder (``train_log.csv`` and ``checkpoints/last.pt`` go here).
        process: this process (rank, world size, device).
        seed: seeds the data order.
        key: identifies the configuration and inputs; a checkpoint of another key is ignored.

    Returns:
        the trained model (unwrapped from DDP).

    Raises:
        ValueError: the batch does not split over the processes, or the data set is smaller
            than one batch.
        FloatingPointError: a loss term became NaN or infinite.
    """
    run = build_run(cfg, model, process)

    def on_log(window: Window) -> dict[str, float]:
        hint = " (lower maskrcnn.lr or lengthen maskrcnn.warmup_iterations)"
        window.check_finite(TERMS, "Mask R-CNN loss", hint)
        return dict(zip(TERMS, window.values, strict=True))

    train_iterations(
        run,
        dataset,
        output,
        process,
        cfg,
        section="maskrcnn",
        seed=seed,
        key=key,
        columns=COLUMNS,
        description="mask r-cnn",
        step=lambda batch, iteration: train_step(run, *batch),
        on_log=on_log,
        collate_fn=collate,
    )
    return run.model.module if process.distributed else run.model
