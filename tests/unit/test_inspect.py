"""``python -m bestie inspect`` and ``show`` on a tiny hand-made ``results/`` tree.

Experiment ``a`` owns the data set, cues and WSSS maps; experiment ``b`` has only pseudo
labels, a model and predictions, so its data set must be found in ``a`` (as Snakemake
shares it when the dataset config is equal).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from bestie import cli, inspection
from bestie.artifacts import (
    ImageCues,
    annotations_by_image,
    instances_to_annotations,
    instances_to_results,
    write_cues,
    write_json,
    write_records,
)
from bestie.data.io import write_label_map
from bestie.data.synthetic import generate_split
from bestie.data.targets import centroids
from bestie.engine import checkpoint
from bestie.engine.logger import CsvLog
from bestie.sections import SyntheticConfig
from bestie.stages.synthesize_pseudo_labels import PSEUDO_FORMAT
from bestie.wsss import semantic_from_instances

SIZE = 40


def _split(root: Path, split: str, count: int):
    folder = root / "results/a/dataset"
    config = SyntheticConfig(
        num_train=count, num_val=count, height=SIZE, width=SIZE, min_size=10, max_size=14
    )
    records, categories, gt = generate_split(config, split, str(folder / "images" / split))
    write_records(folder / f"{split}.json", records, categories, dataset="synthetic", split=split)
    write_json(folder / f"{split}_gt.json", gt)
    return records, categories, annotations_by_image(gt["annotations"], records)


def _pseudo(root: Path, records, categories, truth) -> None:
    annotations = []
    for record in records:
        instances = truth[record.id]
        centres = centroids(instances.masks)
        for index, entry in enumerate(instances_to_annotations(instances, record.id)):
            entry["center"] = centres[index].tolist()
            entry["cue"] = [*map(float, centres[index]), float(instances.labels[index]), 1.0]
            annotations.append({**entry, "id": len(annotations) + 1})
    info = {
        "format": PSEUDO_FORMAT,
        "records": "results/a/dataset/train.json",  # relative, as the workflow stores them
        "cues": "results/a/cues/train.h5",
        "wsss": "results/a/wsss/train",
    }
    images = [{"id": r.id, "file_name": r.file, "height": SIZE, "width": SIZE} for r in records]
    names = [{"id": index, "name": name} for index, name in enumerate(categories)]
    data = {"info": info, "images": images, "annotations": annotations, "categories": names}
    write_json(root / "results/b/pseudo/train.json", data)
    write_json(root / "results/b/pseudo/stats.json", {"components": 5, "accepted": 4})


def _training(root: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    folder = root / "results/b/instance"
    checkpoint.save_model(folder / "model.pt", model, {"backbone": "tiny", "num_classes": 3})
    checkpoint.save_checkpoint(
        folder / "checkpoints/last.pt",
        {"model": model, "optimizer": optimizer},
        progress=4,
        key="abc",
        extra={"log": [{"iteration": 2}]},
    )
    log = CsvLog(folder / "train_log.csv", ["iteration", "total"])
    log.append({"iteration": 2, "total": 1.5})
    log.append({"iteration": 4, "total": 0.75})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    records, categories, truth = _split(root, "train", 3)
    val_records, _, val_truth = _split(root, "val", 2)
    cues = {}
    for record in records:
        centres = centroids(truth[record.id].masks)
        peaks = np.c_[centres, truth[record.id].labels, np.full(len(centres), 0.9)]
        maps = np.random.default_rng(record.id).random((len(record.classes), 10, 10))
        cues[record.id] = ImageCues(peaks, SIZE, SIZE, maps, record.classes, stride=4)
        semantic = semantic_from_instances(truth[record.id], (SIZE, SIZE))
        write_label_map(root / f"results/a/wsss/train/{record.name}.png", semantic)
    cues[records[0].id].peaks = np.zeros((0, 4), np.float32)  # an image without peaks
    write_cues(root / "results/a/cues/train.h5", cues, attrs={"source": "classifier"})
    write_json(root / "results/a/wsss/miou_train.json", {"images": 3, "miou": 1.0, "iou": {}})
    _pseudo(root, records, categories, truth)
    _training(root)
    predictions = []
    for index, record in enumerate(val_records):
        instances = val_truth[record.id]
        instances.scores = np.linspace(0.9, 0.2, len(instances)) - 0.1 * index
        predictions += instances_to_results(instances, record.id)
    write_json(root / "results/b/instance/pred_val.json", predictions)
    write_json(root / "results/b/eval/instance_val.json", {"mAP50": 50.0, "per_class": {}})
    write_json(root / "results/b/eval/instance_curve_val.json", [])  # trained without snapshots
    return root


@pytest.mark.parametrize(
    ("relative", "kind", "expected"),
    [
        ("a/dataset/train.json", "records", {"images": 3, "images_without_labels": 0}),
        ("a/dataset/val_gt.json", "COCO ground truth", {"images": 2, "crowd": 0}),
        ("a/cues/train.h5", "instance cues", {"images": 3, "images_without_peaks": 1}),
        ("a/wsss/train", "WSSS maps", {"images": 3, "image_sizes": {"40x40": 3}}),
        ("a/wsss/train/train_00001.png", "WSSS map", {"images": 1}),
        ("a/wsss/miou_train.json", "WSSS mIoU", {"miou": 1.0}),
        ("b/pseudo/train.json", "pseudo labels", {"images_without_instances": 0}),
        ("b/pseudo/stats.json", "pseudo-label statistics", {"accepted": 4}),
        ("b/instance/model.pt", "model", {"tensors": 7, "parameters": 12}),
        ("b/instance/checkpoints/last.pt", "checkpoint", {"progress": 4, "key": "abc"}),
        ("b/instance/train_log.csv", "training log", {"rows": 2}),
        ("b/instance/pred_val.json", "predictions", {"images_with_predictions": 2}),
        ("b/eval/instance_val.json", "evaluation", {"mAP50": 50.0}),
        ("b/eval/instance_curve_val.json", "evaluation curve", {"snapshots": 0}),
    ],
)
def test_every_artifact_is_summarised(project: Path, relative, kind, expected) -> None:
    summary = inspection.inspect_artifact(project / "results" / relative)
    assert summary["kind"] == kind
    assert expected.items() <= summary.items()
    json.dumps(summary)  # plain data only
    assert inspection.format_summary(summary).startswith("path: ")


def test_summaries_count_classes_and_ranges(project: Path) -> None:
    results = project / "results"
    gt = inspection.inspect_artifact(results / "a/dataset/train_gt.json")
    pseudo = inspection.inspect_artifact(results / "b/pseudo/train.json")
    assert pseudo["instances_per_class"] == gt["instances_per_class"]
    assert sum(gt["instances_per_class"].values()) == gt["instances"]
    assert set(gt["instances_per_class"]) <= {"disc", "square", "triangle"}
    assert pseudo["stats"] == {"components": 5, "accepted": 4}
    assert 0 < gt["area"]["min"] <= gt["area"]["median"] <= gt["area"]["max"] <= SIZE * SIZE
    cues = inspection.inspect_artifact(results / "a/cues/train.h5")
    assert cues["score"]["min"] == pytest.approx(0.9) and cues["map_strides"] == [4]
    assert cues["maps_stored"] == 3 and cues["source"] == "classifier"
    predictions = inspection.inspect_artifact(results / "b/instance/pred_val.json")
    assert predictions["score"]["max"] == pytest.approx(0.9)
    assert set(predictions["per_class"]) <= {"disc", "square", "triangle"}  # names from a/
    maps = inspection.inspect_artifact(results / "a/wsss/train")
    assert sum(maps["pixel_fractions"].values()) == pytest.approx(1.0, abs=1e-4)
    log = inspection.inspect_artifact(results / "b/instance/train_log.csv")
    assert log["last"] == {"iteration": "4", "total": "0.75"}
    saved = inspection.inspect_artifact(results / "b/instance/checkpoints/last.pt")
    assert saved["states"] == {"model": "7 entries", "optimizer": "2 entries"}


def test_cli_text_and_json(project: Path, capsys) -> None:
    path = str(project / "results/a/dataset/train.json")
    assert cli.main(["inspect", path]) == 0
    text = capsys.readouterr().out
    assert "kind: records" in text and "images: 3" in text
    assert cli.main(["inspect", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 3


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", r"unknown artifact type \(extension '.txt'"),
        ("odd.json", b'{"hello": 1}', r"unknown JSON artifact \(top level: \['hello'\]\)"),
        ("broken.json", b'{"images": [', "not valid JSON"),
        ("random.pt", b"\x00garbage", "not a weights-only torch file"),
        ("cut.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, "unreadable cues file"),
        ("text.png", b"not a png", "cannot read label map"),
    ],
)
def test_unknown_or_damaged_files_are_clear_errors(tmp_path, name, content, message) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        inspection.inspect_artifact(tmp_path / name)


def test_pickled_objects_are_refused_and_the_cli_reports_errors(tmp_path, caplog) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module, not weights
    with pytest.raises(ValueError, match="not a weights-only torch file"):
        inspection.inspect_artifact(tmp_path / "module.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither a checkpoint nor a model file"):
        inspection.inspect_artifact(tmp_path / "other.pt")
    assert cli.main(["inspect", str(tmp_path / "missing.json")]) == 1
    assert "no such file or folder" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without label maps"):
        inspection.inspect_artifact(tmp_path / "empty")


def test_format_markers_agree_with_their_writers() -> None:
    assert inspection.PSEUDO_FORMAT == PSEUDO_FORMAT
    assert inspection.CHECKPOINT_FORMAT == checkpoint.CHECKPOINT_FORMAT
    assert inspection.MODEL_FORMAT == checkpoint.MODEL_FORMAT


# ----------------------------------------------------------------------------- show
def _show(project: Path, tmp_path: Path, relative: str, *options: str) -> np.ndarray:
    output = tmp_path / "out.png"
    argv = ["show", str(project / "results" / relative), "-o", str(output), *options]
    assert cli.main(argv) == 0
    picture = cv2.imread(str(output))
    assert picture is not None and picture.shape[0] > 100
    return picture


@pytest.mark.parametrize(
    ("relative", "options", "panels"),
    [
        ("a/cues/train.h5", ["--image", "train_00002"], 2),  # image + at least one map
        ("a/wsss/train", ["--image", "2"], 3),
        ("a/wsss/train/train_00003.png", [], 3),
        ("b/pseudo/train.json", ["--image", "2"], 3),
        ("b/pseudo/train.json", ["--image", "2", "--targets"], 5),
        ("b/instance/pred_val.json", ["--image", "1"], 3),
        ("a/dataset/train.json", ["--image", "2"], 2),  # image | label and GT points
        ("a/dataset/val_gt.json", ["--image", "1"], 2),  # image | GT instances
    ],
)
def test_show_draws_every_per_image_artifact(project, tmp_path, relative, options, panels):
    picture = _show(project, tmp_path, relative, *options)
    assert picture.shape[1] >= panels * 250  # about 350 px per panel


def test_show_takes_explicit_records_and_gt_outside_the_layout(project, tmp_path) -> None:
    loose = tmp_path / "pred_val.json"
    loose.write_bytes((project / "results/b/instance/pred_val.json").read_bytes())
    output = str(tmp_path / "out.png")
    with pytest.raises(ValueError, match=r"not under results/\{exp\}/"):
        cli_run(["show", str(loose), "--image", "1", "-o", output])
    dataset = project / "results/a/dataset"
    cli_run(
        ["show", str(loose), "--image", "1", "-o", output, "--records", str(dataset / "val.json")]
        + ["--gt", str(dataset / "val_gt.json"), "--score-threshold", "0.5"]
    )
    assert Path(output).is_file()
    with pytest.raises(ValueError, match="'nope' is not in the records"):
        cli_run(["show", str(project / "results/a/cues/train.h5"), "--image", "nope", "-o", output])
    with pytest.raises(ValueError, match="no drawing for this kind"):
        cli_run(["show", str(project / "results/b/pseudo/stats.json"), "-o", output])
    with pytest.raises(ValueError, match=r"image train_00001 \(id 1\) is not in it"):
        cli_run(["show", str(dataset / "val_gt.json"), "--image", "1", "-o", output]
                + ["--records", str(dataset / "train.json")])  # fmt: skip


def test_different_datasets_in_two_experiments_are_ambiguous(project, tmp_path) -> None:
    results = tmp_path / "results"
    for experiment, content in (("x", "1"), ("y", "2")):
        (results / experiment / "dataset").mkdir(parents=True)
        (results / experiment / "dataset/val.json").write_text(content)
    (results / "z/instance").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"2 different dataset/val\.json files .*\(x, y\)"):
        inspection.find_dataset_file(results / "z/instance/pred_val.json", "val")
    (results / "y/dataset/val.json").write_text("1")  # identical copies are fine
    found = inspection.find_dataset_file(results / "z/instance/pred_val.json", "val")
    assert found == (results / "x/dataset/val.json").resolve()


def cli_run(argv: list[str]) -> None:
    """Run a command in-process, letting its ValueError through (cli.main would log it)."""
    from bestie.stages import show

    parser = argparse.ArgumentParser()
    show.add_arguments(parser)
    show.run(parser.parse_args(argv[1:]))


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("results/a/instance/pred_val.json", "val"),
        ("results/a/eval/instance_curve_val.json", "val"),
        ("results/a/wsss/miou_train.json", "train"),
        ("results/a/wsss/shards/train_1", "train"),
        ("results/a/cues/shards/val_0.h5", "val"),
        ("results/a/cues/train.h5", "train"),
        ("results/a/dataset/val_gt.json", "val"),
        ("results/a/maskrcnn/pseudo_gt_train.json", "train"),
    ],
)
def test_split_of_artifact_names(path: str, split: str) -> None:
    assert inspection.split_of(path) == split
