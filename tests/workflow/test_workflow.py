"""The workflow end to end: lint, a full run, its artifacts, and caching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bestie.artifacts import read_cues, read_json, read_records

from .conftest import CONFIG, ROOT, make_project, snakemake

pytestmark = pytest.mark.slow


def planned_rules(project: Path, *args: str) -> dict[str, int]:
    """Rule name -> job count that `snakemake -n` plans."""
    output = snakemake(project, "-n", "--quiet", "rules", *args).stdout
    table = re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in table if rule != "total"}


def test_lint_is_clean(tmp_path: Path) -> None:
    result = snakemake(make_project(tmp_path), "--lint")
    assert "Congratulations" in result.stdout + result.stderr


FULL_PLAN = {  # experiments bestie, gt_cues (no Mask R-CNN) and oracle (Mask R-CNN on GT)
    "prepare_dataset": 2,
    "train_classifier": 2,
    "extract_cues": 8,
    "gather_cues": 4,
    "cue_stats": 2,
    "make_wsss": 2,
    "gather_wsss": 1,
    "synthesize_pseudo_labels": 4,
    "gather_pseudo_labels": 2,
    "train_instance": 2,
    "predict_instance": 6,  # val x 2 experiments + bestie's train split (pseudo GT), 2 shards
    "gather_predictions": 3,
    "export_pseudo_gt": 1,
    "train_maskrcnn": 2,  # bestie (pseudo GT) and oracle (GT)
    "predict_maskrcnn": 4,
    "gather_maskrcnn_predictions": 2,
    "evaluate": 4,  # bestie instance + maskrcnn, gt_cues instance, oracle maskrcnn
    "evaluate_curve": 2,
    "report_experiment": 3,
    "report": 1,
    "all": 1,
}


def test_dry_run_plans_every_stage(tmp_path: Path) -> None:
    assert planned_rules(make_project(tmp_path)) == FULL_PLAN


def test_full_run_writes_every_artifact(finished_project: Path) -> None:
    results = finished_project / "results"
    records, categories = read_records(results / "bestie/dataset/train.json")
    assert len(records) == 12 and categories == ["disc", "square", "triangle"]
    assert all(Path(record.file).is_file() for record in records)
    assert len(read_json(results / "bestie/dataset/val_gt.json")["images"]) == 6
    for variant in ("cam", "pam"):
        assert (results / f"bestie/classifier/{variant}/model.pt").is_file()
    assert set(read_cues(results / "bestie/cues/train.h5")) == {r.id for r in records}
    assert read_json(results / "bestie/wsss/miou_train.json")["miou"] == 1.0  # the gt oracle
    stats = read_json(results / "gt_cues/pseudo/stats.json")
    assert stats["accepted"] > 0 and stats["true_positives"] <= stats["accepted"]
    for exp in ("bestie", "gt_cues"):
        assert (results / exp / "instance/model.pt").is_file()
        metrics = read_json(results / exp / "eval/instance_val.json")
        assert {"mAP25", "mAP50", "mAP70", "mAP75", "COCO_AP"} <= set(metrics)
        assert len(read_json(results / exp / "eval/instance_curve_val.json")) == 2
    for exp in ("bestie", "oracle"):
        metrics = read_json(results / exp / "eval/maskrcnn_val.json")
        assert {"mAP25", "mAP50", "mAP70", "mAP75", "COCO_AP"} <= set(metrics)
    assert not (results / "oracle/instance").exists()  # the oracle trains Mask R-CNN only
    summary = [line.split("\t")[:3] for line in (results / "summary.tsv").read_text().splitlines()]
    assert summary == [
        ["experiment", "model", "supervision"],
        ["bestie", "instance", "image"],
        ["bestie", "maskrcnn", "image"],
        ["gt_cues", "instance", "image"],
        ["oracle", "maskrcnn", "full"],
    ]
    assert (results / "report/bestie/true_positives.png").is_file()
    assert (results / "bestie/benchmarks/train_instance.tsv").is_file()
    assert planned_rules(finished_project) == {}


# Each case changes one stage's parameter; exactly that stage and its dependents rerun
# (the summary reads every evaluation, so it always reruns).
def report(*experiments: str) -> dict[str, int]:
    return {"report": 1, "report_experiment": len(experiments)}


WEAK = ("bestie", "gt_cues")  # the experiments with an instance network
EVALUATION = {"evaluate": 4, "evaluate_curve": 2, **report("bestie", "gt_cues", "oracle")}
REFINEMENT = {  # bestie's Mask R-CNN, after its instance network's train predictions
    "export_pseudo_gt": 1,
    "train_maskrcnn": 1,
    "predict_maskrcnn": 2,
    "gather_maskrcnn_predictions": 1,
}
PREDICTION = {
    "predict_instance": 6,
    "gather_predictions": 3,
    **REFINEMENT,
    "evaluate": 3,  # not the oracle's
    "evaluate_curve": 2,
    **report(*WEAK),
}
INSTANCE = {"train_instance": 2, **PREDICTION}
PSEUDO = {"synthesize_pseudo_labels": 4, "gather_pseudo_labels": 2, **INSTANCE}
CASES = [
    ({"evaluation": {"iou_thresholds": [0.5]}}, EVALUATION),
    ({"decode": {"threshold": 0.2}}, PREDICTION),
    ({"instance": {"lr": 0.001}}, INSTANCE),
    ({"pseudo": {"min_area": 40}}, {"cue_stats": 2, **PSEUDO}),
    ({"wsss": {"method": "cam", "retrain": False}}, {"make_wsss": 2, "gather_wsss": 1, **PSEUDO}),
    ({"wsss": {"flip": False}}, {}),  # the GT maps read no CAM key: nothing reruns
    ({"cues": {"top_k": 5}}, {"extract_cues": 8, "gather_cues": 4, "cue_stats": 2, **PSEUDO}),
    (  # both Mask R-CNNs retrain; the instance networks do not
        {"maskrcnn": {"lr": 0.01}},
        {
            "export_pseudo_gt": 1,
            "train_maskrcnn": 2,
            "predict_maskrcnn": 4,
            "gather_maskrcnn_predictions": 2,
            "evaluate": 2,
            **report("bestie", "oracle"),
        },
    ),
    (  # only the experiment whose cues come from the classifier depends on it
        {"classifier": {"epochs": 3}},
        {
            "train_classifier": 2,
            "extract_cues": 4,
            "gather_cues": 2,
            "cue_stats": 1,
            "synthesize_pseudo_labels": 2,
            "gather_pseudo_labels": 1,
            "train_instance": 1,
            "predict_instance": 4,
            "gather_predictions": 2,
            **REFINEMENT,
            "evaluate": 2,
            "evaluate_curve": 1,
            **report(*WEAK),  # gt_cues draws the classifier's figures too
        },
    ),
]


@pytest.mark.parametrize(("override", "expected"), CASES)
def test_changing_one_stage_reruns_it_and_its_dependents_only(
    finished_project: Path, tmp_path: Path, override: dict, expected: dict
) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    for section, values in override.items():
        config[section] = {**config.get(section, {}), **values}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    planned = planned_rules(finished_project, "--configfile", str(changed))
    planned.pop("all", None)
    assert planned == expected


GRIDS = {  # the training jobs of each paper-table grid (+ variant) over the default config
    "table3": {"train_classifier": 2, "train_instance": 5},
    "table4": {"train_classifier": 2, "train_segnet": 1, "train_instance": 4, "make_wsss": 8},
    "table6": {"train_classifier": 6, "train_instance": 5},
    "table1": {"train_classifier": 2, "train_instance": 2, "train_maskrcnn": 3},
    "cues+large_objects": {"train_classifier": 2, "train_instance": 3, "train_maskrcnn": 4},
    "table3+seeds10+large_val": {"train_classifier": 20, "train_instance": 50, "make_wsss": 20},
    "table3+gt_cues": {"train_classifier": 2, "train_instance": 6},
    "pam_recipes": {"train_classifier": 6, "train_instance": 5, "train_maskrcnn": 6},
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_grids_share_the_classifiers_and_maps(tmp_path: Path, grid: str) -> None:
    for name in ("Snakefile", "workflow", "profiles", "environment.yml", "config"):
        (tmp_path / name).symlink_to(ROOT / name)
    grid_files = [f"config/grids/{name}.yaml" for name in grid.split("+")]
    planned = planned_rules(tmp_path, "--configfile", "config/config.yaml", *grid_files)
    counted = ("train_classifier", "train_segnet", "train_instance", "train_maskrcnn", "make_wsss")
    expected = dict(GRIDS[grid])
    expected.setdefault("make_wsss", 2)
    assert {rule: planned[rule] for rule in counted if rule in planned} == expected
