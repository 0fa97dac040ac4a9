# results/runs/{run}/train.json: the completion manifest (run, steps, checkpoint directories) that
# `faceflow train` writes atomically after the last step. It is the only declared output: the
# checkpoints (results/runs/{run}/checkpoints/step_NNNNNN/), metrics.jsonl and train.log are not, so
# Snakemake never deletes them. An interrupted job (Ctrl-C, time limit, node failure, killed snakemake)
# has no manifest, so the next invocation reruns it and `faceflow train` resumes from the newest
# complete checkpoint. When the run's training parameters changed (Snakemake reruns the job),
# --restart-if-changed makes faceflow move the old checkpoints to results/runs/{run}/superseded/<time>/
# and train from step 0. The job's console output goes to results/logs/train/{run}.log.
# The job asks for `gpu=G` and starts one process per GPU (CPU processes when the run's device is cpu);
# its parameters come from the run entry only, so validation settings never retrain.


rule train:
    wildcard_constraints:
        run=TRAINED_RUNS,
    input:
        data=run_train_data,
    output:
        manifest="results/runs/{run}/train.json",
    params:
        base=lambda wildcards: PLAN.runs[wildcards.run].base,
        sets=lambda wildcards, input: PLAN.runs[wildcards.run].set_argument_string(input.data),
        nproc=lambda wildcards: PLAN.runs[wildcards.run].gpus,
        port=lambda wildcards: PLAN.runs[wildcards.run].master_port,
        out=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        "results/logs/train/{run}.log",
    threads: lambda wildcards: PLAN.runs[wildcards.run].gpus * PLAN.runs[wildcards.run].threads
    resources:
        gpu=lambda wildcards: PLAN.runs[wildcards.run].gpu_resource,
        slurm_extra=lambda wildcards: PLAN.runs[wildcards.run].slurm_extra,
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow train {params.base:q} {params.sets} --out {params.out:q} --restart-if-changed"
        " --nproc-per-node {params.nproc} --master-port {params.port} > {log:q} 2>&1"
