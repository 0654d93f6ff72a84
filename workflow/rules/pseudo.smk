rule synthesize_pseudo_labels:
    input:
        unpack(pseudo_inputs),
    output:
        "results/{exp}/pseudo/shards/train_{shard}.json",
    params:
        cfg=stage_config("pseudo"),
        shards=shard_count,
    log:
        "results/{exp}/logs/synthesize_pseudo_labels_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/synthesize_pseudo_labels_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie synthesize-pseudo-labels --config {params.cfg:q}"
        " --records {input.records:q} --cues {input.cues:q} --wsss {input.wsss:q}"
        " --gt {input.gt:q} --shard {wildcards.shard} --num-shards {params.shards}"
        " --out {output:q} > {log:q} 2>&1"


rule gather_pseudo_labels:
    input:
        unpack(pseudo_inputs),
        shards=pseudo_shards,
    output:
        labels="results/{exp}/pseudo/train.json",
        stats="results/{exp}/pseudo/stats.json",
    log:
        "results/{exp}/logs/gather_pseudo_labels.log",
    benchmark:
        "results/{exp}/benchmarks/gather_pseudo_labels.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-pseudo-labels --shards {input.shards:q}"
        " --records {input.records:q} --cues {input.cues:q} --wsss {input.wsss:q}"
        " --out {output.labels:q} --stats {output.stats:q} > {log:q} 2>&1"
