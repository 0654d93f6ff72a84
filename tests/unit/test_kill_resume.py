"""Kill and resume: a SIGKILLed ``train-instance`` resumes to the weights of an unbroken run.

Also: the same inputs and seed give byte-identical pseudo labels and metrics on CPU.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from bestie import cli
from bestie.artifacts import (
    ImageCues,
    annotations_by_image,
    atomic_directory,
    write_cues,
    write_json,
    write_records,
)
from bestie.data.io import write_label_map
from bestie.data.synthetic import generate_split
from bestie.engine.checkpoint import load_checkpoint, load_model, save_model
from bestie.experiments import Experiments
from bestie.models.instance_net import build_instance_net
from bestie.sections import SyntheticConfig
from bestie.wsss import semantic_from_instances

ITERATIONS = 20
CONFIG = {
    "seed": 5,
    "supervision": "image",
    "instance": {
        "backbone": "small",
        "crop": 32,
        "scale_min": 0.9,
        "scale_max": 1.1,
        "batch_size": 2,
        "iterations": ITERATIONS,
        "warmup_iterations": 4,
        "lr": 1e-3,
        "checkpoint_every": 2,
        "log_every": 1,  # one log row per iteration: the test watches the progress in it
        "workers": 0,
    },
    "refine": {"nms_kernel": 9, "start_iter": 6},  # self-refinement runs after iteration 6
    "loss": {},
    "pseudo": {},
}
EPOCHS = 8
CLASSIFIER = {  # 3 steps per epoch, a checkpoint after each
    "seed": 5,
    "classifier": {"width": 0.125, "resize": 44, "crop": 40, "batch_size": 2, "epochs": EPOCHS,
                   "lr_steps": [6], "checkpoint_every": 1, "workers": 0},
}  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_inputs(tmp_path_factory.mktemp("kill resume"))  # a space: paths are quoted


def make_inputs(folder: Path) -> dict[str, str]:
    """Records, pseudo labels (the GT instances) and WSSS maps (the GT oracle) of 6 images."""
    config = SyntheticConfig(num_train=6, height=40, width=40, min_size=10, max_size=16)
    records, categories, gt = generate_split(config, "train", str(folder / "images"))
    write_records(folder / "train.json", records, categories, dataset="synthetic", split="train")
    instances = annotations_by_image(gt["annotations"], records)
    for record in records:
        semantic = semantic_from_instances(instances[record.id], (40, 40))
        write_label_map(folder / "wsss" / f"{record.name}.png", semantic)
    write_json(folder / "pseudo.json", {"annotations": gt["annotations"]})
    write_json(folder / "train_gt.json", gt)
    return {
        "config": json.dumps(CONFIG),
        "classifier_config": json.dumps(CLASSIFIER),
        "records": str(folder / "train.json"),
        "pseudo": str(folder / "pseudo.json"),
        "wsss": str(folder / "wsss"),
        "gt": str(folder / "train_gt.json"),
    }


def start_training(inputs: dict[str, str], output: Path, stage: str) -> subprocess.Popen:
    """``python -m bestie train-{stage}`` on one CPU thread, its log in ``output/run.log``."""
    output.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bestie", f"train-{stage}", "--device", "cpu"]
    if stage == "instance":
        for option in ("config", "records", "pseudo", "wsss"):
            command += [f"--{option}", inputs[option]]
        command += ["--out", str(output / "model.pt")]
    else:
        command += ["--config", inputs["classifier_config"], "--records", inputs["records"]]
        command += ["--output-dir", str(output), "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    with open(output / "run.log", "a", encoding="utf-8") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def logged_iterations(output: Path) -> int:
    """Rows of the training log (written atomically, so always complete)."""
    path = output / "train_log.csv"
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


def kill_after(process: subprocess.Popen, output: Path, iteration: int, fraction: float) -> None:
    """SIGKILL ``process`` ``fraction`` of one step's time after it logged ``iteration`` rows.

    The delay is measured in iterations, not seconds, so the kill lands inside the next
    iteration (or its checkpoint write) however fast or loaded the machine is.
    """
    deadline = time.monotonic() + 600
    first = None
    while logged_iterations(output) < iteration:
        if process.poll() is not None:
            log = (output / "run.log").read_text()
            raise AssertionError(f"training ended before iteration {iteration}:\n{log}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"iteration {iteration} not reached in 10 minutes")
        if first is None and logged_iterations(output) >= 1:
            first = time.monotonic()
        time.sleep(0.005)
    per_iteration = (time.monotonic() - first) / max(iteration - 1, 1) if first else 0.0
    time.sleep(fraction * per_iteration)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["instance", "classifier"])
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(inputs, tmp_path, stage) -> None:
    seed = random.randrange(2**32)
    chooser = random.Random(seed)
    steps = ITERATIONS if stage == "instance" else EPOCHS  # the rows of its training log
    iteration, fraction = chooser.randint(3, steps - 3), chooser.uniform(0.0, 1.0)
    where = f"(kill {fraction:.2f} log rows after row {iteration}; random seed {seed})"
    reference = start_training(inputs, tmp_path / "reference", stage)
    broken = start_training(inputs, tmp_path / "broken", stage)
    kill_after(broken, tmp_path / "broken", iteration, fraction)
    assert broken.returncode == -signal.SIGKILL, where
    saved = load_checkpoint(tmp_path / "broken/checkpoints/last.pt")
    assert 2 <= saved["progress"] < steps, where
    assert not (tmp_path / "broken/model.pt").exists(), where
    resumed = start_training(inputs, tmp_path / "broken", stage)
    assert resumed.wait() == 0, (tmp_path / "broken/run.log").read_text()
    assert reference.wait() == 0, (tmp_path / "reference/run.log").read_text()
    step = "iteration" if stage == "instance" else "epoch"
    assert f"resuming at {step} {saved['progress']}" in (tmp_path / "broken/run.log").read_text()
    expected, _ = load_model(tmp_path / "reference/model.pt")
    actual, _ = load_model(tmp_path / "broken/model.pt")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]} {where}"
    losses = [_losses(tmp_path / name / "train_log.csv") for name in ("reference", "broken")]
    assert losses[0] == losses[1], where


def test_train_instance_resumes_only_a_checkpoint_of_the_same_inputs(tmp_path) -> None:
    # A finished run is resumed at its last iteration while its inputs stay; after one WSSS
    # map changed (a rerun of make-wsss, the config unchanged) it trains afresh.
    inputs, output = make_inputs(tmp_path / "inputs"), tmp_path / "run"
    for _ in range(2):
        assert start_training(inputs, output, "instance").wait() == 0
    log = (output / "run.log").read_text()
    assert f"at progress {ITERATIONS}" in log and "starting afresh" not in log, log
    first = sorted(Path(inputs["wsss"]).glob("*.png"))[0]
    size = first.stat().st_size
    write_label_map(first, np.zeros((40, 40), np.uint8))  # an empty map
    assert first.stat().st_size != size
    assert start_training(inputs, output, "instance").wait() == 0
    log = (output / "run.log").read_text()
    assert log.count(f"at progress {ITERATIONS}") == 1 and "starting afresh" in log, log


def _losses(path: Path) -> list[list[str]]:
    """A training log without its timing columns."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    untimed = [index for index, name in enumerate(rows[0]) if "seconds" not in name]
    return [[row[index] for index in untimed] for row in rows]


