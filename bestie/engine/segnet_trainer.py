"""Retraining a segmentation net on the raw CAM masks (the ``cam`` WSSS method's second step).

The usual WSSS self-training step (DeepLab retrained on pseudo masks; the official BESTIE
consumes such maps, SPEC §0, §9): the raw CAM masks of the train split are the targets of a
pixel-wise cross-entropy (255 ignored, the loss averaged over the non-ignored pixels), with
the DeepLab augmentation: random rescale by a factor drawn uniformly from
[``scale_min``, ``scale_max``] (image bilinear, mask nearest), a random ``crop``×``crop``
window (image padded with the mean colour, mask with 255), a horizontal flip with p = 0.5.
Pixels within ``ignore_border`` of a CAM-mask boundary are ignored
(``bestie.wsss_cam.mark_boundaries``). SGD (momentum, weight decay) or Adam, the backbone at
``lr`` and the rest at ``lr × head_lr_mult``, poly decay; AMP on CUDA.

The loop is iteration-based and resumes exactly, as the instance trainer does: the sampler
yields (index, epoch) keys (``ResumableSampler``), item ``index`` of epoch ``e`` draws its
augmentation from ``default_rng((seed, e, index))``, the DataLoader has its own generator,
and ``checkpoints/last.pt`` holds model, optimiser, scheduler, scaler, RNG states and the log
rows every ``checkpoint_every`` iterations (``bestie.engine.loop``). Under ``torchrun`` the
batch is split over the processes (DDP, SyncBatchNorm on CUDA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from bestie.data.io import read_image
from bestie.data.transforms import IMAGE_PAD_VALUE, crop_with_fill, normalize_image
from bestie.engine.checkpoint import TrainingObjects
from bestie.engine.distributed import Process, wrap_model
from bestie.engine.loop import Window, train_iterations
from bestie.engine.schedule import warmup_poly_scheduler
from bestie.sections import WsssConfig
from bestie.structures import IGNORE_LABEL, ImageRecord
from bestie.wsss_cam import mark_boundaries

__all__ = [
    "COLUMNS",
    "SegnetAugmentation",
    "SegnetDataset",
    "build_optimizer",
    "segmentation_loss",
    "train_segnet",
]

TERMS = ("loss", "pixel_accuracy", "ignored_fraction")
COLUMNS = ("iteration", "epoch", "lr", *TERMS, "seconds_per_iteration")


@dataclass(frozen=True)
class SegnetAugmentation:
    """Random rescale, crop (padding: mean colour / 255) and horizontal flip.

    Args:
        crop: side of the square output.
        scale_min, scale_max: the rescale factor is uniform in [scale_min, scale_max].
    """

    crop: int
    scale_min: float
    scale_max: float

    def __post_init__(self) -> None:
        if self.crop <= 0:
            raise ValueError(f"wsss.crop must be positive, got {self.crop}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(
                f"need 0 < wsss.scale_min <= wsss.scale_max, got {self.scale_min}, {self.scale_max}"
            )

    def __call__(
        self, image: np.ndarray, semantic: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Args: uint8 RGB [H, W, 3], uint8 [H, W]. Returns: float32 [3, S, S], uint8 [S, S]."""
        scale = float(rng.uniform(self.scale_min, self.scale_max))
        height, width = semantic.shape
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        semantic = cv2.resize(semantic, size, interpolation=cv2.INTER_NEAREST)
        # One uniform draw over the window corners: a negative corner pads above/left.
        top, left = (
            int(rng.integers(min(side - self.crop, 0), max(side - self.crop, 0) + 1))
            for side in (size[1], size[0])
        )
        image = crop_with_fill(image, top, left, self.crop, IMAGE_PAD_VALUE)
        semantic = crop_with_fill(semantic, top, left, self.crop, IGNORE_LABEL)
        if rng.random() < 0.5:
            image, semantic = image[:, ::-1], semantic[:, ::-1]
        return normalize_image(np.ascontiguousarray(image)), np.ascontiguousarray(semantic)


