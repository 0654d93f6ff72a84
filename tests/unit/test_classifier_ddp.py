"""Data-parallel classifier training: the per-process share of an epoch and a torchrun run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bestie.artifacts import read_json
from bestie.data.classification import ClassificationDataset, SeededSampler, TrainTransform
from bestie.engine.checkpoint import load_model
from bestie.engine.classifier_trainer import RankSampler, rank_share, train_classifier
from bestie.engine.distributed import Process
from bestie.models.classifier import Classifier
from bestie.sections import ClassifierConfig
from bestie.stages import train_classifier as stage
from tests.unit.tiny_split import CATEGORIES, make_split

ROOT = Path(__file__).resolve().parents[2]


def test_rank_share_by_hand() -> None:
    assert rank_share(10, 0, 2) == [0, 2, 4, 6, 8]
    assert rank_share(10, 1, 2) == [1, 3, 5, 7, 9]
    # 7 items over 2 processes: the 7th is dropped, both get 3
    assert rank_share(7, 0, 2) == [0, 2, 4]
    assert rank_share(7, 1, 2) == [1, 3, 5]
    # 10 over 3: the 10th is dropped
    assert [rank_share(10, rank, 3) for rank in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert rank_share(5, 0, 1) == [0, 1, 2, 3, 4]  # one process: everything, in order
    with pytest.raises(ValueError, match="rank 2"):
        rank_share(10, 2, 2)


def test_rank_samplers_split_each_global_batch() -> None:
    """Per-process batches of 2 from 2 processes make up the single-process batches of 4."""
    size, world, per_rank = 10, 2, 2
    full = SeededSampler(size, seed=4)
    full.set_epoch(3)
    order = list(full)
    shares = []
    for rank in range(world):
        sampler = RankSampler(SeededSampler(size, seed=4), rank, world)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(sampler) == 5 == len(shares[-1])
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(order)  # 10 % 2 == 0: nothing dropped
    for step in range(3):  # batches [0:4], [4:8], [8:10] of the epoch's order
        together = shares[0][step * per_rank : (step + 1) * per_rank]
        together += shares[1][step * per_rank : (step + 1) * per_rank]
        assert sorted(together) == sorted(order[step * 4 : (step + 1) * 4])
    sampler = RankSampler(SeededSampler(size, seed=4), 0, 1)
    sampler.set_epoch(3)
    assert list(sampler) == order


def test_batch_size_must_split_over_the_processes(tmp_path) -> None:
    _, records = make_split(tmp_path, [(32, 40)] * 4)
    cfg = ClassifierConfig(width=0.0625, resize=36, crop=32, batch_size=3, epochs=1, workers=0)
    dataset = ClassificationDataset(records, len(CATEGORIES), TrainTransform(36, 32, [0] * 4))
    model = Classifier(len(CATEGORIES), width=cfg.width)
    with pytest.raises(ValueError, match="classifier.batch_size 3"):
        train_classifier(
            model,
            dataset,
            cfg,
            seed=0,
            process=Process(0, 2, torch.device("cpu")),
            work_dir=tmp_path / "run",
            log_path=tmp_path / "run" / "log.csv",
        )
    assert not (tmp_path / "run").exists()


CONFIG = {
    "classifier": {
        "width": 0.0625,
        "resize": 36,
        "crop": 32,
        "batch_size": 4,
        "epochs": 2,
        "lr": 0.01,
        "lr_steps": [2],
        "workers": 0,
        "pam_layers": [],
    },
    "seed": 3,
}


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_match_one_process(tmp_path) -> None:
    """2 gloo processes with batches of 2 each equal 1 process with batches of 4.

    8 images: nothing is dropped, each step's images are the same, the DDP gradient (mean of
    the two per-process means of equal batches) is the single-process gradient, and the
    model has no BatchNorm, so the weights agree up to float rounding.
    """
    records, _ = make_split(tmp_path, [(32, 40)] * 8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "bestie",
        "train-classifier",
        "--config",
        json.dumps(CONFIG),
        "--records",
        str(records),
        "--output-dir",
        str(tmp_path / "ddp"),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ddp = tmp_path / "ddp"
    assert (ddp / "model.pt").is_file() and (ddp / "checkpoints" / "last.pt").is_file()
    assert read_json(ddp / "metrics.json")["images"] == 8
    log = (ddp / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,loss") and len(log) == 3  # header + one row per epoch

    torch.set_num_threads(1)
    args = argparse.Namespace(
        config=json.dumps(CONFIG),
        records=str(records),
        output_dir=str(tmp_path / "single"),
        device="cpu",
        threads=0,
        init="",
    )
    stage.run(args)
    single_state, _ = load_model(tmp_path / "single" / "model.pt")
    ddp_state, _ = load_model(ddp / "model.pt")
    for name, value in single_state.items():
        assert torch.allclose(value, ddp_state[name], rtol=1e-4, atol=1e-6), name
    # the logged loss is all-reduced: that of all 8 images, as in the single-process run
    losses = [
        np.loadtxt(tmp_path / run / "train_log.csv", delimiter=",", skiprows=1, usecols=2)
        for run in ("single", "ddp")
    ]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