# ----------------------------------------------------------------------------- determinism
PIPELINE_CONFIG = {
    "seed": 3,
    "dataset": {
        "name": "synthetic",
        "synthetic": {
            "num_train": 4,
            "num_val": 3,
            "height": 40,
            "width": 40,
            "min_size": 10,
            "max_size": 16,
        },
    },
    "cues": {"source": "gt_points"},
    "wsss": {"method": "gt"},
    "decode": {"min_area": 10},
}


# Each line is one command; {dir} is the run's folder, {model} a model file and {stage} the
# stage's config sections (as the workflow passes them).
PIPELINE = """
prepare-dataset --config {dataset} --split train --records {dir}/train.json --gt {dir}/train_gt.json
prepare-dataset --config {dataset} --split val --records {dir}/val.json --gt {dir}/val_gt.json
extract-cues --config {cues} --records {dir}/train.json --output {dir}/cues.h5
make-wsss --config {wsss} --records {dir}/train.json --gt {dir}/train_gt.json --out {dir}/shard
gather-wsss --shards {dir}/shard --records {dir}/train.json --out {dir}/wsss --miou {dir}/miou.json
synthesize-pseudo-labels --config {pseudo} --records {dir}/train.json --cues {dir}/cues.h5
  --wsss {dir}/wsss --gt {dir}/train_gt.json --out {dir}/pseudo_shard.json
gather-pseudo-labels --shards {dir}/pseudo_shard.json --records {dir}/train.json
  --cues {dir}/cues.h5 --wsss {dir}/wsss --out {dir}/pseudo.json --stats {dir}/stats.json
predict-instance --config {predict} --model {model} --records {dir}/val.json
  --out {dir}/pred_val.json --device cpu
evaluate --config {evaluation} --pred {dir}/pred_val.json --gt {dir}/val_gt.json
  --out {dir}/eval.json
"""


