"""Training loop of the CAM/PAM classifier (SPEC §1.2).

Multi-label soft-margin loss; SGD with Nesterov momentum and four learning-rate groups
(×1/×2/×10/×20); the rate is multiplied by ``lr_gamma`` at the start of each epoch listed in
``lr_steps`` (1-based); AMP on CUDA only. The run resumes from ``checkpoints/last.pt`` when
it was interrupted, with final weights equal to an uninterrupted run on CPU.

Started by ``torchrun --nproc-per-node N``, it trains data-parallel (DDP): ``batch_size`` is
the total batch, each process takes ``batch_size / N`` of it (see :func:`rank_share`), and
only the main process writes the log and the checkpoint.

Reference: clovaai/BESTIE PAM/train.py and PAM/utils/my_optim.py,
https://github.com/clovaai/BESTIE/blob/e2f377d4da49fc57d06ace7ad2af896558008e82/PAM/train.py
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from bestie.data.classification import SeededSampler
from bestie.engine.checkpoint import resume_checkpoint, save_checkpoint
from bestie.engine.distributed import Process, barrier, wrap_model
from bestie.engine.logger import CsvLog, progress
from bestie.models.classifier import Classifier, parameter_groups
from bestie.sections import ClassifierConfig

__all__ = [
    "LOG_COLUMNS",
    "RankSampler",
    "evaluate_classifier",
    "make_optimizer",
    "make_scheduler",
    "multilabel_f1",
    "rank_share",
    "resume_key",
    "select_device",
    "train_classifier",
]

LOG_COLUMNS = ("epoch", "lr", "loss", "train_micro_f1", "train_macro_f1", "seconds")
# Keys that do not change the trained weights: a run may resume across changes of these.
_RESUMABLE_ACROSS = ("epochs", "checkpoint_every", "workers")
_LOG = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def multilabel_f1(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict:
    """Multi-label F1 of sigmoid scores against multi-hot labels.

    Args:
        scores: float [N, C] probabilities; a class is predicted when score > threshold.
        labels: {0, 1} [N, C].

    Returns:
        ``{"micro_f1", "macro_f1", "per_class_f1": [C]}``; a class with no positives and no
        predictions has F1 1.0 (nothing to find, nothing wrongly found).
    """
    return _f1_from_counts(_f1_counts(scores, labels, threshold))


def _f1_counts(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """float64 [3, C]: true positives, false positives, false negatives per class."""
    predicted = np.asarray(scores) > threshold
    truth = np.asarray(labels) > 0.5
    true_pos = (predicted & truth).sum(axis=0).astype(np.float64)
    false_pos = (predicted & ~truth).sum(axis=0).astype(np.float64)
    false_neg = (~predicted & truth).sum(axis=0).astype(np.float64)
    return np.stack([true_pos, false_pos, false_neg])


def _f1_from_counts(counts: np.ndarray) -> dict:
    """:func:`multilabel_f1`'s dict from :func:`_f1_counts` (possibly summed over processes)."""
    true_pos, false_pos, false_neg = counts
    denominator = 2 * true_pos + false_pos + false_neg
    per_class = np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 1.0)
    total = denominator.sum()
    micro = float(2 * true_pos.sum() / total) if total > 0 else 1.0
    return {
        "micro_f1": micro,
        "macro_f1": float(per_class.mean()) if per_class.size else 1.0,
        "per_class_f1": [float(value) for value in per_class],
    }


