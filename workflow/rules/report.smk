# The report (DESIGN §7): per-experiment figures and tables, and the Table-1 summary over
# all experiments. `snakemake --report results/report.html` gathers the outputs; what they
# read and which are marked for the report is defined in inputs.smk.


rule report_experiment:
    input:
        unpack(report_inputs),
    output:
        **experiment_report_outputs(),
    params:
        cfg=report_config,
        options=report_options,
        out=subpath(output.tables, parent=True),
    log:
        "results/{exp}/logs/report_experiment.log",
    benchmark:
        "results/{exp}/benchmarks/report_experiment.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie report-experiment --experiment {wildcards.exp:q} --config {params.cfg:q}"
        " --output-dir {params.out:q} {params.options} > {log:q} 2>&1"


rule report:
    input:
        summary_inputs,
    output:
        **summary_report_outputs(),
    params:
        rows=summary_rows,
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../environment.yml"
    shell:
        "python -m bestie report {params.rows} --summary {output.summary:q}"
        " --by-seed {output.by_seed:q} --html {output.html:q} --figure {output.figure:q}"
        " > {log:q} 2>&1"
