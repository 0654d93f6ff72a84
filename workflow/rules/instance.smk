rule train_instance:
    input:
        unpack(instance_inputs),
    output:
        model="results/{exp}/instance/model.pt",
        log_csv="results/{exp}/instance/train_log.csv",
        snapshots=directory("results/{exp}/instance/snapshots"),
    params:
        cfg=stage_config("instance"),
        launch=launcher,
    log:
        "results/{exp}/logs/train_instance.log",
    benchmark:
        "results/{exp}/benchmarks/train_instance.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m bestie train-instance --config {params.cfg:q}"
        " --records {input.records:q} --pseudo {input.pseudo:q} --wsss {input.wsss:q}"
        " --gt {input.gt:q} --out {output.model:q} > {log:q} 2>&1"


rule predict_instance:
    input:
        unpack(predict_inputs),
    output:
        temp("results/{exp}/instance/shards/pred_{split}_{shard}.json"),
    params:
        cfg=stage_config("predict"),
        shards=shard_count,
    log:
        "results/{exp}/logs/predict_instance_{split}_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/predict_instance_{split}_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie predict-instance --config {params.cfg:q} --model {input.model:q}"
        " --records {input.records:q} --shard {wildcards.shard} --num-shards {params.shards}"
        " --out {output:q} > {log:q} 2>&1"


rule gather_predictions:
    input:
        shards=prediction_shards,
        records=split_records,
    output:
        "results/{exp}/instance/pred_{split}.json",
    log:
        "results/{exp}/logs/gather_predictions_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/gather_predictions_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-predictions --shards {input.shards:q}"
        " --records {input.records:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_curve:
    input:
        unpack(curve_inputs),
    output:
        "results/{exp}/eval/instance_curve_val.json",
    params:
        cfg=stage_config("curve"),
    log:
        "results/{exp}/logs/evaluate_curve.log",
    benchmark:
        "results/{exp}/benchmarks/evaluate_curve.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie evaluate-curve --config {params.cfg:q} --snapshots {input.snapshots:q}"
        " --records {input.records:q} --gt {input.gt:q} --out {output:q} > {log:q} 2>&1"
