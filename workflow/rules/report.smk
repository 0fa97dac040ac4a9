# results/report/{accuracy.csv, report.md, report.html} from every validation result, loss curve
# (results/runs/{run}/metrics.jsonl, complete once the run's train.json exists), export parity record and
# IJB result (results/runs/{run}/ijb/{target}.json: a TAR@FAR table per run and one ROC plot of all runs).
# Only the configured benchmarks and IJB targets are shown: results left by names dropped from the config are not.
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
        benchmarks=",".join(PLAN.benchmarks),
        ijb_targets=",".join(PLAN.ijb.targets),
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.csv)),
        out=lambda wildcards, output: os.path.dirname(output.csv),
    log:
        "results/logs/report.log",
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow report {params.results:q} --out {params.out:q} --runs {params.runs:q}"
        " --benchmarks={params.benchmarks:q} --ijb-targets={params.ijb_targets:q} --tensorboard > {log:q} 2>&1"
