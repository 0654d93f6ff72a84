"""Training loop of the CAM/PAM classifier (SPEC §1.2).

Multi-label soft-margin loss; SGD with Nesterov momentum and four learning-rate groups
(×1/×2/×10/×20); the rate is multiplied by ``lr_gamma`` at the start of each epoch listed in
``lr_steps`` (1-based); AMP on CUDA only. The run resumes from ``checkpoints/last.pt`` when
it was interrupted, with final weights equal to an uninterrupted run on CPU.

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
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from bestie.data.classification import SeededSampler
from bestie.engine.checkpoint import resume_checkpoint, save_checkpoint
from bestie.engine.logger import CsvLog, progress
from bestie.models.classifier import Classifier, parameter_groups
from bestie.sections import ClassifierConfig

__all__ = [
    "LOG_COLUMNS",
    "evaluate_classifier",
    "make_optimizer",
    "make_scheduler",
    "multilabel_f1",
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
    predicted = np.asarray(scores) > threshold
    truth = np.asarray(labels) > 0.5
    true_pos = (predicted & truth).sum(axis=0).astype(np.float64)
    false_pos = (predicted & ~truth).sum(axis=0).astype(np.float64)
    false_neg = (~predicted & truth).sum(axis=0).astype(np.float64)
    denominator = 2 * true_pos + false_pos + false_neg
    per_class = np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 1.0)
    total = denominator.sum()
    micro = float(2 * true_pos.sum() / total) if total > 0 else 1.0
    return {
        "micro_f1": micro,
        "macro_f1": float(per_class.mean()) if per_class.size else 1.0,
        "per_class_f1": [float(value) for value in per_class],
    }


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


def resume_key(cfg: ClassifierConfig, seed: int, use_amp: bool) -> str:
    """The configuration a checkpoint must match to be resumed (see engine.checkpoint).

    Whether AMP is active is part of it: a CPU checkpoint has no GradScaler state to give
    a CUDA run, and the two would not produce the same weights anyway.
    """
    fields = {k: v for k, v in asdict(cfg).items() if k not in _RESUMABLE_ACROSS}
    return json.dumps({"classifier": fields, "seed": seed, "amp": use_amp}, sort_keys=True)


def _loader(dataset: Dataset, cfg: ClassifierConfig, sampler, device: torch.device):
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
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
    device: torch.device,
    work_dir: str | Path,
    log_path: str | Path,
) -> list[dict[str, Any]]:
    """Train (or resume training) ``model`` for ``cfg.epochs`` epochs.

    Args:
        model: a freshly built classifier (its weights are replaced on resume).
        dataset: yields ``(image [3, S, S], label [C], index)`` for ``(index, seed)`` keys.
        cfg: the classifier section.
        seed: the experiment seed (data order and augmentation).
        device: where to train.
        work_dir: holds ``checkpoints/last.pt``.
        log_path: the per-epoch CSV log (columns :data:`LOG_COLUMNS`).

    Returns:
        the log rows of every epoch (including those before a resume).
    """
    if len(dataset) == 0:
        raise ValueError("classifier: the training split has no images")
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    checkpoint_path = Path(work_dir) / "checkpoints" / "last.pt"
    key = resume_key(cfg, seed, use_amp)
    log = CsvLog(log_path, LOG_COLUMNS)
    state = resume_checkpoint(checkpoint_path, objects, key=key)
    start = state.progress if state else 0
    log.restore(state.extra["log"] if state else [])
    sampler = SeededSampler(len(dataset), seed)
    loader = _loader(dataset, cfg, sampler, device)
    for epoch in range(start + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        row = _train_one_epoch(model, loader, optimizer, scaler, device, use_amp, epoch, cfg)
        scheduler.step()
        log.append({"epoch": epoch, "lr": lr, **row})
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
            save_checkpoint(
                checkpoint_path, objects, progress=epoch, key=key, extra={"log": log.rows}
            )
    return log.rows


def _train_one_epoch(
    model: Classifier,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    use_amp: bool,
    epoch: int,
    cfg: ClassifierConfig,
) -> dict[str, float]:
    """One pass over the loader; returns loss, train F1 (on the augmented batches), seconds."""
    model.train()
    started = time.perf_counter()
    total_loss, count = 0.0, 0
    scores, labels_seen = [], []
    for images, labels, _ in progress(loader, description=f"epoch {epoch}/{cfg.epochs}"):
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
    f1 = multilabel_f1(np.concatenate(scores), np.concatenate(labels_seen))
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