def _run_pipeline(
    folder: Path, config: dict, pipeline: str, stages: tuple[str, ...], **paths: Path
) -> dict[Path, bytes | list[list[str]]]:
    """Run ``pipeline``'s commands via the CLI in a fresh ``folder`` (``{dir}``; ``stages``
    and ``paths`` fill the other fields); what each file written holds (``_content``)."""
    shutil.rmtree(folder, ignore_errors=True)
    experiments = Experiments(config)
    values = {stage: experiments.stage_json(experiments.names[0], stage) for stage in stages}
    values.update(dir=str(folder), **{name: str(path) for name, path in paths.items()})
    for command in pipeline.strip().replace("\n  ", " ").splitlines():
        argv = [word.format(**values) for word in command.split()]
        assert cli.main(argv) == 0, command
    return {p.relative_to(folder): _content(p) for p in folder.rglob("*") if p.is_file()}


def test_pseudo_labels_and_metrics_are_byte_identical_across_runs(tmp_path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    save_model(model, build_instance_net("small", 3), {"backbone": "small", "num_classes": 3})
    folder = tmp_path / "run"  # both runs in the same place: the files hold their paths
    stages = ("dataset", "cues", "wsss", "pseudo", "predict", "evaluation")
    first, second = (
        _run_pipeline(folder, PIPELINE_CONFIG, PIPELINE, stages, model=model) for _ in range(2)
    )
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert {Path("pseudo.json"), Path("stats.json"), Path("eval.json")} <= first.keys()
    assert json.loads(first[Path("stats.json")])["accepted"] > 0


# The default path: a trained CAM classifier's cues and CAM masks (GrabCut), pseudo labels,
# a trained instance network with self-refinement, its predictions and metrics.
TRAINED_CONFIG = {
    **PIPELINE_CONFIG,
    "classifier": {"width": 0.125, "resize": 44, "crop": 40, "batch_size": 2, "epochs": 2,
                   "lr_steps": [2], "checkpoint_every": 1, "workers": 0},
    "cues": {"source": "classifier", "classifier": "cam", "input_size": 40, "threshold": 0.0},
    "wsss": {"method": "cam", "retrain": False, "scales": [1.0], "grabcut_iterations": 2},
    "pseudo": {"min_area": 10, "cue_threshold": 0.0},
    "instance": {**CONFIG["instance"], "iterations": 8},
    "refine": {"nms_kernel": 9, "start_iter": 2},
}  # fmt: skip
TRAINED_PIPELINE = """
prepare-dataset --config {dataset} --split train --records {dir}/train.json --gt {dir}/train_gt.json
prepare-dataset --config {dataset} --split val --records {dir}/val.json --gt {dir}/val_gt.json
train-classifier --config {classifier_cam} --records {dir}/train.json --output-dir {dir}/cam
  --device cpu --threads 1
extract-cues --config {cues} --records {dir}/train.json --model {dir}/cam/model.pt
  --output {dir}/cues.h5 --device cpu --threads 1
make-wsss --config {wsss} --records {dir}/train.json --gt {dir}/train_gt.json
  --classifier {dir}/cam/model.pt --out {dir}/shard
gather-wsss --shards {dir}/shard --records {dir}/train.json --out {dir}/wsss --miou {dir}/miou.json
synthesize-pseudo-labels --config {pseudo} --records {dir}/train.json --cues {dir}/cues.h5
  --wsss {dir}/wsss --gt {dir}/train_gt.json --out {dir}/pseudo_shard.json
gather-pseudo-labels --shards {dir}/pseudo_shard.json --records {dir}/train.json
  --cues {dir}/cues.h5 --wsss {dir}/wsss --out {dir}/pseudo.json --stats {dir}/stats.json
train-instance --config {instance} --records {dir}/train.json --pseudo {dir}/pseudo.json
  --wsss {dir}/wsss --out {dir}/instance/model.pt --device cpu
predict-instance --config {predict} --model {dir}/instance/model.pt --records {dir}/val.json
  --out {dir}/pred_val.json --device cpu
evaluate --config {evaluation} --pred {dir}/pred_val.json --gt {dir}/val_gt.json
  --out {dir}/eval.json
"""


@pytest.mark.slow
def test_the_trained_default_path_is_byte_identical_across_runs(tmp_path) -> None:
    threads = torch.get_num_threads()
    stages = ("dataset", "classifier_cam", "cues", "wsss", "pseudo", "instance", "predict",
              "evaluation")  # fmt: skip
    try:
        first, second = (
            _run_pipeline(tmp_path / "run", TRAINED_CONFIG, TRAINED_PIPELINE, stages)
            for _ in range(2)
        )
    finally:
        torch.set_num_threads(threads)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert Path("instance/model.pt") in first and Path("cam/model.pt") in first
    assert json.loads(first[Path("stats.json")])["accepted"] > 0


def _content(path: Path) -> bytes | list[list[str]]:
    """What must agree between two runs: the bytes; the loss columns of a training log; a
    torch file's contents without the timings of its log (its zip names the temporary file it
    was written as, so its bytes differ)."""
    if path.suffix == ".csv":
        return _losses(path)
    if path.suffix == ".pt":
        buffer = io.BytesIO()
        torch.save(_untimed(torch.load(path, weights_only=True)), buffer)
        return buffer.getvalue()
    return path.read_bytes()


def _untimed(value):
    if isinstance(value, dict):
        return {key: _untimed(item) for key, item in value.items() if "seconds" not in str(key)}
    if isinstance(value, list):
        return [_untimed(item) for item in value]
    return value


# ----------------------------------------------------------------------------- atomic writes
WRITER = r"""
import sys, time
import h5py
import numpy as np
from bestie import artifacts
from bestie.data.io import write_label_map


def stall(*args, **kwargs):
    print("stalled", flush=True)
    time.sleep(600)


mode, target = sys.argv[1], sys.argv[2]
if mode == "json":  # everything written, killed before the rename
    artifacts.os.replace = stall
    artifacts.write_json(target, {"images": list(range(100000))})
elif mode == "hdf5":  # killed halfway through the images
    create = h5py.Group.create_dataset
    def slow(group, *args, **kwargs):
        if group.name == "/images/50":
            stall()
        return create(group, *args, **kwargs)
    h5py.Group.create_dataset = slow
    cues = {i: artifacts.ImageCues(np.ones((3, 4)), 8, 8) for i in range(100)}
    artifacts.write_cues(target, cues, attrs={})
elif mode == "folder":  # killed after 2 of the maps
    with artifacts.atomic_directory(target) as folder:
        for index in range(5):
            if index == 2:
                stall()
            write_label_map(folder / f"{index}.png", np.zeros((4, 4), np.uint8))
"""


@pytest.mark.parametrize("mode", ["json", "hdf5", "folder"])
def test_a_writer_killed_mid_write_leaves_no_target(tmp_path: Path, mode: str) -> None:
    target = tmp_path / {"json": "pred.json", "hdf5": "cues.h5", "folder": "wsss"}[mode]
    if mode == "json":
        target.write_text("old\n")  # a rerun's kill leaves the previous file as it was
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "stalled\n"  # now inside the write
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert target.read_text() == "old\n" if mode == "json" else not target.exists()
    # only the hidden temporary is left, which no reader or Snakemake rule looks at
    assert all(path.name.startswith(".") for path in tmp_path.iterdir() if path != target)


def test_writers_that_raise_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "model.pt", torch.nn.Linear(2, 2), {})
    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    cues = {1: ImageCues(np.ones((1, 4)), 4, 4)}
    with pytest.raises(OSError, match="disk full"):
        write_cues(tmp_path / "cues.h5", cues, attrs={})
    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"), atomic_directory(tmp_path / "maps") as folder:
        write_label_map(folder / "a.png", np.zeros((4, 4), np.uint8))
    assert list(tmp_path.iterdir()) == []
