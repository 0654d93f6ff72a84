rule prepare_dataset:
    conda:
        "../../environment.yml"
    output:
        records="results/{exp}/dataset/{split}.json",
        gt="results/{exp}/dataset/{split}_gt.json",
    params:
        cfg=stage_config("dataset"),
    log:
        "results/{exp}/logs/prepare_dataset_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/prepare_dataset_{split}.tsv"
    shell:
        "python -m bestie prepare-dataset --config {params.cfg:q} --split {wildcards.split}"
        " --records {output.records:q} --gt {output.gt:q} > {log:q} 2>&1"
