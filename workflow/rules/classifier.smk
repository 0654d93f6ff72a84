# The CAM and PAM classifiers (SPEC §1.1-1.2): the same recipe; CAM has no PAM layers.


rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        model="results/{exp}/classifier/{variant}/model.pt",
        log_csv="results/{exp}/classifier/{variant}/train_log.csv",
        metrics="results/{exp}/classifier/{variant}/metrics.json",
    params:
        cfg=classifier_config,
        out=subpath(output.model, parent=True),
        launch=launcher,
        init=classifier_init_option,
    wildcard_constraints:
        variant="cam|pam",
    threads: 2
    log:
        "results/{exp}/logs/train_classifier_{variant}.log",
    benchmark:
        "results/{exp}/benchmarks/train_classifier_{variant}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launch} -m bestie train-classifier --config {params.cfg:q}"
        " --records {input.records:q} --output-dir {params.out:q} --threads {threads}"
        " {params.init} > {log:q} 2>&1"
