"""The workflow end to end: lint, a full run, its artifacts, and caching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bestie.artifacts import read_json, read_records

from .conftest import CONFIG, make_project, snakemake

pytestmark = pytest.mark.slow


def planned_rules(project: Path, *args: str) -> dict[str, int]:
    """Rule name -> job count that `snakemake -n` plans."""
    output = snakemake(project, "-n", "--quiet", "rules", *args).stdout
    table = re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in table if rule != "total"}


def test_lint_is_clean(tmp_path: Path) -> None:
    result = snakemake(make_project(tmp_path), "--lint")
    assert "Congratulations" in result.stdout + result.stderr


def test_dry_run_plans_every_stage(tmp_path: Path) -> None:
    assert planned_rules(make_project(tmp_path)) == {"all": 1, "prepare_dataset": 2}


def test_full_run_writes_every_artifact(finished_project: Path) -> None:
    dataset = finished_project / "results/bestie/dataset"
    records, categories = read_records(dataset / "train.json")
    assert len(records) == 12 and categories == ["disc", "square", "triangle"]
    assert all(Path(record.file).is_file() for record in records)
    assert len(read_json(dataset / "val_gt.json")["images"]) == 6
    for rule in ("prepare_dataset_train", "prepare_dataset_val"):
        assert (finished_project / f"results/bestie/benchmarks/{rule}.tsv").is_file()
    assert planned_rules(finished_project) == {}


# Each case changes one stage's parameter; exactly that stage and its dependents rerun.
CASES = [
    ({"dataset": {"synthetic": {"num_val": 5}}}, {"prepare_dataset": 2}),
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
