"""Checkpoints that resume exactly, and final model files; shared by every training stage.

A *checkpoint* (``checkpoints/last.pt``) holds everything needed to continue a run as if it
had never stopped: the state dicts of the model, optimiser, scheduler and AMP scaler (any
objects with ``state_dict``/``load_state_dict``), the progress counter (epochs or
iterations done), the RNG states of Python, NumPy, torch and CUDA, a *key* naming the
configuration it belongs to, and free-form ``extra`` data (e.g. the log rows so far).
A *model file* (``model.pt``) holds only a state dict and plain metadata.

Everything is stored as tensors and plain Python types, so every load uses
``torch.load(weights_only=True)``: a checkpoint cannot execute code. Writes are atomic
(temporary file + rename), so a job killed while saving leaves the previous checkpoint.

Typical use in a training loop::

    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    state = resume_checkpoint(path, objects, key=config_json)   # None: start afresh
    start = state.progress if state else 0
    for epoch in range(start + 1, epochs + 1):
        ...
        save_checkpoint(path, objects, progress=epoch, key=config_json, extra={"rows": rows})

Why the key: Snakemake reruns a stage when its config changes, and the old
``checkpoints/last.pt`` is not one of the rule's outputs, so it survives; resuming from it
would silently continue a run with the old settings. A checkpoint whose key differs from
the current one is therefore ignored (and later overwritten). The same holds for the run's
inputs: a stage whose config is unchanged is rerun because an upstream artifact changed, so
every key also names its inputs (:func:`inputs_key`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from bestie.artifacts import atomic_path

__all__ = [
    "Checkpoint",
    "TrainingObjects",
    "inputs_key",
    "load_checkpoint",
    "load_model",
    "resume_checkpoint",
    "rng_state",
    "save_checkpoint",
    "save_model",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "bestie.checkpoint/1"
MODEL_FORMAT = "bestie.model/1"
_LOG = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@dataclass
class Checkpoint:
    """What :func:`resume_checkpoint` restored: the progress counter and the extra data."""

    progress: int
    extra: dict[str, Any] = field(default_factory=dict)


def _unwrap(obj: Any) -> Any:
    """The module inside a DistributedDataParallel/DataParallel wrapper (else ``obj``)."""
    if isinstance(obj, nn.Module) and isinstance(getattr(obj, "module", None), nn.Module):
        return obj.module
    return obj


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """The Python, NumPy (legacy global), torch CPU and CUDA RNG states, as tensors/plain types."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state` (CUDA only if it was saved and is up).

    The tensors may have been loaded onto any device (``map_location``); they are moved back.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].cpu().tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].cpu().numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda"]])


@dataclass
class TrainingObjects:
    """The stateful objects of a training run, saved and restored together."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def objects(self) -> dict[str, Any]:
        """Name -> object, as :func:`save_checkpoint` and :func:`resume_checkpoint` take it."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | os.PathLike[str],
    objects: Mapping[str, Stateful],
    *,
    progress: int,
    key: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Atomically write a resumable checkpoint.

    Args:
        path: the checkpoint file (conventionally ``.../checkpoints/last.pt``).
        objects: name -> object with ``state_dict()`` (model, optimizer, scheduler, scaler).
            DDP/DataParallel wrappers are unwrapped, so the keys carry no ``module.`` prefix.
        progress: epochs or iterations completed.
        key: identifies the configuration of the run (e.g. the stage's config JSON).
        extra: further plain data (tensors, numbers, strings, lists, dicts) to restore.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "progress": int(progress),
        "key": str(key),
        "states": {name: _unwrap(obj).state_dict() for name, obj in objects.items()},
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        ValueError: the file is not such a checkpoint.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def resume_checkpoint(
    path: str | os.PathLike[str],
    objects: Mapping[str, Stateful],
    *,
    key: str = "",
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
) -> Checkpoint | None:
    """Restore ``objects`` (and the RNG states) from ``path`` if it is a checkpoint of this run.

    Load on CPU (the default ``map_location``): ``load_state_dict`` moves model and
    optimiser states to the parameters' device, and RNG states must be CPU tensors.

    Returns:
        the progress and extra data, or None when there is no checkpoint or its key differs
        from ``key`` (a run with another configuration; it is then logged and ignored).

    Raises:
        ValueError: the checkpoint lacks the state of one of ``objects``.
    """
    if not Path(path).is_file():
        return None
    payload = load_checkpoint(path, map_location)
    if payload["key"] != str(key):
        _LOG.warning("%s belongs to another configuration; starting afresh", path)
        return None
    missing = sorted(set(objects) - set(payload["states"]))
    if missing:
        raise ValueError(f"{path}: checkpoint has no state for {missing}")
    for name, obj in objects.items():
        _unwrap(obj).load_state_dict(payload["states"][name])
    if restore_rng:
        set_rng_state(payload["rng"])
    _LOG.info("resumed from %s at progress %d", path, payload["progress"])
    return Checkpoint(progress=int(payload["progress"]), extra=dict(payload["extra"]))


def inputs_key(
    config_json: str,
    files: Iterable[str | os.PathLike[str]],
    stat_only: Iterable[str | os.PathLike[str]] = (),
) -> str:
    """A checkpoint key: the stage config, the content of ``files`` and the path and size of
    ``stat_only`` (inputs too large to read on every start, such as a training set's images;
    not their modification time, so that identical inputs give an identical key)."""
    digest = hashlib.sha1(config_json.encode())
    for path in files:
        digest.update(b"\0" + Path(path).read_bytes())
    for path in stat_only:
        digest.update(f"\0{os.fspath(path)}:{os.path.getsize(path)}".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- model files
def save_model(path: str | os.PathLike[str], model: nn.Module, metadata: Mapping[str, Any]) -> None:
    """Atomically write ``{"format", "model": state dict (CPU), "metadata"}``.

    ``metadata`` must hold plain types only (it is read back with ``weights_only=True``);
    it should describe the architecture well enough to rebuild the model.
    """
    state = {name: value.detach().cpu() for name, value in _unwrap(model).state_dict().items()}
    with atomic_path(path) as temporary:
        torch.save({"format": MODEL_FORMAT, "model": state, "metadata": dict(metadata)}, temporary)


def load_model(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file written by :func:`save_model`: ``(state dict, metadata)``.

    Raises:
        ValueError: the file is missing or not a model file.
    """
    if not Path(path).is_file():
        raise ValueError(f"model file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: not a model file (expected format {MODEL_FORMAT!r})")
    return payload["model"], payload["metadata"]
