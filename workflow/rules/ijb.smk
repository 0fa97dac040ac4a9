# results/runs/{run}/ijb/{target}.json: one job per run (or model) and IJB target (config `ijb.targets`), on
# the model export_model published: export/model.onnx when ONNX is exported, else the checkpoint export.json
# names (python -m faceflow.workflow.exported). The benchmarks are the ijb/ folder of the synthetic dataset
# (written by its synth job) or `ijb.path`. The IJB settings are parameters of this rule only, so changing
# them reruns IJB and the report and nothing upstream. Rerun on demand:
#   snakemake --cores 8 ijb report --forcerun ijb_eval


rule ijb_eval:
    wildcard_constraints:
        target=IJB_TARGET_NAMES,
    input:
        unpack(ijb_inputs),
    output:
        "results/runs/{run}/ijb/{target}.json",
    params:
        ijb_dir=lambda wildcards: ijb_dir(),
        batch_size=PLAN.ijb.batch_size,
        export=lambda wildcards, input: os.path.dirname(input.export),
    log:
        "results/logs/ijb/{run}/{target}.log",
    threads: 2
    conda:
        "../envs/faceflow.yaml"
    shell:
        "model=$(python -m faceflow.workflow.exported {params.export:q} 2> {log:q}) &&"
        ' OMP_NUM_THREADS={threads} faceflow ijb "$model" {params.ijb_dir:q} --target {wildcards.target}'
        " --batch-size {params.batch_size} --threads {threads} --out {output:q} --quiet >> {log:q} 2>&1"
