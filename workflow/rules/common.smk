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


def experiment_models(exp):
    """The models an experiment trains and scores, in summary order.

    The instance network, then Mask R-CNN refinement when maskrcnn.enabled; an oracle
    experiment (maskrcnn.source gt: Mask R-CNN on the ground truth) has only the latter.
    """
    maskrcnn = EXPERIMENTS.configs[exp].maskrcnn
    if maskrcnn.source == "gt":  # the oracle; nothing to do while Mask R-CNN is off
        return ["maskrcnn"] if maskrcnn.enabled else []
    return ["instance", "maskrcnn"] if maskrcnn.enabled else ["instance"]


def active_experiments():
    """The experiments that train a model (an oracle with Mask R-CNN off trains none)."""
    return [exp for exp in EXPERIMENTS.names if experiment_models(exp)]


def experiment_supervision(exp):
    """The summary's supervision column: image, point, or full (the oracle)."""
    if experiment_models(exp) == ["maskrcnn"]:
        return "full"
    return EXPERIMENTS.configs[exp].supervision


def evaluation(exp, stage, model):
    """results/{owner}/eval/{model}_val.json: scored where the model's predictions live."""
    return os.path.join("results", EXPERIMENTS.owner(exp, stage), "eval", f"{model}_val.json")


def final_targets():
    """Everything `snakemake` builds by default: each experiment's evaluated models,
    the statistics of every stage and the report."""
    targets = []
    for exp in active_experiments():
        models = experiment_models(exp)
        if "instance" in models:
            targets += [
                result(exp, "cues", "stats.json"),
                result(exp, "wsss", "miou_train.json"),
                result(exp, "pseudo", "stats.json"),
                evaluation(exp, "predict", "instance"),
            ]
            if EXPERIMENTS.configs[exp].instance.snapshot_every:
                targets.append(result(exp, "curve", "instance_curve_val.json"))
        if "maskrcnn" in models:
            targets.append(evaluation(exp, "maskrcnn", "maskrcnn"))
    if rules.has("report"):  # the report reads every artifact the workflow can build
        targets += [f"results/report/{exp}/tables.html" for exp in active_experiments()]
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
