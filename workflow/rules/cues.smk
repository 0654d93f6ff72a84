# Instance cues (SPEC §1.3): per-shard extraction, a gather, and statistics against the GT.


rule extract_cues:
    input:
        unpack(cue_inputs),
    output:
        temp("results/{exp}/cues/shards/{split}_{shard}.h5"),
    params:
        cfg=stage_config("cues"),
        shards=shard_count,
        model=cue_model_option,
    wildcard_constraints:
        shard=r"\d+",
    threads: 2
    log:
        "results/{exp}/logs/extract_cues_{split}_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/extract_cues_{split}_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie extract-cues --config {params.cfg:q} --records {input.records:q}"
        " {params.model} --shard {wildcards.shard} --num-shards {params.shards}"
        " --threads {threads} --output {output:q} > {log:q} 2>&1"


rule gather_cues:
    input:
        cue_shards,
    output:
        "results/{exp}/cues/{split}.h5",
    log:
        "results/{exp}/logs/gather_cues_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/gather_cues_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-cues --shards {input:q} --output {output:q} > {log:q} 2>&1"


rule cue_stats:
    input:
        unpack(cue_stats_inputs),
    output:
        "results/{exp}/cues/stats.json",
    params:
        cfg=stage_config("cues_stats"),
        splits=cue_stats_options,
    log:
        "results/{exp}/logs/cue_stats.log",
    benchmark:
        "results/{exp}/benchmarks/cue_stats.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie cue-stats --config {params.cfg:q} {params.splits}"
        " --output {output:q} > {log:q} 2>&1"
