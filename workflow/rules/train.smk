# results/runs/{run}/checkpoints/step_NNNNNN/, metrics.jsonl and train.log (written by `faceflow train`;
# the job's full console output goes to results/logs/train/{run}.log).
# The job asks for `gpu=G` and starts one process per GPU (CPU processes when the run's device is cpu);
# its parameters come from the run entry only, so validation settings never retrain.


rule train:
    input:
        data=run_train_data,
    output:
        checkpoints=directory("results/runs/{run}/checkpoints"),
        metrics="results/runs/{run}/metrics.jsonl",
        train_log="results/runs/{run}/train.log",
    params:
        base=lambda wildcards: PLAN.runs[wildcards.run].base,
        sets=lambda wildcards, input: PLAN.runs[wildcards.run].set_argument_string(input.data),
        nproc=lambda wildcards: PLAN.runs[wildcards.run].gpus,
        port=lambda wildcards: PLAN.runs[wildcards.run].master_port,
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        "results/logs/train/{run}.log",
    threads: lambda wildcards: PLAN.runs[wildcards.run].gpus * PLAN.runs[wildcards.run].threads
    resources:
        gpu=lambda wildcards: PLAN.runs[wildcards.run].gpu_resource,
        slurm_extra=lambda wildcards: PLAN.runs[wildcards.run].slurm_extra,
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow train {params.base} {params.sets} --out {params.out}"
        " --nproc-per-node {params.nproc} --master-port {params.port} > {log} 2>&1"