class SegnetDataset(Dataset):
    """Train images with their raw CAM masks, augmented.

    Args:
        records: the train split's records.
        map_loader: record -> uint8 [H, W] CAM mask (0 background, c + 1, 255 ignore).
        augmentation: the training augmentation.
        seed: base seed of the per-item generators.
        ignore_border: pixels within this distance of a mask boundary become 255.
        image_loader: path -> uint8 RGB [H, W, 3].

    Items, addressed by ``(index, epoch)`` (or an index, epoch 0): ``{"image": float32
    [3, S, S], "target": int64 [S, S]}``.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        map_loader: Callable[[ImageRecord], np.ndarray],
        augmentation: SegnetAugmentation,
        *,
        seed: int = 0,
        ignore_border: int = 0,
        image_loader: Callable[[str], np.ndarray] = read_image,
    ) -> None:
        if ignore_border < 0:
            raise ValueError(f"wsss.ignore_border must be >= 0, got {ignore_border}")
        self.records = list(records)
        self.map_loader = map_loader
        self.augmentation = augmentation
        self.seed = seed
        self.ignore_border = ignore_border
        self.image_loader = image_loader

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = (key, 0) if isinstance(key, int | np.integer) else key
        record = self.records[int(index)]
        size = (record.height, record.width)
        image = self.image_loader(record.file)
        if image.shape[:2] != size:
            raise ValueError(
                f"image {record.name} (id {record.id}): file {record.file} is "
                f"{image.shape[:2]}, the records say {size}"
            )
        semantic = np.asarray(self.map_loader(record))
        if semantic.shape != size or semantic.dtype != np.uint8:
            raise ValueError(
                f"image {record.name} (id {record.id}): CAM mask is {semantic.dtype} "
                f"{semantic.shape}, expected uint8 {size}"
            )
        semantic = mark_boundaries(semantic, self.ignore_border)
        rng = np.random.default_rng((self.seed, int(epoch), int(index)))
        image, semantic = self.augmentation(image, semantic, rng)
        return {
            "image": torch.from_numpy(image),
            "target": torch.from_numpy(semantic.astype(np.int64)),
        }


def build_optimizer(model: nn.Module, cfg: WsssConfig) -> torch.optim.Optimizer:
    """SGD or Adam: ``model.backbone`` at ``lr``, everything else at ``lr × head_lr_mult``.

    Each parameter group carries ``lr_mult`` (and ``name``) for the log and the tests.
    """
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups = [
        {"name": "backbone", "lr_mult": 1.0, "params": []},
        {"name": "head", "lr_mult": cfg.head_lr_mult, "params": []},
    ]
    for parameter in model.parameters():
        groups[0 if id(parameter) in backbone_ids else 1]["params"].append(parameter)
    groups = [group for group in groups if group["params"]]
    for group in groups:
        group["lr"] = cfg.lr * group["lr_mult"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the non-ignored pixels, with pixel accuracy and ignored fraction.

    Args:
        logits: float [B, C+1, S, S].
        target: int64 [B, S, S], 255 ignored.

    Returns:
        float [3] on the logits' device: (loss, accuracy, ignored fraction); the loss is 0
        with a zero gradient when every pixel is ignored. No host-device synchronisation.
    """
    valid = target != IGNORE_LABEL
    count = valid.sum().clamp_min(1)
    loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_LABEL, reduction="sum")
    loss = loss / count
    with torch.no_grad():
        correct = ((logits.argmax(dim=1) == target) & valid).sum() / count
        ignored = 1.0 - valid.float().mean()
    return torch.stack([loss, correct.float(), ignored])


@dataclass
class _Run(TrainingObjects):
    process: Process
    amp: bool


def _build_run(model: nn.Module, cfg: WsssConfig, process: Process) -> _Run:
    model = model.to(process.device)
    cuda = process.device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, process)
    optimizer = build_optimizer(model, cfg)
    scheduler = warmup_poly_scheduler(
        optimizer, cfg.iterations, warmup=0, warmup_factor=1.0, power=cfg.poly_power
    )
    amp = cuda and cfg.amp
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return _Run(model, optimizer, scheduler, scaler, process, amp)


def _step(run: _Run, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimisation step; returns (loss, accuracy, ignored) as a device tensor."""
    device = run.process.device
    image = batch["image"].to(device, non_blocking=True)
    target = batch["target"].to(device, non_blocking=True)
    if device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=run.amp):
        logits = run.model(image)
    terms = segmentation_loss(logits, target)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms[0]).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return terms.detach()


def train_segnet(
    model: nn.Module,
    dataset: SegnetDataset,
    cfg: WsssConfig,
    output: Path,
    process: Process,
    *,
    seed: int,
    key: str,
) -> nn.Module:
    """Train for ``cfg.iterations``, resuming from ``output/checkpoints/last.pt``.

    Args:
        model: the freshly built net (a checkpoint's weights replace its init).
        dataset: the augmented CAM-mask items.
        cfg: the ``wsss`` section (batch_size, iterations, lr, optimizer, ...).
        output: stage folder: ``train_log.csv`` and ``checkpoints/last.pt`` go here.
        process: this process (rank, world size, device); under torchrun the batch is split
            over the processes (DDP).
        seed: seeds the sample order and the augmentation.
        key: identifies the configuration and inputs; a checkpoint of another key is ignored.

    Returns:
        the trained model (unwrapped from DDP), in eval mode.
    """
    for name in ("iterations", "batch_size", "checkpoint_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"wsss.{name} must be >= 1, got {getattr(cfg, name)}")
    run = _build_run(model, cfg, process)

    def on_log(window: Window) -> dict[str, float]:
        window.check_finite(TERMS[:1], "segnet loss")
        return dict(zip(TERMS, window.values, strict=True))

    train_iterations(
        run,
        dataset,
        output,
        process,
        cfg,
        section="wsss",
        seed=seed,
        key=key,
        columns=COLUMNS,
        description="train segnet",
        step=lambda batch, iteration: _step(run, batch),
        on_log=on_log,
    )
    trained = run.model.module if process.distributed else run.model
    return trained.eval()
