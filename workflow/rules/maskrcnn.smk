# Mask R-CNN refinement (paper §4.3): pseudo GT from the instance network's train
# predictions, training, sharded prediction. maskrcnn.source gt trains on the ground truth
# instead (the fully supervised upper bound). Scored by rule evaluate (eval/maskrcnn_val.json).


rule export_pseudo_gt:
    input:
        unpack(pseudo_gt_inputs),
    output:
        "results/{exp}/maskrcnn/pseudo_gt_train.json",
    params:
        cfg=stage_config("maskrcnn"),
    log:
        "results/{exp}/logs/export_pseudo_gt.log",
    benchmark:
        "results/{exp}/benchmarks/export_pseudo_gt.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie export-pseudo-gt --config {params.cfg:q} --records {input.records:q}"
        " --predictions {input.predictions:q} --out {output:q} > {log:q} 2>&1"


rule train_maskrcnn:
    input:
        unpack(maskrcnn_train_inputs),
    output:
        model="results/{exp}/maskrcnn/model.pt",
        log_csv="results/{exp}/maskrcnn/train_log.csv",
    params:
        cfg=stage_config("maskrcnn"),
        launch=launcher,
    log:
        "results/{exp}/logs/train_maskrcnn.log",
    benchmark:
        "results/{exp}/benchmarks/train_maskrcnn.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m bestie train-maskrcnn --config {params.cfg:q} --threads {threads}"
        " --records {input.records:q} --annotations {input.annotations:q}"
        " --out {output.model:q} > {log:q} 2>&1"


rule predict_maskrcnn:
    input:
        unpack(maskrcnn_predict_inputs),
    output:
        temp("results/{exp}/maskrcnn/shards/pred_{split}_{shard}.json"),
    params:
        shards=shard_count,
    log:
        "results/{exp}/logs/predict_maskrcnn_{split}_{shard}.log",
    benchmark:
        "results/{exp}/benchmarks/predict_maskrcnn_{split}_{shard}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie predict-maskrcnn --model {input.model:q} --threads {threads}"
        " --records {input.records:q} --shard {wildcards.shard} --num-shards {params.shards}"
        " --out {output:q} > {log:q} 2>&1"


rule gather_maskrcnn_predictions:
    input:
        shards=maskrcnn_prediction_shards,
        records=split_records,
    output:
        "results/{exp}/maskrcnn/pred_{split}.json",
    log:
        "results/{exp}/logs/gather_maskrcnn_predictions_{split}.log",
    benchmark:
        "results/{exp}/benchmarks/gather_maskrcnn_predictions_{split}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie gather-maskrcnn-predictions --shards {input.shards:q}"
        " --records {input.records:q} --out {output:q} > {log:q} 2>&1"
