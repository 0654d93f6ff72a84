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


rule make_wsss:
    input:
        unpack(wsss_inputs),
    output:
        directory("results/{exp}/wsss/shards/{split}_{shard}"),
    params:
        cfg=stage_config("wsss"),
        shards=shard_count,
        models=wsss_model_options,
    log:
        "results/{exp}/logs/make_wsss_{split}_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/make_wsss_{split}_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie make-wsss --config {params.cfg:q} --records {input.records:q}"
        " --gt {input.gt:q} {params.models} --shard {wildcards.shard}"
        " --num-shards {params.shards} --out {output:q} > {log:q} 2>&1"


rule gather_wsss:
    input:
        shards=wsss_shards,
        records=split_records,
    output:
        maps=directory("results/{exp}/wsss/{split}"),
        miou="results/{exp}/wsss/miou_{split}.json",
    log:
        "results/{exp}/logs/gather_wsss_{split}.log",
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-wsss --shards {input.shards:q} --records {input.records:q}"
        " --out {output.maps:q} --miou {output.miou:q} > {log:q} 2>&1"
