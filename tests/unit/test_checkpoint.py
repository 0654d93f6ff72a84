"""Checkpoints, model files, RNG state, the CSV log, and exact resume of classifier training."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random

import numpy as np
import pytest
import torch

from bestie.data.classification import ClassificationDataset, SeededSampler, TrainTransform
from bestie.engine.checkpoint import (
    inputs_key,
    load_checkpoint,
    load_model,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    save_model,
    set_rng_state,
)
from bestie.engine.classifier_trainer import train_classifier
from bestie.engine.distributed import Process
from bestie.engine.logger import CsvLog
from bestie.models.classifier import Classifier
from bestie.sections import ClassifierConfig
from tests.unit.tiny_split import CATEGORIES, make_split


def _draw() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(1).item()


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    save_checkpoint(tmp_path / "c.pt", {}, progress=0)
    expected = _draw()
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draw() == expected
    set_rng_state(rng_state())  # a state restores itself


def test_resume_restores_model_optimizer_scheduler_and_extra(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.5)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    save_checkpoint(tmp_path / "last.pt", objects, progress=4, key="k", extra={"log": [{"a": 1}]})

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    fresh_scheduler = torch.optim.lr_scheduler.MultiStepLR(fresh_optimizer, [1], 0.5)
    fresh_objects = {"model": fresh, "optimizer": fresh_optimizer, "scheduler": fresh_scheduler}
    state = resume_checkpoint(tmp_path / "last.pt", fresh_objects, key="k")
    assert state.progress == 4 and state.extra == {"log": [{"a": 1}]}
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert torch.equal(
        fresh_optimizer.state_dict()["state"][0]["momentum_buffer"],
        optimizer.state_dict()["state"][0]["momentum_buffer"],
    )
    assert resume_checkpoint(tmp_path / "last.pt", fresh_objects, key="other") is None
    assert resume_checkpoint(tmp_path / "absent.pt", fresh_objects, key="k") is None
    with pytest.raises(ValueError, match="no state"):
        resume_checkpoint(tmp_path / "last.pt", {**fresh_objects, "scaler": fresh}, key="k")


def test_model_file_round_trip_and_wrong_format(tmp_path) -> None:
    model = torch.nn.Conv2d(2, 3, 1)
    save_model(tmp_path / "m.pt", model, {"width": 0.5, "classes": ["a"]})
    state, metadata = load_model(tmp_path / "m.pt")
    assert torch.equal(state["weight"], model.weight) and metadata["classes"] == ["a"]
    torch.save({"weight": model.weight}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a model file"):
        load_model(tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not found"):
        load_model(tmp_path / "absent.pt")


def test_csv_log_restore_and_append(tmp_path) -> None:
    log = CsvLog(tmp_path / "log.csv", ["epoch", "loss"])
    log.restore([{"epoch": 1, "loss": 0.5}])
    log.append({"loss": 0.25, "epoch": 2})
    assert (tmp_path / "log.csv").read_text() == "epoch,loss\n1,0.5\n2,0.25\n"
    with pytest.raises(ValueError, match="columns"):
        log.append({"epoch": 3})


def test_seeded_sampler_depends_on_seed_and_epoch_only() -> None:
    sampler = SeededSampler(6, seed=5)
    sampler.set_epoch(2)
    first = list(sampler)
    assert sorted(index for index, _ in first) == list(range(6))
    assert list(sampler) == first
    sampler.set_epoch(3)
    assert list(sampler) != first


def _train(
    tmp_path, records, work: str, epochs: int, inputs: str = "", init_seed: int = 0
) -> tuple[Classifier, list]:
    cfg = ClassifierConfig(
        width=0.0625,
        resize=36,
        crop=32,
        batch_size=3,
        epochs=epochs,
        lr=0.01,
        lr_steps=[2],
        checkpoint_every=1,
        workers=0,
    )
    torch.manual_seed(init_seed)
    model = Classifier(len(CATEGORIES), width=cfg.width)
    dataset = ClassificationDataset(
        records, len(CATEGORIES), TrainTransform(36, 32, cfg.color_jitter)
    )
    rows = train_classifier(
        model,
        dataset,
        cfg,
        seed=1,
        process=Process(0, 1, torch.device("cpu")),
        work_dir=tmp_path / work,
        log_path=tmp_path / work / "log.csv",
        inputs=inputs,
    )
    return model, rows


def test_resumed_training_equals_an_uninterrupted_run(tmp_path) -> None:
    _, records = make_split(tmp_path, [(32, 40)] * 7)
    straight, straight_rows = _train(tmp_path, records, "straight", 3)
    _train(tmp_path, records, "resumed", 2)  # the "interrupted" run: checkpoint after epoch 2
    torch.manual_seed(123)  # a different global RNG state must not matter
    resumed, resumed_rows = _train(tmp_path, records, "resumed", 3)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in straight_rows]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed_rows]
    assert [row["epoch"] for row in resumed_rows] == [1, 2, 3]
    assert [row["lr"] for row in resumed_rows] == pytest.approx([0.01, 0.001, 0.001])
    text = (tmp_path / "resumed" / "log.csv").read_text().splitlines()
    assert len(text) == 4


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path) -> None:
    _, records = make_split(tmp_path, [(32, 40)] * 3)
    _train(tmp_path, records, "run", 1)
    cfg = dataclasses.replace(ClassifierConfig(width=0.0625, resize=36, crop=32), lr=0.5)
    model = Classifier(len(CATEGORIES), width=0.0625)
    dataset = ClassificationDataset(
        records, len(CATEGORIES), TrainTransform(36, 32, cfg.color_jitter)
    )
    rows = train_classifier(
        model,
        dataset,
        dataclasses.replace(cfg, epochs=1, batch_size=3),
        seed=1,
        process=Process(0, 1, torch.device("cpu")),
        work_dir=tmp_path / "run",
        log_path=tmp_path / "run" / "l.csv",
    )
    assert rows[0]["lr"] == pytest.approx(0.5)  # trained afresh with the new rate


def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path) -> None:
    # Same config, other initial weights (as when the CAM classifier that the PAM classifier
    # fine-tunes was retrained): with the inputs unchanged the finished run is resumed and
    # its weights come back; with other inputs it trains afresh from the new weights.
    _, records = make_split(tmp_path, [(32, 40)] * 3)
    first, _ = _train(tmp_path, records, "run", 1, inputs="cam v1")
    same, _ = _train(tmp_path, records, "run", 1, inputs="cam v1", init_seed=7)
    other, _ = _train(tmp_path, records, "run", 1, inputs="cam v2", init_seed=7)
    fresh, _ = _train(tmp_path, records, "fresh", 1, inputs="cam v2", init_seed=7)
    for name, value in first.state_dict().items():
        assert torch.equal(value, same.state_dict()[name]), name
        assert torch.equal(other.state_dict()[name], fresh.state_dict()[name]), name
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in first.state_dict().items())


def test_inputs_key_names_content_and_file_sizes(tmp_path) -> None:
    data, image = tmp_path / "train.json", tmp_path / "a.png"
    data.write_bytes(b"ab")
    image.write_bytes(b"xyz")
    key = inputs_key("{}", [data], [image])
    assert key == hashlib.sha1(f"{{}}\0ab\0{image}:3".encode()).hexdigest()
    data.write_bytes(b"ac")
    assert inputs_key("{}", [data], [image]) != key
    data.write_bytes(b"ab")
    image.write_bytes(b"xyzw")
    assert inputs_key("{}", [data], [image]) != key
    image.write_bytes(b"abc")  # same size: only the path and size are read
    os.utime(image, ns=(5, 2_000))  # nor the modification time
    assert inputs_key("{}", [data], [image]) == key
