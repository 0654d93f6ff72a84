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


def cam_mask_path(exp, *parts):
    """results/{owner}/wsss/cam/...: the raw CAM masks, under the experiment owning them."""
    return os.path.join("results", EXPERIMENTS.owner(exp, "wsss_cam"), "wsss", "cam", *parts)


def cam_mask_inputs(wildcards):
    """Input function: records, GT (mIoU only) and CAM classifier of the raw CAM masks."""
    return {
        "records": result(wildcards.exp, "dataset", f"{wildcards.split}.json"),
        "gt": result(wildcards.exp, "dataset", f"{wildcards.split}_gt.json"),
        "classifier": result(wildcards.exp, "classifier_cam", "cam", "model.pt"),
    }


def cam_mask_shards(wildcards):
    """Input function: every shard folder of a split's raw CAM masks."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    folder = f"results/{wildcards.exp}/wsss/cam/shards"
    return [f"{folder}/{wildcards.split}_{i}" for i in range(count)]


def segnet_inputs(wildcards):
    """Input function: the train records and raw CAM masks the segmentation net learns."""
    return {
        "records": result(wildcards.exp, "dataset", "train.json"),
        "masks": cam_mask_path(wildcards.exp, "train"),
    }


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


def instance_inputs(wildcards):
    """Input function: what instance training reads (GT: the Fig. 6 audit, instance.holdout)."""
    return {
        "records": result(wildcards.exp, "dataset", "train.json"),
        "gt": result(wildcards.exp, "dataset", "train_gt.json"),
        "pseudo": result(wildcards.exp, "pseudo", "train.json"),
        "wsss": result(wildcards.exp, "wsss", "train"),
    }


def launcher(wildcards, resources):
    """Params function: torchrun over the job's GPUs when it has several, else python."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus > 1:
        return f"torchrun --standalone --nproc-per-node {gpus}"
    return "python"


def predict_inputs(wildcards):
    """Input function: the instance model (of the experiment owning it) and the records."""
    return {
        "model": result(wildcards.exp, "instance", "model.pt"),
        "records": result(wildcards.exp, "dataset", f"{wildcards.split}.json"),
    }


def curve_inputs(wildcards):
    """Input function: the training snapshots and the val split with its ground truth."""
    return {
        "snapshots": result(wildcards.exp, "instance", "snapshots"),
        "records": result(wildcards.exp, "dataset", "val.json"),
        "gt": result(wildcards.exp, "dataset", "val_gt.json"),
    }


def prediction_shards(wildcards):
    """Input function: every prediction shard of a split."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    folder = f"results/{wildcards.exp}/instance/shards"
    return [f"{folder}/pred_{wildcards.split}_{i}.json" for i in range(count)]


# ----------------------------------------------------------------------------- report
# The report reads whatever the workflow can build: an artifact is left out (and its figure
# drawn as a note) while no rule writes it or one of the artifacts it needs, e.g. a stage
# that is not built yet. The stages read only the paths these functions name.
import json
from types import SimpleNamespace

from bestie.config import to_dict
from bestie.experiments import STAGES as EXPERIMENT_STAGES


def buildable(*paths):
    """Whether some rule of the workflow writes each of ``paths``."""
    return all(any(rule.is_producer(path) for rule in workflow.rules) for path in paths)


def owned(exp, stage, folder, *parts):
    """results/{owner}/{folder}/...: the owner of the stage's artifact where it is known."""
    owner = EXPERIMENTS.owner(exp, stage) if stage in EXPERIMENT_STAGES else exp
    return os.path.join("results", owner, folder, *parts)


def report_chains(exp):
    """Report option -> [artifact, the upstream artifacts it needs], for one experiment."""
    chains = {"train-records": [owned(exp, "dataset", "dataset", "train.json")]}
    chains["val-records"] = [owned(exp, "dataset", "dataset", "val.json")]
    chains["val-gt"] = [owned(exp, "dataset", "dataset", "val_gt.json")]
    trained = experiment_models(exp)
    if "instance" not in trained:  # the oracle: Mask R-CNN on the ground truth only
        model = owned(exp, "maskrcnn", "maskrcnn", "model.pt")
        _prediction_chains(chains, exp, trained, [model])
        return chains
    for variant in ("cam", "pam"):
        files = (("log", "train_log.csv"), ("metrics", "metrics.json"), ("model", "model.pt"))
        for option, name in files:
            path = owned(exp, f"classifier_{variant}", f"classifier/{variant}", name)
            chains[f"classifier-{option}-{variant}"] = [path]
    chains["cue-stats"] = [owned(exp, "cues_stats", "cues", "stats.json")]
    models = wsss_models(SimpleNamespace(exp=exp)).values()
    chains["wsss-miou"] = [owned(exp, "wsss", "wsss", "miou_train.json"), *models]
    pseudo = [owned(exp, "pseudo", "pseudo", "stats.json"), *chains["wsss-miou"]]
    chains["pseudo-stats"] = pseudo
    chains["instance-log"] = [owned(exp, "instance", "instance", "train_log.csv"), *pseudo]
    instance = [owned(exp, "instance", "instance", "model.pt"), *pseudo]
    chains["map-curve"] = [f"results/{exp}/eval/instance_curve_val.json", *instance]
    _prediction_chains(chains, exp, trained, instance)
    return chains


