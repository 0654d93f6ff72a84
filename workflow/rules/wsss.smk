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
    benchmark:
        "results/{exp}/benchmarks/gather_wsss_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-wsss --shards {input.shards:q} --records {input.records:q}"
        " --out {output.maps:q} --miou {output.miou:q} > {log:q} 2>&1"


# The cam method with wsss.retrain: raw CAM masks (make-wsss with retraining off, under
# wsss/cam/), their mIoU (miou_cam_{split}.json), and the segmentation net trained on them.
rule make_cam_masks:
    input:
        unpack(cam_mask_inputs),
    output:
        directory("results/{exp}/wsss/cam/shards/{split}_{shard}"),
    params:
        cfg=stage_config("wsss_cam"),
        shards=shard_count,
    log:
        "results/{exp}/logs/make_cam_masks_{split}_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/make_cam_masks_{split}_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie make-wsss --config {params.cfg:q} --records {input.records:q}"
        " --gt {input.gt:q} --classifier {input.classifier:q} --shard {wildcards.shard}"
        " --num-shards {params.shards} --out {output:q} > {log:q} 2>&1"


rule gather_cam_masks:
    input:
        shards=cam_mask_shards,
        records=split_records,
    output:
        maps=directory("results/{exp}/wsss/cam/{split}"),
        miou="results/{exp}/wsss/miou_cam_{split}.json",
    log:
        "results/{exp}/logs/gather_cam_masks_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/gather_cam_masks_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-wsss --shards {input.shards:q} --records {input.records:q}"
        " --out {output.maps:q} --miou {output.miou:q} > {log:q} 2>&1"


rule train_segnet:
    input:
        unpack(segnet_inputs),
    output:
        model="results/{exp}/wsss/segnet/model.pt",
        log_csv="results/{exp}/wsss/segnet/train_log.csv",
    params:
        cfg=stage_config("wsss"),
        out=subpath(output.model, parent=True),
        launch=launcher,
    threads: 2
    log:
        "results/{exp}/logs/train_segnet.log",
    benchmark:
        "results/{exp}/benchmarks/train_segnet.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m bestie train-segnet --config {params.cfg:q} --records {input.records:q}"
        " --masks {input.masks:q} --output-dir {params.out:q} --threads {threads} > {log:q} 2>&1"
