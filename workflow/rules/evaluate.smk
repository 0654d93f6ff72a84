rule evaluate:
    input:
        pred="results/{exp}/{model}/pred_{split}.json",
        gt=split_ground_truth,
    output:
        "results/{exp}/eval/{model}_{split}.json",
    params:
        cfg=stage_config("evaluation"),
    log:
        "results/{exp}/logs/evaluate_{model}_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/evaluate_{model}_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie evaluate --config {params.cfg:q} --pred {input.pred:q}"
        " --gt {input.gt:q} --out {output:q} > {log:q} 2>&1"
