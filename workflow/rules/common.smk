# Config loading, validation, the experiment list and path helpers. No pipeline logic: the
# experiment/stage bookkeeping lives in bestie.experiments (unit-tested).
import os

from snakemake.utils import validate

from bestie.experiments import Experiments


validate(config, schema="../schemas/config.schema.yaml")
EXPERIMENTS = Experiments(config)
SPLITS = ["train", "val"]


wildcard_constraints:
    exp="|".join(EXPERIMENTS.names),
    split="train|val",


def result(exp, stage, *parts):
    """Path of a stage artifact, under the experiment that owns it."""
    folder = stage.split("_")[0]
    return os.path.join("results", EXPERIMENTS.owner(exp, stage), folder, *parts)


def stage_config(stage):
    """Params function: the JSON config sections the stage reads (its rerun trigger)."""

    def sections(wildcards):
        return EXPERIMENTS.stage_json(wildcards.exp, stage)

    return sections


def final_targets():
    """Everything `snakemake` builds by default: each experiment's last artifacts."""
    targets = []
    for exp in EXPERIMENTS.names:
        targets += [result(exp, "dataset", f"{split}.json") for split in SPLITS]
    return sorted(set(targets))


def records(split):
    """Input function: the records file of a split."""

    def path(wildcards):
        return result(wildcards.exp, "dataset", f"{split}.json")

    return path
