# results/report/{accuracy.csv, report.md, report.html} from every validation result and loss curve
# (results/runs/{run}/metrics.jsonl, complete once the run's train.json exists).


rule make_report:
    input:
        validation=validation_results(),
        manifests=manifests(),
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
        "faceflow report {params.results} --out {params.out} --runs {params.runs} > {log} 2>&1"