def _prediction_chains(chains, exp, models, upstream):
    """The val predictions and evaluation of each model, after the artifacts they need."""
    for model in models:
        predictions = f"results/{exp}/{model}/pred_val.json"
        chains[f"predictions-{model}"] = [predictions, *upstream]
        chains[f"eval-{model}"] = [f"results/{exp}/eval/{model}_val.json", predictions, *upstream]


def report_inputs(wildcards):
    """Input function: the artifacts of one experiment that the report can read."""
    chains = report_chains(wildcards.exp)
    return {o.replace("-", "_"): c[0] for o, c in chains.items() if buildable(*c)}


def report_options(wildcards, input):
    """Params function: ``--{option} PATH`` per report input, the benchmarks and rule names."""
    options = [f"--{key.replace('_', '-')} {shlex.quote(path)}" for key, path in input.items()]
    options.append(f"--benchmarks {shlex.quote(f'results/{wildcards.exp}/benchmarks')}")
    # The report maps each benchmark file ({rule}_{wildcards}.tsv) to its rule.
    options.append("--rules " + " ".join(sorted(rule.name for rule in workflow.rules)))
    return " ".join(options)


def report_config(wildcards):
    """Params function: the cues (CAM vs PAM figure) and report sections the stage reads.

    An oracle experiment draws no classifier figure, so a cues change leaves it alone.
    """
    sections = {"report": to_dict(EXPERIMENTS.configs[wildcards.exp].report)}
    if "instance" in experiment_models(wildcards.exp):
        sections["cues"] = EXPERIMENTS.sections(wildcards.exp, "cues")["cues"]
    return json.dumps(sections, sort_keys=True, separators=(",", ":"))


def summary_evaluations():
    """(experiment, model, eval JSON or None) of every model each experiment trains."""
    rows = []
    for exp in active_experiments():
        chains = report_chains(exp)
        for model in experiment_models(exp):
            chain = chains[f"eval-{model}"]
            rows.append((exp, model, chain[0] if buildable(*chain) else None))
    return rows


def summary_inputs(wildcards):
    """Input function: the val evaluation of every experiment and model that has one."""
    return [path for _, _, path in summary_evaluations() if path]


def summary_rows(wildcards):
    """Params function: one ``--row EXP MODEL SUPERVISION SEED EVAL|-`` per summary line."""
    rows = []
    for exp, model, path in summary_evaluations():
        cfg = EXPERIMENTS.configs[exp]
        fields = [exp, model, experiment_supervision(exp), str(cfg.seed), path or "-"]
        rows.append("--row " + " ".join(shlex.quote(field) for field in fields))
    return " ".join(rows)


# The report outputs, each with its caption and place in `snakemake --report` (category:
# topic, subcategory: experiment). Kept here so that the report rules stay short.
EXPERIMENT_FIGURES = {  # output name: (file, category, caption)
    "classifier": ("classifier_training.png", "2. Classifier and cues", "classifier_training"),
    "cam_pam": ("cam_vs_pam.png", "2. Classifier and cues", "cam_vs_pam"),
    "instance": ("instance_training.png", "3. Instance network", "instance_training"),
    "true_positives": ("true_positives.png", "3. Instance network", "true_positives"),
    "map_curve": ("map_curve.png", "3. Instance network", "map_curve"),
    "qualitative": ("qualitative.png", "4. Predictions", "qualitative"),
    "tables": ("tables.html", "5. Statistics and runtime", "tables"),
    "runtime": ("runtime.png", "5. Statistics and runtime", "runtime"),
    "runtime_table": ("runtime.tsv", "5. Statistics and runtime", "runtime_table"),
}
SUMMARY_FILES = {  # output name: (file, caption)
    "summary": ("results/summary.tsv", "summary"),
    "by_seed": ("results/summary_by_seed.tsv", "summary_by_seed"),
    "html": ("results/report/summary.html", "summary_html"),
    "figure": ("results/report/summary.png", "summary_figure"),
}


