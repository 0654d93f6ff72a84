"""Distributed data parallel set-up for ``torchrun`` (NCCL on CUDA, gloo on CPU).

A training stage started by ``torchrun --nproc-per-node N python -m bestie <stage>`` finds
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment; started plainly, it is a single
process. Nothing here reads an argument namespace or patches ``print``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Process:
    """This process's place among the data-parallel training processes."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process(device: str = "auto") -> Process:
    """Join the process group started by torchrun (if any) and pick this process's device.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Process(rank, world_size, target)


def wrap_model(model: nn.Module, process: Process) -> nn.Module:
    """DistributedDataParallel across processes (with SyncBatchNorm on CUDA); else the model.

    PyTorch's SyncBatchNorm runs on GPU modules only, so a CPU (gloo) run keeps per-process
    batch statistics; that path exists for tests and debugging, not for training runs.
    """
    if not process.distributed:
        return model
    if process.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [process.device.index] if process.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier(process: Process) -> None:
    if process.distributed:
        dist.barrier()


def cleanup(process: Process) -> None:
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
