# Input and params functions of the stage rules, one group per stage (Snakemake's lint asks
# that rule files hold rules only). Generic helpers are in common.smk.
import shlex


def wsss_shards(wildcards):
    """Input function: every shard folder of a split's WSSS maps."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    return [f"results/{wildcards.exp}/wsss/shards/{wildcards.split}_{i}" for i in range(count)]


def wsss_inputs(wildcards):
    """Input function: the split's records and GT (GT: oracle and mIoU only)."""
    inputs = {
        "records": result(wildcards.exp, "dataset", f"{wildcards.split}.json"),
        "gt": result(wildcards.exp, "dataset", f"{wildcards.split}_gt.json"),
    }
    inputs.update(wsss_models(wildcards))
    return inputs


def wsss_models(wildcards):
    """The models the `cam` method reads: the CAM classifier (and the retrained net)."""
    wsss = EXPERIMENTS.configs[wildcards.exp].wsss
    if wsss.method != "cam":
        return {}
    models = {"classifier": result(wildcards.exp, "classifier_cam", "cam", "model.pt")}
    if wsss.retrain:
        models["segnet"] = result(wildcards.exp, "wsss", "segnet", "model.pt")
    return models


def wsss_model_options(wildcards):
    """Params function: the model paths as command-line options."""
    return " ".join(f"--{k} {shlex.quote(v)}" for k, v in wsss_models(wildcards).items())


def pseudo_inputs(wildcards):
    """Input function: what pseudo-label synthesis reads (GT for statistics only)."""
    return {
        "records": result(wildcards.exp, "dataset", "train.json"),
        "gt": result(wildcards.exp, "dataset", "train_gt.json"),
        "cues": result(wildcards.exp, "cues", "train.h5"),
        "wsss": result(wildcards.exp, "wsss", "train"),
    }


def pseudo_shards(wildcards):
    """Input function: every shard of the pseudo labels."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    return [f"results/{wildcards.exp}/pseudo/shards/train_{i}.json" for i in range(count)]
