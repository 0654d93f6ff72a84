"""Helpers shared by the trainer tests: two-process DDP runs and datasets that crash."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch

from bestie.engine.distributed import Process, init_process


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def join_cpu_group(rank: int, port: int) -> Process:
    """In a worker of :func:`run_two_processes`: join the 2-process gloo group as ``rank``."""
    os.environ.update(
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    return init_process("cpu")


def run_two_processes(worker: Callable, args: tuple, output: Path, timeout: float) -> None:
    """``worker(rank, port, *args, str(output))`` in two spawned processes; both must exit 0."""
    context = mp.get_context("spawn")
    port = free_port()
    processes = [
        context.Process(target=worker, args=(rank, port, *args, str(output))) for rank in (0, 1)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout)
        assert process.exitcode == 0


def assert_replicas_equal(output: Path) -> None:
    """``output/rank{0,1}.pt`` hold equal parameters (BN running statistics stay per
    process on CPU, where SyncBatchNorm does not run), and a checkpoint was written."""
    states = [torch.load(output / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name, value in states[0].items():
        if "running_" not in name and value.dtype.is_floating_point:
            assert torch.allclose(value, states[1][name]), name
    assert (output / "checkpoints/last.pt").is_file()


def crashing(dataset_class: type, fail_at: int | None) -> type:
    """A subclass of ``dataset_class`` whose ``fail_at``-th item raises (a simulated kill)."""

    class Crashing(dataset_class):
        calls = 0

        def __getitem__(self, key):
            Crashing.calls += 1
            if fail_at is not None and Crashing.calls == fail_at:
                raise RuntimeError("simulated kill")
            return super().__getitem__(key)

    return Crashing
