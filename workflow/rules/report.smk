# results/report/{accuracy.csv, report.md, report.html} from every validation result, loss curve
# (results/runs/{run}/metrics.jsonl, complete once the run's train.json exists), export parity record and
# IJB result (results/runs/{run}/ijb/{target}.json: a TAR@FAR table per run and one ROC plot of all runs).
# --tensorboard also writes each run's per-checkpoint validation as TensorBoard events in
# results/runs/{run}/tensorboard/checkpoints/ (rewritten whole each time, so a rerun never doubles a
# point; runs with tensorboard: false are left out).


rule make_report:
    input:
        validation=validation_results(),
        manifests=manifests(),
        exports=expand("results/runs/{run}/export/export.json", run=PLAN.evaluated()),
        ijb=ijb_results(),
    output:
        csv="results/report/accuracy.csv",
        md="results/report/report.md",
        html="results/report/report.html",
    params:
        runs=",".join(sorted(PLAN.evaluated())),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.csv)),
        out=lambda wildcards, output: os.path.dirname(output.csv),
    log:
        "results/logs/report.log",
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow report {params.results} --out {params.out} --runs {params.runs} --tensorboard > {log} 2>&1"
