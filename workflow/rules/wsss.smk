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
