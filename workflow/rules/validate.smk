# results/runs/{run}/validation/step_NNNNNN/{bench}.json: one job per checkpoint scoring it on every benchmark,
# so the CPU engine exports the checkpoint to ONNX once (cached in the checkpoint directory under a lock).
# The input is the run's training manifest (train.json); the checkpoint directory is a parameter. How the job
# runs is PLAN.validation_job's: a CUDA run's asks for one GPU (spelled per executor as the train job's GPUs) and embeds
# there, CPU runs embed with onnxruntime. Validation settings are parameters of this rule only, so changing
# them reruns validation and the report and nothing upstream. Rerun on demand:
#   snakemake --cores 8 validate report --forcerun validate_checkpoint


rule validate_checkpoint:
    input:
        manifest="results/runs/{run}/train.json",
        bench=lambda wildcards: list(run_bench_data(wildcards).values()),
    output:
        expand("results/runs/{{run}}/validation/step_{{step}}/{bench}.json", bench=PLAN.benchmarks),
    params:
        batch_size=PLAN.val_batch_size,
        checkpoint=lambda wildcards: f"{checkpoints_dir(wildcards)}/step_{wildcards.step}",
        args=lambda wildcards: PLAN.validation_job(wildcards.run).argument_string(run_bench_data(wildcards)),
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/validate/{run}/step_{step}.log",
    threads: lambda wildcards: PLAN.validation_job(wildcards.run).threads
    resources:
        **{name: validation_resource(name) for name in RESOURCE_NAMES},
    conda:
        "../envs/faceflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} faceflow validate {params.checkpoint:q} {params.args}"
        " --batch-size {params.batch_size} --out-dir {params.out_dir:q} > {log:q} 2>&1"
