"""Instance training: schedule values, exact resume after a crash, and 2-process DDP (gloo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bestie.config import Config, from_dict
from bestie.data.instance_dataset import InstanceDataset
from bestie.data.synthetic import generate_split
from bestie.data.transforms import TrainAugmentation
from bestie.engine.distributed import Process, cleanup
from bestie.engine.instance_trainer import train_instance
from bestie.engine.schedule import ResumableSampler, warmup_poly_factor
from bestie.models.instance_net import build_instance_net
from bestie.sections import SyntheticConfig
from bestie.wsss import semantic_from_instances
from tests.unit.training_helpers import (
    assert_replicas_equal,
    crashing,
    join_cpu_group,
    run_two_processes,
)

CONFIG = {
    "seed": 3,
    "instance": {
        "backbone": "small",
        "crop": 48,
        "batch_size": 2,
        "iterations": 6,
        "warmup_iterations": 2,
        "lr": 1e-3,
        "checkpoint_every": 3,
        "log_every": 2,
        "workers": 0,
    },
    "refine": {"nms_kernel": 9},
}


def test_warmup_poly_matches_the_official_values() -> None:
    # SPEC §5.2: iteration 1 uses 5e-8 (k = 0), iteration 2001 uses 5e-5 * 0.96 ** 0.9
    factor = dict(total=50000, warmup=2000, warmup_factor=0.001, power=0.9)
    assert 5e-5 * warmup_poly_factor(0, **factor) == pytest.approx(5.0e-8)
    assert 5e-5 * warmup_poly_factor(2000, **factor) == pytest.approx(4.8196e-5, rel=1e-4)
    assert warmup_poly_factor(50000, **factor) == 0.0


def test_sampler_restarts_at_any_iteration_and_splits_ranks() -> None:
    full = list(ResumableSampler(5, 2, seed=1, total=7))  # 2 batches per epoch
    assert len(full) == 14 and [epoch for _, epoch in full] == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 2
    assert sorted(index for index, epoch in full if epoch == 0) != sorted(range(5))  # drop_last
    assert list(ResumableSampler(5, 2, seed=1, start=3, total=7)) == full[6:]
    ranks = [list(ResumableSampler(10, 2, seed=1, rank=r, world_size=2, total=2)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(full[:0] + ranks[0] + ranks[1])
    assert not {i for i, _ in ranks[0]} & {i for i, _ in ranks[1]}
    with pytest.raises(ValueError, match="fewer than one batch"):
        ResumableSampler(3, 2, seed=0, world_size=2)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("instance")
    config = SyntheticConfig(num_train=6, height=48, width=48, min_size=14, max_size=20)
    records, categories, gt = generate_split(config, "train", str(folder))
    from bestie.artifacts import annotations_by_image

    instances = annotations_by_image(gt["annotations"], records)
    maps = {r.id: semantic_from_instances(instances[r.id], (48, 48)) for r in records}
    return records, categories, instances, maps


def make_dataset(tiny_data, cfg: Config, fail_at: int | None = None) -> InstanceDataset:
    records, categories, instances, maps = tiny_data
    augmentation = TrainAugmentation(cfg.instance.crop, 0.9, 1.1)

    Crashing = crashing(InstanceDataset, fail_at)
    return Crashing(
        records, instances, lambda r: maps[r.id], len(categories), augmentation, seed=cfg.seed
    )


def train(tiny_data, output: Path, fail_at: int | None = None) -> dict[str, torch.Tensor]:
    cfg = from_dict(Config, CONFIG)
    torch.manual_seed(0)
    model = build_instance_net("small", 3)
    process = Process(0, 1, torch.device("cpu"))
    dataset = make_dataset(tiny_data, cfg, fail_at)
    trained = train_instance(cfg, model, dataset, output, process, key="k")
    return {k: v.clone() for k, v in trained.state_dict().items()}


def test_resumed_training_equals_uninterrupted(tiny_data, tmp_path: Path) -> None:
    reference = train(tiny_data, tmp_path / "a")
    # batches of 2: the 9th item load is iteration 5, after the checkpoint at iteration 3
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(tiny_data, tmp_path / "b", fail_at=9)
    assert (tmp_path / "b/checkpoints/last.pt").is_file()
    resumed = train(tiny_data, tmp_path / "b")
    for name, value in reference.items():
        assert torch.equal(value, resumed[name]), name
    log = (tmp_path / "b/train_log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,epoch,lr,total") and len(log) == 4  # header + 3 rows
    assert [row.split(",")[0] for row in log[1:]] == ["2", "4", "6"]


def _ddp_worker(rank: int, port: int, tiny_data, output: str) -> None:
    process = join_cpu_group(rank, port)
    try:
        cfg = from_dict(Config, CONFIG)
        torch.manual_seed(0)
        model = build_instance_net("small", 3)
        trained = train_instance(
            cfg, model, make_dataset(tiny_data, cfg), Path(output), process, key="ddp"
        )
        torch.save(trained.state_dict(), Path(output) / f"rank{rank}.pt")
    finally:
        cleanup(process)


def test_two_process_ddp_on_cpu_keeps_replicas_equal(tiny_data, tmp_path: Path) -> None:
    run_two_processes(_ddp_worker, (tiny_data,), tmp_path, timeout=300)
    assert_replicas_equal(tmp_path)
    assert np.isfinite(
        np.loadtxt(tmp_path / "train_log.csv", delimiter=",", skiprows=1, usecols=3)
    ).all()
