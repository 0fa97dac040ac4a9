# results/runs/{run}/export/: model.onnx, mxnet/model-symbol.json, mxnet/model-0000.params, export.json.
# The checkpoint is the last one or the best on a benchmark (export.checkpoint: last | best:<bench>).


rule export_model:
    input:
        unpack(export_inputs),
    output:
        export_files(),
    params:
        select=PLAN.export_checkpoint,
        formats=",".join(PLAN.export_formats),
        checkpoints=checkpoints_dir,
        validation=lambda wildcards: f"results/runs/{wildcards.run}/validation",
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/export/{run}.log",
    threads: 2
    conda:
        "../envs/faceflow.yaml"
    shell:
        "ckpt=$(faceflow select-checkpoint {params.select}"
        " {params.checkpoints} {params.validation} 2> {log}) &&"
        " OMP_NUM_THREADS={threads} faceflow export bundle $ckpt {params.out} --formats {params.formats} >> {log} 2>&1"
