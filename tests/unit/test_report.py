"""The report stages: summary tables, mean ± std over seeds, figures, missing inputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bestie.artifacts import instances_to_annotations, instances_to_results, write_json
from bestie.cli import main
from bestie.report.tables import benchmark_rule, seed_group
from bestie.stages.report_experiment import NOT_BUILT, OUTPUTS
from bestie.structures import Instances

from .tiny_split import CATEGORIES, make_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = json.dumps(
    {"cues": {"input_size": 32, "peak_kernel": 5, "top_k": 5}, "report": {"qualitative_images": 2}}
)


def evaluation(map50: float, coco_ap: float | None = 12.5) -> dict:
    return {
        "mAP25": map50 + 10,
        "mAP50": map50,
        "mAP70": None,
        "mAP75": map50 / 2,
        "COCO_AP": coco_ap,
        "COCO_AP50": 30.0,
        "COCO_AP75": 5.0,
        "images": 6,
        "gt_instances": 9,
        "predictions": 11,
        "per_class": {"mAP50": {"square": map50, "bar": None}},
    }


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def assert_png(path: Path) -> tuple[int, int]:
    """The file is a PNG that decodes; returns its (width, height)."""
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as image:
        image.load()
        return image.size


# ----------------------------------------------------------------------------- summary
def run_summary(tmp_path: Path, rows: list[list[str]]) -> Path:
    out = tmp_path / "out"
    argv = ["report"]
    for row in rows:
        argv += ["--row", *row]
    argv += ["--summary", str(out / "summary.tsv"), "--by-seed", str(out / "by_seed.tsv")]
    argv += ["--html", str(out / "summary.html"), "--figure", str(out / "summary.png")]
    assert main(argv) == 0
    return out


def test_summary_has_one_exact_line_per_experiment_and_model(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", evaluation(40.0, coco_ap=None))
    write_json(tmp_path / "b.json", evaluation(20.0))
    out = run_summary(
        tmp_path,
        [
            ["bestie", "instance", "image", "0", str(tmp_path / "a.json")],
            ["bestie", "maskrcnn", "image", "0", "-"],
            ["point", "instance", "point", "3", str(tmp_path / "b.json")],
        ],
    )
    rows = read_tsv(out / "summary.tsv")
    assert list(rows[0]) == [
        "experiment", "model", "supervision", "seed",
        "mAP25", "mAP50", "mAP70", "mAP75", "COCO_AP", "COCO_AP50", "COCO_AP75",
        "images", "predictions", "note",
    ]  # fmt: skip
    assert rows[0] == {
        "experiment": "bestie", "model": "instance", "supervision": "image", "seed": "0",
        "mAP25": "50.0000", "mAP50": "40.0000", "mAP70": "NA", "mAP75": "20.0000",
        "COCO_AP": "NA", "COCO_AP50": "30.0000", "COCO_AP75": "5.0000",
        "images": "6", "predictions": "11", "note": "",
    }  # fmt: skip
    assert rows[1]["model"] == "maskrcnn" and rows[1]["note"] == "not evaluated"
    assert {rows[1][key] for key in ("mAP50", "COCO_AP", "images")} == {"NA"}
    assert (rows[2]["experiment"], rows[2]["supervision"], rows[2]["seed"]) == (
        "point",
        "point",
        "3",
    )
    assert rows[2]["mAP50"] == "20.0000" and rows[2]["COCO_AP"] == "12.5000"
    assert "bestie/maskrcnn" in (out / "summary.html").read_text()
    assert_png(out / "summary.png")


def test_seeds_are_grouped_with_mean_and_sample_std(tmp_path: Path) -> None:
    rows = []
    for seed, map50 in ((0, 40.0), (1, 50.0), (2, None)):
        path = "-"
        if map50 is not None:
            path = str(tmp_path / f"seed{seed}.json")
            write_json(path, evaluation(map50))
        rows.append([f"bestie_seed{seed}", "instance", "image", str(seed), path])
    write_json(tmp_path / "other.json", evaluation(10.0))
    rows.append(["no_iag_seed0", "instance", "image", "0", str(tmp_path / "other.json")])
    out = run_summary(tmp_path, rows)
    grouped = read_tsv(out / "by_seed.tsv")
    assert [(g["experiment"], g["seeds"], g["seed_list"]) for g in grouped] == [
        ("bestie", "2", "0,1"),
        ("no_iag", "1", "0"),
    ]
    first = grouped[0]
    assert first["mAP50_mean"] == "45.0000"
    assert float(first["mAP50_std"]) == pytest.approx(math.sqrt(50.0), abs=1e-4)
    assert first["mAP75_mean"] == "22.5000" and first["mAP70_mean"] == "NA"
    assert first["COCO_AP_std"] == "0.0000"
    assert grouped[1]["mAP50_mean"] == "10.0000" and grouped[1]["mAP50_std"] == "NA"
    assert "45.00 ± 7.07" in (out / "summary.html").read_text(encoding="utf-8")


def test_summary_without_any_evaluation_writes_empty_tables(tmp_path: Path) -> None:
    out = run_summary(tmp_path, [["bestie", "instance", "image", "0", "-"]])
    assert read_tsv(out / "summary.tsv")[0]["note"] == "not evaluated"
    assert read_tsv(out / "by_seed.tsv")[0]["seeds"] == "0"
    assert_png(out / "summary.png")


def test_seed_group_and_benchmark_rule() -> None:
    assert seed_group("bestie_seed3", 3) == "bestie"
    assert seed_group("bestie_seed3", 4) == "bestie_seed3"
    rules = ["extract_cues", "gather_cues", "train_classifier", "cue_stats"]
    assert benchmark_rule("extract_cues_train_0", rules) == "extract_cues"
    assert benchmark_rule("cue_stats", rules) == "cue_stats"
    assert benchmark_rule("unknown_job_1", rules) == "unknown_job_1"


# ----------------------------------------------------------------------------- experiment
def write_benchmark(path: Path, seconds: float, rss: float, cpu: float | None = None) -> None:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
    cpu = seconds if cpu is None else cpu
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{header}\n{seconds}\t0:00:01\t{rss}\t300\t40\t50\t1\t2\t30\t{cpu}\n")


def fake_artifacts(folder: Path) -> dict[str, Path]:
    """Small versions of every artifact the experiment report reads (no models)."""
    paths = {}
    for variant in ("cam", "pam"):
        log = folder / f"{variant}_log.csv"
        log.write_text(
            "epoch,lr,loss,train_micro_f1,train_macro_f1,seconds\n"
            "1,0.01,0.7,0.5,0.4,1.0\n2,0.01,0.4,0.8,0.7,1.0\n"
        )
        paths[f"classifier-log-{variant}"] = log
        paths[f"classifier-metrics-{variant}"] = folder / f"{variant}_metrics.json"
        write_json(
            paths[f"classifier-metrics-{variant}"],
            {"images": 4, "micro_f1": 0.9, "macro_f1": 0.8, "per_class_f1": [0.9, 0.7],
             "categories": CATEGORIES},
        )  # fmt: skip
    counts = {"instances": 3, "hit_once": 2, "missed": 1, "missed_touching": 1,
              "hit_multiple": 0, "cues": 4, "cues_on_background": 1}  # fmt: skip
    paths["cue-stats"] = folder / "cue_stats.json"
    split = {"images": 4, "images_without_cues": 1}
    split.update(
        {cut: {"total": counts, "square": counts} for cut in ("all_cues", "above_cue_threshold")}
    )
    write_json(paths["cue-stats"], {"categories": CATEGORIES, "splits": {"train": split}})
    paths["wsss-miou"] = folder / "miou.json"
    write_json(
        paths["wsss-miou"],
        {"images": 4, "miou": 0.5, "iou": {"background": 0.9, "square": 0.1},
         "pixel_accuracy": 0.95, "confusion": [[1, 0], [0, 1]]},
    )  # fmt: skip
    paths["pseudo-stats"] = folder / "pseudo_stats.json"
    write_json(paths["pseudo-stats"], {"components": 5, "accepted": 3, "precision": 0.67})
    header = (
        "iteration,epoch,lr,total,seg,center_pseudo,offset_pseudo,center_refined,"
        "offset_refined,refined_instances,pseudo_tp,refined_tp,seconds_per_iteration"
    )
    lines = [header]
    for it in range(0, 100, 10):
        lines.append(
            f"{it},0,0.001,{2 - it / 100},1,0.5,0.3,0.2,0.1,{it // 10},{3},{3 + it // 20},0.1"
        )
    paths["instance-log"] = folder / "instance_log.csv"
    paths["instance-log"].write_text("\n".join(lines) + "\n")
    paths["map-curve"] = folder / "curve.json"
    write_json(
        paths["map-curve"],
        [{"iteration": 50, "mAP50": 10.0}, {"iteration": 100, "mAP50": 20.0, "mAP25": 30.0}],
    )
    for model, value in (("instance", 30.0), ("maskrcnn", 35.0)):
        paths[f"eval-{model}"] = folder / f"eval_{model}.json"
        write_json(paths[f"eval-{model}"], evaluation(value))
    benchmarks = folder / "benchmarks"
    write_benchmark(benchmarks / "extract_cues_train_0.tsv", 2.0, 100.0)
    write_benchmark(benchmarks / "extract_cues_train_1.tsv", 3.0, 120.0)
    write_benchmark(benchmarks / "train_classifier_pam.tsv", 10.0, 500.0)
    write_benchmark(benchmarks / "evaluate_val.tsv", 0.5, 3.5, cpu=0.0)  # ended before a sample
    write_benchmark(benchmarks / "report_experiment.tsv", 1.0, 50.0)
    paths["benchmarks"] = benchmarks
    return paths


def run_experiment(tmp_path: Path, paths: dict[str, Path]) -> Path:
    out = tmp_path / "report"
    argv = ["report-experiment", "--experiment", "bestie", "--config", CONFIG]
    argv += ["--output-dir", str(out)]
    for option, path in paths.items():
        argv += [f"--{option}", str(path)]
    argv += ["--rules", "extract_cues", "train_classifier", "evaluate", "report_experiment"]
    assert main(argv) == 0
    return out


def test_experiment_report_writes_every_figure_and_table(tmp_path: Path) -> None:
    out = run_experiment(tmp_path, fake_artifacts(tmp_path))
    sizes = {name: assert_png(out / name) for name in OUTPUTS if name.endswith(".png")}
    for name in ("classifier_training.png", "instance_training.png", "true_positives.png"):
        assert sizes[name][1] > 250, name  # a real plot, not a placeholder strip
    runtime = read_tsv(out / "runtime.tsv")
    assert [(r["job"], r["rule"], r["s"], r["max_rss"]) for r in runtime] == [
        ("evaluate_val", "evaluate", "0.5000", "NA"),  # the shell's 3.5 MB is not the job's
        ("extract_cues_train_0", "extract_cues", "2.0000", "100.0000"),
        ("extract_cues_train_1", "extract_cues", "3.0000", "120.0000"),
        ("train_classifier_pam", "train_classifier", "10.0000", "500.0000"),
    ]
    page = (out / "tables.html").read_text(encoding="utf-8")
    assert NOT_BUILT not in page.replace("&#x27;", "'")
    assert "hit_once" in page and "cues_on_background" in page and "pixel accuracy" in page
    assert "<td>extract_cues</td>" in page and "<td>above_cue_threshold</td>" in page
    assert "<td>accepted</td>\n      <td>3</td>" in page and "<td>0.67</td>" in page


def test_missing_optional_inputs_give_placeholders_and_notes(tmp_path: Path) -> None:
    out = run_experiment(tmp_path, {})
    for name in OUTPUTS:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert assert_png(out / name)[1] <= 200, name  # the placeholder strip
    assert read_tsv(out / "runtime.tsv") == []
    assert "not produced" in (out / "tables.html").read_text(encoding="utf-8")


def test_no_gt_true_positives_are_a_placeholder(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("iteration,total,pseudo_tp,refined_tp\n0,1.0,,\n10,0.5,,\n")
    out = run_experiment(tmp_path, {"instance-log": log})
    assert assert_png(out / "true_positives.png")[1] <= 200
    assert assert_png(out / "instance_training.png")[1] > 200


def gt_and_predictions(folder: Path, records) -> tuple[Path, Path]:
    """COCO GT (the squares of the tiny split) and predictions (GT masks with scores)."""
    images, annotations, results = [], [], []
    for record in records:
        images.append({"id": record.id, "file_name": record.name, "height": record.height,
                       "width": record.width})  # fmt: skip
        if 0 not in record.classes:
            continue
        mask = np.zeros((1, record.height, record.width), bool)
        mask[0, 4:14, 4:14] = True
        instances = Instances(mask, [0], [0.9])
        annotations += instances_to_annotations(instances, record.id, first_id=len(annotations) + 1)
        results += instances_to_results(instances, record.id)
    categories = [{"id": i, "name": name} for i, name in enumerate(CATEGORIES)]
    gt = folder / "val_gt.json"
    write_json(gt, {"images": images, "annotations": annotations, "categories": categories})
    predictions = folder / "pred_val.json"
    write_json(predictions, results)
    return gt, predictions


def test_qualitative_panels_and_cam_vs_pam_from_classifiers(tmp_path: Path) -> None:
    from bestie.engine.checkpoint import save_model
    from bestie.models.classifier import Classifier, classifier_metadata

    records_path, records = make_split(tmp_path, [(32, 40)] * 4)
    gt, predictions = gt_and_predictions(tmp_path, records)
    paths = {"val-records": records_path, "val-gt": gt, "predictions-instance": predictions}
    paths["train-records"] = records_path
    for variant, layers in (("cam", []), ("pam", [1])):
        model = Classifier(len(CATEGORIES), width=0.0625, pam_layers=layers)
        paths[f"classifier-model-{variant}"] = tmp_path / f"{variant}.pt"
        save_model(paths[f"classifier-model-{variant}"], model, classifier_metadata(model))
    out = run_experiment(tmp_path, paths)
    width, height = assert_png(out / "qualitative.png")
    assert height > 400 and width > 600  # two images x (image, GT, instance)
    width, height = assert_png(out / "cam_vs_pam.png")
    assert height > 400 and width > 600  # two images x (image, CAM, PAM)
