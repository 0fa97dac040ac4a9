# results/runs/{run}/validation/step_NNNNNN/{bench}.json: one job per checkpoint and benchmark. The
# input is the run's training manifest (train.json); the checkpoint directory is a parameter.
# Validation settings are parameters of this rule only, so changing them reruns validation and the
# report and nothing upstream. Rerun on demand:
#   snakemake --cores 8 validate report --forcerun validate_checkpoint


rule validate_checkpoint:
    input:
        manifest="results/runs/{run}/train.json",
        bench=run_bench_data,
    output:
        "results/runs/{run}/validation/step_{step}/{bench}.json",
    params:
        batch_size=PLAN.val_batch_size,
        checkpoint=lambda wildcards: f"{checkpoints_dir(wildcards)}/step_{wildcards.step}",
    log:
        "results/logs/validate/{run}/step_{step}/{bench}.log",
    threads: 2
    resources:
        mem_mb=lambda wildcards: PLAN.validation_mem_mb(wildcards.run),
    conda:
        "../envs/faceflow.yaml"
    shell:
        "OMP_NUM_THREADS={threads} faceflow validate {params.checkpoint} --bench {wildcards.bench}={input.bench}"
        " --batch-size {params.batch_size} --out {output} > {log} 2>&1"
