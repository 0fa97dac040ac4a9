# results/ofrecord/{dataset}/train/part-NNNNN and results/ofrecord/{dataset}/val/{bench}/part-00000.
# The part count is a multiple of every world size that trains on the dataset (faceflow.workflow.plan).


rule convert_train:
    input:
        rec="resources/datasets/{dataset}/train.rec",
        idx="resources/datasets/{dataset}/train.idx",
        prop="resources/datasets/{dataset}/property",
    output:
        directory("results/ofrecord/{dataset}/train"),
    params:
        parts=lambda wildcards: PLAN.datasets[wildcards.dataset].parts,
        seed=lambda wildcards: PLAN.datasets[wildcards.dataset].shuffle_seed,
    log:
        "results/logs/convert/{dataset}/train.log",
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow convert rec $(dirname {input.rec:q}) {output:q} --parts {params.parts}"
        " --shuffle --seed {params.seed} > {log} 2>&1"


rule convert_bin:
    input:
        "resources/datasets/{dataset}/{bench}.bin",
    output:
        directory("results/ofrecord/{dataset}/val/{bench}"),
    log:
        "results/logs/convert/{dataset}/{bench}.log",
    conda:
        "../envs/faceflow.yaml"
    shell:
        "faceflow convert bin {input:q} {output:q} > {log} 2>&1"