def experiment_report_outputs():
    """The outputs of rule report_experiment, marked for the Snakemake report."""
    return {
        name: report(
            f"results/report/{{exp}}/{file}",
            caption=f"../report/{caption}.rst",
            category=category,
            subcategory="{exp}",
            labels={"experiment": "{exp}", "file": file},
        )
        for name, (file, category, caption) in EXPERIMENT_FIGURES.items()
    }


def summary_report_outputs():
    """The outputs of rule report, marked for the Snakemake report."""
    return {
        name: report(
            path,
            caption=f"../report/{caption}.rst",
            category="1. Summary",
            labels={"file": os.path.basename(path)},
        )
        for name, (path, caption) in SUMMARY_FILES.items()
    }


# ----------------------------------------------------------------------------- maskrcnn
def pseudo_gt_inputs(wildcards):
    """Input function: the instance network's train predictions and the train records."""
    return {
        "predictions": result(wildcards.exp, "predict", "pred_train.json"),
        "records": result(wildcards.exp, "dataset", "train.json"),
    }


def maskrcnn_train_inputs(wildcards):
    """Input function: the train records and the instances Mask R-CNN learns.

    maskrcnn.source pseudo: the pseudo GT exported from the instance network's train
    predictions. maskrcnn.source gt (the fully supervised upper bound): the train ground
    truth, the only training input of the workflow that is ground truth.
    """
    exp = wildcards.exp
    if EXPERIMENTS.configs[exp].maskrcnn.source == "gt":
        annotations = result(exp, "dataset", "train_gt.json")
    else:
        annotations = result(exp, "maskrcnn", "pseudo_gt_train.json")
    return {"records": result(exp, "dataset", "train.json"), "annotations": annotations}


def maskrcnn_predict_inputs(wildcards):
    """Input function: the Mask R-CNN model (of the experiment owning it) and the records."""
    return {
        "model": result(wildcards.exp, "maskrcnn", "model.pt"),
        "records": result(wildcards.exp, "dataset", f"{wildcards.split}.json"),
    }


def maskrcnn_prediction_shards(wildcards):
    """Input function: every Mask R-CNN prediction shard of a split."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    folder = f"results/{wildcards.exp}/maskrcnn/shards"
    return [f"{folder}/pred_{wildcards.split}_{i}.json" for i in range(count)]


# --- classifier ---
def classifier_inputs(wildcards):
    """Input function: the train records; the CAM classifier when PAM fine-tunes it."""
    inputs = {"records": result(wildcards.exp, "dataset", "train.json")}
    if "classifier_cam" in EXPERIMENTS.inputs(wildcards.exp, f"classifier_{wildcards.variant}"):
        inputs["init"] = result(wildcards.exp, "classifier_cam", "cam", "model.pt")
    return inputs


def classifier_init_option(wildcards, input):
    """Params function: ``--init MODEL`` when the classifier starts from another one."""
    return f"--init {shlex.quote(input.init)}" if "init" in input.keys() else ""


def classifier_config(wildcards):
    """Params function: the config sections of the classifier_{variant} stage."""
    return EXPERIMENTS.stage_json(wildcards.exp, f"classifier_{wildcards.variant}")


# --- cues ---
def cue_inputs(wildcards):
    """Input function: the split's records and, for classifier cues, the classifier."""
    inputs = {"records": result(wildcards.exp, "dataset", f"{wildcards.split}.json")}
    for stage in EXPERIMENTS.inputs(wildcards.exp, "cues"):
        if stage.startswith("classifier_"):
            variant = stage.split("_")[1]
            inputs["model"] = result(wildcards.exp, stage, variant, "model.pt")
    return inputs


def cue_model_option(wildcards):
    """Params function: ``--model PATH`` for classifier cues, nothing for point cues."""
    model = cue_inputs(wildcards).get("model")
    return f"--model {shlex.quote(model)}" if model else ""


def cue_shards(wildcards):
    """Input function: every shard file of a split's cues."""
    count = EXPERIMENTS.configs[wildcards.exp].shards
    return [f"results/{wildcards.exp}/cues/shards/{wildcards.split}_{i}.h5" for i in range(count)]


def cue_stats_inputs(wildcards):
    """Input function: the cues and the COCO ground truth of every split."""
    inputs = {}
    for split in SPLITS:
        inputs[f"{split}_cues"] = result(wildcards.exp, "cues", f"{split}.h5")
        inputs[f"{split}_gt"] = result(wildcards.exp, "dataset", f"{split}_gt.json")
    return inputs


def cue_stats_options(wildcards, input):
    """Params function: one ``--split NAME CUES GT`` per split."""
    return " ".join(
        f"--split {split} {shlex.quote(input[f'{split}_cues'])} {shlex.quote(input[f'{split}_gt'])}"
        for split in SPLITS
    )
