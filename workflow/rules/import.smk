# results/runs/{model}/: a published model of the config's `models:` section as a finished run with one
# checkpoint (checkpoints/step_000000/) and its manifest train.json, written by `faceflow import ... --as-run`
# (ONNX and MXNet imports are checked against onnxruntime / MXNet first). Validation, export and the report
# then treat it like a trained run; it has no training loss curve. The job reruns when the model file changes.


rule import_model:
    wildcard_constraints:
        run=IMPORTED_MODELS,
    input:
        lambda wildcards: PLAN.models[wildcards.run].inputs(),
    output:
        manifest="results/runs/{run}/train.json",
    params:
        args=lambda wildcards, output: PLAN.models[wildcards.run].import_argument_string(
            os.path.dirname(output.manifest)
        ),
    log:
        "results/logs/import/{run}.log",
    threads: 2
    conda:
        "../envs/faceflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} faceflow import {params.args} > {log} 2>&1"