def rank_share(size: int, rank: int, world_size: int) -> list[int]:
    """Positions, in an epoch's order of ``size`` items, that process ``rank`` trains on.

    The order is cut to a multiple of ``world_size`` (the last ``size % world_size`` items
    are dropped) and dealt round-robin: ``range(rank, size - size % world_size, world_size)``.
    Every process gets ``size // world_size`` items, so all make the same number of steps,
    and with ``batch_size / world_size`` items per process and step, step k of the processes
    together covers exactly positions ``k * batch_size ... (k + 1) * batch_size - 1``: the
    batch a single process would draw (the last batch may be short, as it is then). With one
    process it is every position, in order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return list(range(rank, size - size % world_size, world_size))


class RankSampler(Sampler[tuple[int, int]]):
    """This process's :func:`rank_share` of a :class:`SeededSampler`'s epoch order."""

    def __init__(self, sampler: SeededSampler, rank: int, world_size: int) -> None:
        self.sampler = sampler
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.world_size

    def __iter__(self):
        order = list(self.sampler)
        return iter([order[i] for i in rank_share(len(order), self.rank, self.world_size)])


def make_optimizer(model: Classifier, cfg: ClassifierConfig) -> torch.optim.SGD:
    """SGD, Nesterov momentum, weight decay, the four lr groups of :func:`parameter_groups`."""
    return torch.optim.SGD(
        parameter_groups(model, cfg.lr, cfg.lr_multipliers),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ClassifierConfig):
    """Step decay: ×lr_gamma at the start of each 1-based epoch in ``lr_steps``.

    The scheduler is stepped once after every epoch, so after epoch e-1 it has stepped e-1
    times; a milestone of e-1 therefore applies from epoch e on.
    """
    if any(step < 2 for step in cfg.lr_steps):
        raise ValueError(f"classifier.lr_steps are 1-based epochs >= 2, got {cfg.lr_steps}")
    milestones = [step - 1 for step in cfg.lr_steps]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=cfg.lr_gamma)


def resume_key(cfg: ClassifierConfig, seed: int, use_amp: bool, inputs: str = "") -> str:
    """The configuration a checkpoint must match to be resumed (see engine.checkpoint).

    Whether AMP is active is part of it: a CPU checkpoint has no GradScaler state to give
    a CUDA run, and the two would not produce the same weights anyway. ``inputs`` names the
    training data and the initial weights (``engine.checkpoint.inputs_key``).
    """
    fields = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_ACROSS}
    key = {"classifier": fields, "seed": seed, "amp": use_amp, "inputs": inputs}
    return json.dumps(key, sort_keys=True)


def _loader(
    dataset: Dataset, batch_size: int, sampler: Sampler, cfg: ClassifierConfig, device: torch.device
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
    )


def train_classifier(
    model: Classifier,
    dataset: Dataset,
    cfg: ClassifierConfig,
    *,
    seed: int,
    process: Process,
    work_dir: str | Path,
    log_path: str | Path,
    inputs: str = "",
) -> list[dict[str, Any]]:
    """Train (or resume training) ``model`` for ``cfg.epochs`` epochs.

    Args:
        model: a freshly built classifier (its weights are replaced on resume); it is trained
            in place (under DDP on CUDA its BatchNorm layers become SyncBatchNorm, with the
            same state-dict keys).
        dataset: yields ``(image [3, S, S], label [C], index)`` for ``(index, seed)`` keys.
        cfg: the classifier section; ``batch_size`` is the total over the processes.
        seed: the experiment seed (data order and augmentation).
        process: this process (rank, world size, device); with several processes the model
            is wrapped in DDP and each takes its :func:`rank_share` of every epoch's order.
        work_dir: holds ``checkpoints/last.pt`` (written by the main process only).
        log_path: the per-epoch CSV log (columns :data:`LOG_COLUMNS`), written by the main
            process only. Its loss and train F1 are those of all processes together (the
            loss sums and F1 counts are all-reduced), not the main process's share alone.
        inputs: names the training data and initial weights in the checkpoint key, so that a
            checkpoint of other inputs is not resumed (``engine.checkpoint.inputs_key``).

    Returns:
        the log rows of every epoch (including those before a resume); the same on every
        process.
    """
    if len(dataset) == 0:
        raise ValueError("classifier: the training split has no images")
    if cfg.batch_size % process.world_size:
        raise ValueError(
            f"classifier.batch_size {cfg.batch_size} is not divisible by the "
            f"{process.world_size} training processes"
        )
    if len(dataset) < process.world_size:
        raise ValueError(
            f"classifier: {len(dataset)} training images for {process.world_size} processes"
        )
    device = process.device
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    checkpoint_path = Path(work_dir) / "checkpoints" / "last.pt"
    key = resume_key(cfg, seed, use_amp, inputs)
    state = resume_checkpoint(checkpoint_path, objects, key=key)
    start = state.progress if state else 0
    if state:
        _LOG.info("resuming at epoch %d of %d", start, cfg.epochs)
    rows: list[dict[str, Any]] = list(state.extra["log"]) if state else []
    log = CsvLog(log_path, LOG_COLUMNS) if process.is_main else None
    if log is not None:
        log.restore(rows)
        rows = log.rows
    # after the resume: DDP broadcasts rank 0's (restored) weights; SyncBatchNorm keeps the
    # parameter objects, so the optimiser built on the bare model still holds them
    wrapped = wrap_model(model, process)
    sampler = RankSampler(SeededSampler(len(dataset), seed), process.rank, process.world_size)
    per_rank = cfg.batch_size // process.world_size
    loader = _loader(dataset, per_rank, sampler, cfg, device)
    for epoch in range(start + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        row = _train_one_epoch(wrapped, loader, optimizer, scaler, process, use_amp, epoch, cfg)
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, **row}
        if log is not None:
            log.append(row)
        else:
            rows.append(row)
        _LOG.info(
            "epoch %d/%d lr %.3g loss %.4f train micro-F1 %.3f (%.0f s)",
            epoch,
            cfg.epochs,
            lr,
            row["loss"],
            row["train_micro_f1"],
            row["seconds"],
        )
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
            if process.is_main:
                save_checkpoint(
                    checkpoint_path, objects, progress=epoch, key=key, extra={"log": rows}
                )
            barrier(process)
    return rows


def _train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    process: Process,
    use_amp: bool,
    epoch: int,
    cfg: ClassifierConfig,
) -> dict[str, float]:
    """One pass over the loader; returns loss, train F1 (on the augmented batches), seconds.

    Loss and F1 are over the batches of all processes (sums and counts all-reduced).
    """
    model.train()
    device = process.device
    started = time.perf_counter()
    total_loss, count = 0.0, 0
    scores, labels_seen = [], []
    batches = loader
    if process.is_main:
        batches = progress(loader, description=f"epoch {epoch}/{cfg.epochs}")
    for images, labels, _ in batches:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits, _ = model(images)
        loss = F.multilabel_soft_margin_loss(logits.float(), labels)
        if not math.isfinite(loss.item()):
            raise ValueError(f"classifier: non-finite loss {loss.item()} in epoch {epoch}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * images.shape[0]
        count += images.shape[0]
        scores.append(torch.sigmoid(logits.detach().float()).cpu().numpy())
        labels_seen.append(labels.cpu().numpy())
    counts = _f1_counts(np.concatenate(scores), np.concatenate(labels_seen))
    if process.distributed:
        packed = np.concatenate([[total_loss, count], counts.ravel()])
        summed = torch.tensor(packed, dtype=torch.float64, device=device)
        dist.all_reduce(summed)
        packed = summed.cpu().numpy()
        total_loss, count = float(packed[0]), int(packed[1])
        counts = packed[2:].reshape(counts.shape)
    f1 = _f1_from_counts(counts)
    return {
        "loss": total_loss / count,
        "train_micro_f1": f1["micro_f1"],
        "train_macro_f1": f1["macro_f1"],
        "seconds": time.perf_counter() - started,
    }


@torch.no_grad()
def evaluate_classifier(
    model: Classifier, dataset: Dataset, *, device: torch.device, batch_size: int, workers: int = 0
) -> dict[str, Any]:
    """Multi-label F1 (threshold 0.5 on the sigmoid) of ``model`` on ``dataset`` (eval mode).

    Returns:
        :func:`multilabel_f1`'s dict plus ``"images"``.
    """
    model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    scores, labels_seen = [], []
    for images, labels, _ in progress(loader, description="evaluate"):
        logits, _ = model(images.to(device))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels_seen.append(labels.numpy())
    result = multilabel_f1(np.concatenate(scores), np.concatenate(labels_seen))
    return {"images": len(dataset), **result}
