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
    model="instance|maskrcnn",


# The folder of each stage's artifacts (the stage name where not listed).
FOLDERS = {
    "classifier_cam": "classifier",
    "classifier_pam": "classifier",
    "predict": "instance",
    "curve": "eval",
    "evaluation": "eval",
}


def result(exp, stage, *parts):
    """Path of a stage artifact, under the experiment that owns it."""
    folder = FOLDERS.get(stage, stage)
    return os.path.join("results", EXPERIMENTS.owner(exp, stage), folder, *parts)


def stage_config(stage):
    """Params function: the JSON config sections the stage reads (its rerun trigger)."""

    def sections(wildcards):
        return EXPERIMENTS.stage_json(wildcards.exp, stage)

    return sections


def final_targets():
    """Everything `snakemake` builds by default: each experiment's evaluated models,
    the statistics of every stage and the report."""
    targets = []
    for exp in EXPERIMENTS.names:
        targets += [
            result(exp, "cues", "stats.json"),
            result(exp, "wsss", "miou_train.json"),
            result(exp, "pseudo", "stats.json"),
            os.path.join("results", EXPERIMENTS.owner(exp, "predict"), "eval", "instance_val.json"),
        ]
        if EXPERIMENTS.configs[exp].instance.snapshot_every:
            targets.append(result(exp, "curve", "instance_curve_val.json"))
        if EXPERIMENTS.configs[exp].maskrcnn.enabled and rules.has("train_maskrcnn"):
            owner = EXPERIMENTS.owner(exp, "maskrcnn")
            targets.append(os.path.join("results", owner, "eval", "maskrcnn_val.json"))
    if rules.has("report"):  # the report reads every artifact the workflow can build
        targets += [f"results/report/{exp}/tables.html" for exp in EXPERIMENTS.names]
        targets.append("results/summary.tsv")
    return sorted(set(targets))


def shard_count(wildcards):
    """Params function: the number of shards of per-image stages."""
    return EXPERIMENTS.configs[wildcards.exp].shards


def split_records(wildcards):
    """Input function: the records file of the split in the wildcards."""
    return result(wildcards.exp, "dataset", f"{wildcards.split}.json")


def split_ground_truth(wildcards):
    """Input function: the ground truth of the split in the wildcards."""
    return result(wildcards.exp, "dataset", f"{wildcards.split}_gt.json")


def records(split):
    """Input function: the records file of a split."""

    def path(wildcards):
        return result(wildcards.exp, "dataset", f"{split}.json")

    return path
